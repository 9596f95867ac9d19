"""``chatbridge check``: reach everything ``run`` would use and print what works, failing where ``run`` would refuse.

Each part gets a row: ``ok``; ``warn`` when it works but probably not as meant (the exit status
ignores warnings); ``FAIL`` when ``run`` would refuse to start or the part would not work. A server
that could not be reached is named by the key that points at it. On a terminal the rows are a
coloured table; in a pipe they are plain aligned columns, one row a line, for scripts and tests.
"""

from __future__ import annotations

import asyncio
import errno
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

from adapters.kit import AdapterStartupError, connection_trouble, unreachable
from bots.errors import ModelError
from bots.openai_client import OpenAIChatModel
from bots.settings import ModelSettings
from chatbridge.audio_check import check_audio
from chatbridge.config import Config, ConfigError
from chatbridge.exit_status import EXIT_FAILED, EXIT_OK
from chatbridge.http_server import HttpServer, ServerStartError
from chatbridge.logging_setup import redact
from chatbridge.registry import AdaptersSettings, enabled_adapters
from chatbridge.runtime import build_store
from chatbridge.spending import spending_warning
from chatbridge.tooling import tool_rows
from core.settings import DEFAULT_NAME, StoreBackend
from core.store import StoreUnavailable

NO_ADAPTER = (
    f"no adapter is enabled: set adapters.<name>.enabled: true for one of {', '.join(AdaptersSettings.model_fields)}"
    " (`chatbridge chat` needs none)"
)
LISTED_NAMES_SHOWN = 10
"""A server may list hundreds of models (OpenRouter, a big vLLM fleet); the warning shows this many."""

