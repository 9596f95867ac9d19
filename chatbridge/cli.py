"""The ``chatbridge`` command: ``run`` the enabled adapters, ``chat`` in the terminal, ``check`` a setup.

Exit status: 0 on a clean stop, 1 when something failed at run time, 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from adapters.console.adapter import ConsoleAdapter
from adapters.console.settings import state_dir
from adapters.kit import Adapter, AdapterStartupError
from chatbridge.check import NO_ADAPTER, check
from chatbridge.config import Config, ConfigError, load_config
from chatbridge.exit_status import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from chatbridge.http_server import HttpServer, ServerStartError
from chatbridge.logging_setup import configure_logging, configured_secrets, redact
from chatbridge.metrics import BridgeMetrics
from chatbridge.ops import Operations
from chatbridge.process import run, tune_garbage_collector
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import SHUTDOWN_GRACE_S, open_runtime, stop_adapters
from core.engine import Engine
from core.store import StoreUnavailable

log = logging.getLogger("chatbridge")

CHAT_LOG = "chat.log"
"""The terminal chat's log file, in the state directory (by default ~/.local/state/chatbridge)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        _setup_logging(config, args.command, verbose=getattr(args, "verbose", False))
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
        if name == "chat":
            sub.add_argument(
                "--verbose",
                action="store_true",
                help=f"log to stderr at debug level instead of to {CHAT_LOG} in ~/.local/state/chatbridge",
            )
    return parser


def _setup_logging(config: Config, command: str, verbose: bool = False) -> None:
    """``log.*`` from the configuration. The terminal chat keeps log lines out of the conversation:
    on a terminal they go to a file (its answers show retries as a status line), on pipes only
    warnings reach stderr; ``--verbose`` shows everything on stderr."""
    level, stream = config.log.level, None
    if command == "chat" and verbose:
        level = "debug"
    elif command == "chat" and sys.stdin.isatty() and sys.stdout.isatty():
        stream = _chat_log()
    elif command == "chat" and level == "info":
        level = "warning"
    configure_logging(level=level, fmt=config.log.format, secrets=configured_secrets(config), stream=stream)


def _chat_log() -> TextIO | None:
    """The terminal chat's log file, or None (stderr) where it cannot be written."""
    path = state_dir() / CHAT_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError:
        return None


async def _run(config: Config) -> int:
    server = HttpServer(config.server.host, config.server.port)
    adapters = enabled_adapters(config.adapters, server)
    if not adapters:
        raise ConfigError(f"adapters: {NO_ADAPTER}")
    metrics = BridgeMetrics(
        session_timeout_s=config.session.timeout_s,
        platforms=[adapter.name for adapter in adapters],
        models=config.all_models(),
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
    console = ConsoleAdapter(config.adapters.console)
    # At a terminal Ctrl-C is the console's (it stops an answer); on pipes it ends the chat at once.
    signals = (signal.SIGTERM,) if console.interactive else (signal.SIGINT, signal.SIGTERM)
    async with open_runtime(config) as runtime:
        return await _serve([console], runtime.engine, grace_s=0.0, signals=signals)


async def _serve(
    adapters: Sequence[Adapter],
    engine: Engine,
    grace_s: float = SHUTDOWN_GRACE_S,
    ops: Operations | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> int:
    """Run the adapters until a signal or until one of them ends (the console at end of input).

    Shutdown order: ``/readyz`` turns 503, adapters stop taking messages, replies in flight get
    the grace period, then whatever adapter task is left is cancelled, and with it its replies. The
    HTTP server (stopped by the caller afterwards) keeps answering webhooks, health and metrics
    until then.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    running = {asyncio.create_task(adapter.run(engine), name=adapter.name): adapter for adapter in adapters}
    if ops is not None:
        ops.running(running)
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({stopper, *running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in signals:
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


_COMMANDS = {"run": _run, "chat": _chat, "check": check}


if __name__ == "__main__":
    sys.exit(main())
