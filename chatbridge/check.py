"""``chatbridge check``: reach everything ``run`` would use and print what works, failing where ``run`` would refuse."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable

import httpx

from adapters.kit import AdapterStartupError
from bots.errors import ModelError
from bots.openai_client import OpenAIChatModel
from chatbridge.config import Config
from chatbridge.exit_status import EXIT_FAILED, EXIT_OK
from chatbridge.http_server import HttpServer, ServerStartError
from chatbridge.logging_setup import redact
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import build_store
from chatbridge.spending import spending_rows
from core.store import StoreUnavailable

NO_ADAPTER = "no adapter is enabled (set adapters.<name>.enabled: true, or use chatbridge chat)"


async def check(config: Config) -> int:
    rows: list[tuple[str, bool, str]] = [("config", True, "valid")]
    rows.append(await _probe("store", _check_store(config)))
    model = OpenAIChatModel(config.model)
    try:
        rows.append(await _probe(f"model {config.model.name}", model.check()))
    finally:
        await model.aclose()
    adapters = enabled_adapters(config.adapters, HttpServer(config.server.host, config.server.port))
    if not adapters:
        rows.append(("adapters", False, f"{NO_ADAPTER}; `chatbridge run` would refuse to start"))
    for adapter in adapters:
        rows.append(await _probe(f"adapter {adapter.name}", adapter.check()))
    rows.append(await _probe("server", check_port(config.server.host, config.server.port)))
    rows += spending_rows(config)
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{name:<{width}}  {'ok  ' if ok else 'FAIL'}  {redact(detail)}")
    return EXIT_OK if all(ok for _, ok, _ in rows) else EXIT_FAILED


async def _check_store(config: Config) -> str:
    """A sqlite file a running bridge owns is checked without taking it over (as the port is)."""
    from core.stores.sqlite import SqliteStore, StoreInUse  # as create_store does: only when chosen

    store = build_store(config)
    in_use = ""
    try:
        await store.open()
    except StoreInUse as exc:
        in_use = f" ({str(exc).partition(': ')[2].partition(';')[0]})"
        store = SqliteStore(config.store.sqlite_path, exclusive=False)
        await store.open()
    try:
        await store.ping()
    finally:
        await store.close()
    return f"{config.store.backend} store reachable{in_use}"


async def check_port(host: str, port: int) -> str:
    """Whether ``chatbridge run`` could listen; a port held by a running chatbridge is fine."""
    if port == 0:
        return f"{host}: any free port (server.port is 0)"
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and await _chatbridge_listens(host, port):
            return f"{host}:{port} is in use by a running chatbridge (its /healthz answered)"
        raise ServerStartError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
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


async def _probe(name: str, check: Awaitable[str]) -> tuple[str, bool, str]:
    try:
        return name, True, await check
    except (ModelError, StoreUnavailable, AdapterStartupError, ServerStartError) as exc:
        return name, False, str(exc)
    except Exception as exc:  # noqa: BLE001 - check reports every failure as a row, never a traceback
        return name, False, f"{type(exc).__name__}: {exc}"