_REPORTED = (ModelError, StoreUnavailable, AdapterStartupError, ServerStartError, ConfigError)
"""Failures whose text is written for the user; anything else is shown with its type."""


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class Caveat:
    """What a part's check returns when the part answered but is probably not set up as meant."""

    detail: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The setting that points a part at its server, to name in a connection failure."""

    key: str
    url: str


async def check(config: Config) -> int:
    rows = [Row("config", Status.OK, "valid")]
    rows.append(await _row("store", _check_store(config), _store_endpoint(config)))
    for key, settings in _models(config):
        rows.append(
            await _row(
                f"model {settings.name}", _check_model(settings, key), Endpoint(f"{key}.base_url", settings.base_url)
            )
        )
    rows.append(await _row("audio", check_audio(config)))
    adapters = enabled_adapters(config.adapters, HttpServer(config.server.host, config.server.port))
    if not adapters:
        rows.append(Row("adapters", Status.FAIL, NO_ADAPTER))
    for adapter in adapters:
        row = await _row(f"adapter {adapter.name}", adapter.check())
        # The adapter's error line starts with its name, which the row already shows.
        rows.append(Row(row.name, row.status, row.detail.removeprefix(f"{adapter.name}: ")))
    rows.append(await _row("server", check_port(config.server.host, config.server.port)))
    rows += [Row(name, Status(status), detail) for name, status, detail in await tool_rows(config)]
    spending = spending_warning(config)
    if spending is not None:  # a warning: `run` starts all the same
        rows.append(Row("budgets", Status.WARN, spending))
    print_rows([Row(row.name, row.status, redact(row.detail)) for row in rows])
    return EXIT_FAILED if any(row.status is Status.FAIL for row in rows) else EXIT_OK


def _models(config: Config) -> list[tuple[str, ModelSettings]]:
    """Every model a chat can be answered by, with the key it is configured under."""
    return [
        ("model" if name == DEFAULT_NAME else f"models.{name}", settings)
        for name, settings in config.all_models().items()
    ]


async def _check_model(settings: ModelSettings, key: str) -> str | Caveat:
    model = OpenAIChatModel(settings)
    try:
        checked = await model.check()
    finally:
        await model.aclose()
    name = settings.name
    if checked.listed is None:
        return checked.detail
    if not checked.leaves_out(name):
        return f"{checked.detail}, {key}.name {name} among them"
    if not checked.listed:
        return Caveat(f"the server lists no models, so not {key}.name {name} either")
    count = len(checked.listed)
    return Caveat(
        f"{key}.name {name} is not among the {count} model{'' if count == 1 else 's'} the server lists: "
        f"{_some(checked.listed)}"
    )


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES_SHOWN])
    more = len(names) - LISTED_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


async def _check_store(config: Config) -> str | Caveat:
    """A sqlite file a running bridge owns is checked without taking it over (as the port is); a
    warning, since another ``run`` on it would be refused."""
    from core.stores.sqlite import SqliteStore, StoreInUse  # as create_store does: only when chosen

    store = build_store(config)
    in_use = ""
    try:
        await store.open()
    except StoreInUse as exc:
        in_use = str(exc).partition(": ")[2].partition(";")[0]
        store = SqliteStore(config.store.sqlite_path, exclusive=False)
        await store.open()
    try:
        await store.ping()
    finally:
        await store.close()
    if in_use:
        return Caveat(f"sqlite store reachable ({in_use}); another `chatbridge run` on it would be refused")
    return f"{config.store.backend} store reachable"


def _store_endpoint(config: Config) -> Endpoint | None:
    return Endpoint("store.redis_url", config.store.redis_url) if config.store.backend is StoreBackend.REDIS else None


async def check_port(host: str, port: int) -> str | Caveat:
    """Whether ``chatbridge run`` could listen; a port held by a running chatbridge is only a warning."""
    if port == 0:
        return f"{host}: any free port (server.port is 0)"
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and await _chatbridge_listens(host, port):
            return Caveat(
                f"{host}:{port} is in use by a running chatbridge (its /healthz answered); "
                "another `chatbridge run` here would be refused"
            )
        raise ServerStartError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); set server.host/server.port"
        ) from None
    server.close()
    await server.wait_closed()
    return f"can listen on {host}:{port} (webhooks, /healthz, /readyz, /metrics)"


async def _chatbridge_listens(host: str, port: int) -> bool:
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://[{local}]:{port}/healthz" if ":" in local else f"http://{local}:{port}/healthz"
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(url)
        return response.status_code == 200 and response.json() == {"status": "ok"}
    except (httpx.HTTPError, ValueError):
        return False


async def _row(name: str, check: Awaitable[str | Caveat], endpoint: Endpoint | None = None) -> Row:
    try:
        result = await check
    except Exception as exc:  # noqa: BLE001 - check reports every failure as a row, never a traceback
        return Row(name, Status.FAIL, _failure(exc, endpoint))
    if isinstance(result, Caveat):
        return Row(name, Status.WARN, result.detail)
    return Row(name, Status.OK, result)


def _failure(error: Exception, endpoint: Endpoint | None) -> str:
    """A connection failure is said by the key that points at the server; other failures as raised."""
    if endpoint is not None and connection_trouble(error) is not None:
        return unreachable(endpoint.key, endpoint.url, error)
    said = str(error) if isinstance(error, _REPORTED) else f"{type(error).__name__}: {error}"
    if endpoint is not None and said.startswith(endpoint.url):
        return f"{endpoint.key} {said}"  # a failure of the URL itself (a 404 for a missing /v1)
    return said


def print_rows(rows: Sequence[Row]) -> None:
    if sys.stdout.isatty():
        _print_table(rows)
        return
    width = max(len(row.name) for row in rows)
    for row in rows:
        print(f"{row.name:<{width}}  {row.status:<4}  {row.detail}")


_STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def _print_table(rows: Sequence[Row]) -> None:
    """rich is imported only here: ``chatbridge run`` imports this module and never prints a table."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("name", "status", "detail", header_style="bold")
    for row in rows:
        # Text, not a markup string: a detail may contain [brackets] from a server's message.
        table.add_row(Text(row.name), Text(row.status, style=_STYLES[row.status]), Text(row.detail))
    Console().print(table)
