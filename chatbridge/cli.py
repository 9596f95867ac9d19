"""The ``chatbridge`` command: ``run`` the enabled adapters, ``chat`` in the terminal, ``check`` a setup.

Exit status: 0 on a clean stop, 1 when something failed at run time, 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path

import httpx

from adapters.console.adapter import ConsoleAdapter
from adapters.kit import Adapter, AdapterStartupError
from bots.errors import ModelError
from bots.openai_client import OpenAIChatModel
from chatbridge.config import Config, ConfigError, load_config
from chatbridge.http_server import HttpServer, ServerStartError
from chatbridge.logging_setup import configure_logging, configured_secrets, redact
from chatbridge.metrics import BridgeMetrics
from chatbridge.ops import Operations
from chatbridge.process import run, tune_garbage_collector
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import SHUTDOWN_GRACE_S, build_store, open_runtime, stop_adapters
from core.engine import Engine
from core.store import StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
NO_ADAPTER = "no adapter is enabled (set adapters.<name>.enabled: true, or use chatbridge chat)"

log = logging.getLogger("chatbridge")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        _setup_logging(config, args.command)
        tune_garbage_collector()
        return run(_COMMANDS[args.command](config))
    except ConfigError as exc:
        print(f"chatbridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (AdapterStartupError, StoreUnavailable, ServerStartError) as exc:
        print(f"chatbridge: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatbridge", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "start every enabled adapter; stops cleanly on SIGINT/SIGTERM"),
        ("chat", "talk to the bot in this terminal, with the same engine, commands and store"),
        ("check", "validate the configuration and reach the model and each enabled platform"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", type=Path, default=None, help="YAML file (default: config.yaml if present)")
    return parser


def _setup_logging(config: Config, command: str) -> None:
    """``log.*`` from the configuration; the terminal chat stays quiet unless asked for debug."""
    level = config.log.level
    if command == "chat" and level == "info":
        level = "warning"
    configure_logging(level=level, fmt=config.log.format, secrets=configured_secrets(config))


async def _run(config: Config) -> int:
    server = HttpServer(config.server.host, config.server.port)
    adapters = enabled_adapters(config.adapters, server)
    if not adapters:
        raise ConfigError(f"adapters: {NO_ADAPTER}")
    metrics = BridgeMetrics(
        session_timeout_s=config.session.timeout_s, platforms=[adapter.name for adapter in adapters]
    )
    async with open_runtime(config, metrics) as runtime:
        # The server stops before the runtime closes the store that /readyz and /metrics use.
        ops = Operations(store=runtime.store, metrics=metrics, adapters=adapters)
        ops.mount(server)
        await server.start()
        try:
            return await _serve(adapters, runtime.engine, ops=ops)
        finally:
            await server.stop()


async def _chat(config: Config) -> int:
    async with open_runtime(config) as runtime:
        # A person pressing Ctrl-C wants out now; the unfinished turn is simply not stored.
        return await _serve([ConsoleAdapter()], runtime.engine, grace_s=0.0)


async def _serve(
    adapters: Sequence[Adapter], engine: Engine, grace_s: float = SHUTDOWN_GRACE_S, ops: Operations | None = None
) -> int:
    """Run the adapters until a signal or until one of them ends (the console at end of input).

    Shutdown order: ``/readyz`` turns 503, adapters stop taking messages, replies in flight get
    the grace period, then whatever adapter task is left is cancelled, and with it its replies. The
    HTTP server (stopped by the caller afterwards) keeps answering webhooks, health and metrics
    until then.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = {asyncio.create_task(adapter.run(engine), name=adapter.name): adapter for adapter in adapters}
    if ops is not None:
        ops.running(running)
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({stopper, *running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    stopper.cancel()
    if ops is not None:
        ops.stopping()
    failed = False
    for task, adapter in running.items():
        if task in done and task.exception() is not None:
            failed = True
            log.error("adapter %s stopped: %s", adapter.name, task.exception())
    await stop_adapters(running, engine, grace_s)
    return EXIT_FAILED if failed else EXIT_OK


async def _check(config: Config) -> int:
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
    rows.append(await _probe("server", _check_port(config.server.host, config.server.port)))
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


async def _check_port(host: str, port: int) -> str:
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


_COMMANDS = {"run": _run, "chat": _chat, "check": _check}


if __name__ == "__main__":
    sys.exit(main())
