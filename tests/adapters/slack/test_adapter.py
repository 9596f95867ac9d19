"""The Slack adapter end to end: the real slack-bolt app and slack_sdk clients against a fake Slack on
127.0.0.1 (tests/fakes/slack_api.py), the real engine on a memory store, the fake model server.

Assertions are on what lands in Slack (the fake's messages after all edits, ephemeral answers,
Socket Mode acks, HTTP status codes), what the model was asked and what the session holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from adapters.kit import AdapterStartupError
from adapters.slack.adapter import PLACEHOLDER, SlackAdapter, is_late_retry, translate_command
from adapters.slack.format import to_mrkdwn
from adapters.slack.settings import SlackSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.config import Config, ConfigError
from chatbridge.http_server import HttpServer
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Hang, Reply
from tests.fakes.slack_api import BOT_USER, FakeSlack
from tests.kit.engine import make_engine, model_settings
from tests.kit.waiting import settled, until

SECRET = "test-signing-secret"
_ts = itertools.count(1)


def next_ts() -> str:
    return f"1600000000.{next(_ts):06d}"


@dataclass
class Bridge:
    slack: FakeSlack
    model: FakeModel
    store: MemoryStore
    engine: Engine
    adapter: SlackAdapter
    server: HttpServer
    task: asyncio.Task[None]

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}/slack/events"

    async def deliver(
        self, event: dict[str, Any], event_id: str | None = None, retry_attempt: int = 0, retry_reason: str = ""
    ) -> None:
        """Deliver an event over Socket Mode and wait for the bridge's ack."""
        envelope = await self.slack.send_envelope(
            callback(event, event_id), retry_attempt=retry_attempt, retry_reason=retry_reason
        )
        await asyncio.wait_for(envelope.acked.wait(), 3)

    async def post(self, body: str, headers: dict[str, str]) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.events_url, data=body, headers=headers) as response,
        ):
            return response.status

    async def session(self, key: str) -> list[tuple[str, str]]:
        state = await self.store.load_session(key, 100)
        return [(turn.role, turn.content) for turn in state.turns] if state else []


@asynccontextmanager
async def bridge(
    fake_model: FakeModel,
    mode: str = "socket",
    *,
    slack: FakeSlack | None = None,
    stream: bool = False,
    adapter: dict[str, Any] | None = None,
    **sections: Any,
) -> AsyncIterator[Bridge]:
    """A running adapter; ``adapter`` overrides its settings, ``sections`` the engine's.

    Replies are not streamed unless asked for: a streamed reply's final edit waits out Slack's edit
    interval, which only the streaming tests need to spend.
    """
    fake = slack or FakeSlack()
    await fake.start()
    store = MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url, stream=stream))
    engine = make_engine(store, model, session={"scope": "thread"}, **sections)
    server = HttpServer("127.0.0.1", 0)
    slack_adapter = SlackAdapter(slack_settings(fake, mode, **(adapter or {})), server)
    if server.has_routes:
        await server.start()
    running = asyncio.create_task(slack_adapter.run(engine))
    try:
        await _started(slack_adapter, running)
        if mode == "socket":
            await fake.wait_for_socket()
        yield Bridge(fake, fake_model, store, engine, slack_adapter, server, running)
    finally:
        await stop_adapters({running: slack_adapter}, engine, 5)
        if not running.cancelled():
            running.result()
        await server.stop()
        await model.aclose()
        await store.close()
        await fake.stop()


async def _started(adapter: SlackAdapter, running: asyncio.Task[None]) -> None:
    await until(lambda: adapter.ready or running.done())
    if running.done():
        running.result()


def slack_settings(fake: FakeSlack, mode: str = "socket", **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "bot_token": "xoxb-test-token",
        "app_token": "xapp-test-token",
        "signing_secret": SECRET,
        "mode": mode,
        "api_base_url": fake.api_url,
    }
    return SlackSettings(**(values | overrides))


def callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10]}",
        "event_time": int(time.time()),
        "event": event,
        "authorizations": [{"team_id": "T1", "user_id": BOT_USER, "is_bot": True}],
    }


def mention(
    text: str, ts: str, *, channel: str = "C1", user: str = "U1", thread_ts: str | None = None
) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def message(
    text: str, ts: str, *, channel: str = "C1", channel_type: str = "channel", user: str | None = "U1", **extra: Any
) -> dict[str, Any]:
    event = {
        "type": "message",
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": ts,
    }
    return event | ({"user": user} if user else {}) | extra


def signed(
    body: str, *, secret: str = SECRET, age_s: float = 0.0, extra: dict[str, str] | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() - age_s))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
        **(extra or {}),
    }


# --- triggers and conversations -------------------------------------------------------------------


async def test_mention_in_a_channel_is_answered_once_in_its_thread(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> hello there", ts))
        await b.deliver(message(f"<@{BOT_USER}> hello there", ts))  # the same post as a message event
        await until(lambda: b.slack.in_thread("C1", ts) == ["echo: [slack:U1] hello there"])
        await settled()

        assert b.slack.in_thread("C1", ts) == ["echo: [slack:U1] hello there"]
        assert fake_model.user_texts() == ["[slack:U1] hello there"]
        assert await b.session(f"slack:C1/thread:{ts}") == [
            ("user", "[slack:U1] hello there"),
            ("assistant", "echo: [slack:U1] hello there"),
        ]
        assert b.slack.tokens == {"Bearer xoxb-test-token", "Bearer xapp-test-token"}


async def test_channel_chatter_without_a_mention_is_not_answered(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(message("just talking", next_ts()))
        await settled()
        assert b.slack.messages == []
        assert fake_model.requests == []


async def test_a_direct_message_is_answered_in_place_and_the_session_is_the_user(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        first, second = next_ts(), next_ts()
        await b.deliver(message("hi", first, channel="D1", channel_type="im"))
        await until(lambda: b.slack.in_thread("D1", None) == ["echo: hi"])
        await b.deliver(message("more", second, channel="D1", channel_type="im"))
        await until(lambda: b.slack.in_thread("D1", None) == ["echo: hi", "echo: more"])

        assert await b.session("slack:U1") == [
            ("user", "hi"),
            ("assistant", "echo: hi"),
            ("user", "more"),
            ("assistant", "echo: more"),
        ]


async def test_a_thread_the_bot_answered_in_is_followed_without_a_mention(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        root = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> first", root))
        await until(lambda: b.slack.in_thread("C1", root) == ["echo: [slack:U1] first"])
        await b.deliver(message("second", next_ts(), thread_ts=root))
        await until(lambda: b.slack.in_thread("C1", root) == ["echo: [slack:U1] first", "echo: [slack:U1] second"])
        other = next_ts()
        await b.deliver(message("not for the bot", next_ts(), thread_ts=other))
        await settled()

        assert b.slack.in_thread("C1", other) == []
        assert [m["content"] for m in fake_model.requests[-1]["messages"][1:]] == [
            "[slack:U1] first",
            "echo: [slack:U1] first",
            "[slack:U1] second",
        ]


async def test_thread_follow_can_be_turned_off(fake_model: FakeModel) -> None:
    async with bridge(fake_model, adapter={"thread_follow": False}) as b:
        root = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> first", root))
        await until(lambda: b.slack.in_thread("C1", root) == ["echo: [slack:U1] first"])
        await b.deliver(message("second", next_ts(), thread_ts=root))
        await settled()

        assert b.slack.in_thread("C1", root) == ["echo: [slack:U1] first"]


async def test_bot_messages_edits_and_deletions_are_ignored(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        text = f"<@{BOT_USER}> hi"
        await b.deliver(message(text, next_ts(), user=None, subtype="bot_message", bot_id="BOTHER"))
        await b.deliver(message(text, next_ts(), user="U2", bot_id="BOTHER"))
        await b.deliver(message(text, next_ts(), user=BOT_USER))
        await b.deliver(
            message("", next_ts(), user=None, subtype="message_changed", message={"text": text, "user": "U1"})
        )
        await b.deliver(message("", next_ts(), user=None, subtype="message_deleted", deleted_ts="1.2"))
        await settled()

        assert b.slack.messages == []
        assert fake_model.requests == []


async def test_a_denied_user_never_reaches_the_model_and_is_told_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model, access={"deny_users": ["slack:U666"], "on_denied": "reply"}) as b:
        first, second = next_ts(), next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> let me in", first, user="U666"))
        await until(lambda: b.slack.in_thread("C1", first) == [to_mrkdwn(texts.DENIED)])
        await b.deliver(mention(f"<@{BOT_USER}> please", second, user="U666"))
        await settled()

        assert b.slack.in_thread("C1", second) == []
        assert fake_model.requests == []


# --- delivery: acks, retries, duplicates ----------------------------------------------------------


async def test_events_are_acked_before_the_model_answers(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 0.8
    async with bridge(fake_model) as b:
        ts = next_ts()
        started = time.monotonic()
        await b.deliver(mention(f"<@{BOT_USER}> slow one", ts))
        acked_after = time.monotonic() - started
        await until(lambda: b.slack.in_thread("C1", ts) == [PLACEHOLDER])
        await until(lambda: b.slack.in_thread("C1", ts) == ["echo: [slack:U1] slow one"])

        assert acked_after < 0.5
        assert b.slack.count("chat.postMessage") == 1


async def test_a_placeholder_no_answer_replaced_is_removed_at_shutdown(fake_model: FakeModel) -> None:
    fake_model.script(Hang())
    async with bridge(fake_model) as b:
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> never answered", ts))
        await until(lambda: b.slack.in_thread("C1", ts) == [PLACEHOLDER])
        await stop_adapters({b.task: b.adapter}, b.engine, 0.1)
    assert b.slack.messages == []


async def test_socket_mode_redeliveries_are_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        ts = next_ts()
        event = mention(f"<@{BOT_USER}> once please", ts)
        await b.deliver(event, event_id="Ev1")
        await b.deliver(event, event_id="Ev1")  # the same event id again
        await b.deliver(event, event_id="Ev1", retry_attempt=1, retry_reason="timeout")
        await b.deliver(event, event_id="Ev1", retry_attempt=2, retry_reason="http_error")
        await until(lambda: b.slack.in_thread("C1", ts) == ["echo: [slack:U1] once please"])
        await settled()

        assert b.slack.in_thread("C1", ts) == ["echo: [slack:U1] once please"]
        assert fake_model.user_texts() == ["[slack:U1] once please"]


def test_only_a_nonzero_retry_number_for_a_late_ack_is_dropped() -> None:
    assert not is_late_retry({"x-slack-retry-num": ["0"], "x-slack-retry-reason": ["timeout"]})
    assert not is_late_retry({})
    assert not is_late_retry({"x-slack-retry-num": ["1"], "x-slack-retry-reason": ["http_error"]})
    assert is_late_retry({"x-slack-retry-num": ["1"], "x-slack-retry-reason": ["http_timeout"]})


# --- HTTP mode ------------------------------------------------------------------------------------


async def test_http_signed_event_is_acked_and_answered(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        ts = next_ts()
        body = json.dumps(callback(mention(f"<@{BOT_USER}> over http", ts)))
        assert await b.post(body, signed(body)) == 200
        await until(lambda: b.slack.in_thread("C1", ts) == ["echo: [slack:U1] over http"])


async def test_http_bad_or_stale_signatures_get_401_and_nothing_happens(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        body = json.dumps(callback(mention(f"<@{BOT_USER}> sneaky", next_ts())))
        assert await b.post(body, signed(body, secret="wrong-secret")) == 401
        assert await b.post(body, signed(body, age_s=6 * 60)) == 401
        assert await b.post(body, {"Content-Type": "application/json"}) == 401
        await settled()

        assert b.slack.messages == []
        assert fake_model.requests == []


async def test_http_url_verification_answers_the_challenge(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        body = json.dumps({"token": "legacy", "challenge": "abc123", "type": "url_verification"})
        async with (
            aiohttp.ClientSession() as session,
            session.post(b.events_url, data=body, headers=signed(body)) as response,
        ):
            assert response.status == 200
            assert (await response.json()) == {"challenge": "abc123"}


async def test_http_retries_never_give_a_second_answer(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        answered, late, lost = next_ts(), next_ts(), next_ts()
        body = json.dumps(callback(mention(f"<@{BOT_USER}> first", answered)))
        assert await b.post(body, signed(body)) == 200
        await until(lambda: b.slack.in_thread("C1", answered) == ["echo: [slack:U1] first"])
        assert (
            await b.post(body, signed(body, extra={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}))
            == 200
        )
        # A retry because the ack came late: the first delivery is already being answered somewhere.
        late_body = json.dumps(callback(mention(f"<@{BOT_USER}> late", late)))
        assert (
            await b.post(
                late_body, signed(late_body, extra={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
            )
            == 200
        )
        # A retry after a failed delivery may be the first time the event reaches us.
        lost_body = json.dumps(callback(mention(f"<@{BOT_USER}> lost", lost)))
        assert (
            await b.post(
                lost_body, signed(lost_body, extra={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_error"})
            )
            == 200
        )
        await until(lambda: b.slack.in_thread("C1", lost) == ["echo: [slack:U1] lost"])
        await settled()

        assert b.slack.in_thread("C1", answered) == ["echo: [slack:U1] first"]
        assert b.slack.in_thread("C1", late) == []
        assert fake_model.user_texts() == ["[slack:U1] first", "[slack:U1] lost"]


async def test_http_slash_command_is_answered_ephemerally(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        body = urlencode(command_payload(b.slack, "id"))
        assert await b.post(body, signed(body) | {"Content-Type": "application/x-www-form-urlencoded"}) == 200
        await until(lambda: len(b.slack.ephemeral) == 1)

        assert b.slack.ephemeral == [to_mrkdwn(texts.identity_card("slack:U1", "slack:C1", "slack:C1"))]
        assert b.slack.messages == []


# --- replies --------------------------------------------------------------------------------------


async def test_a_long_reply_continues_in_further_thread_messages(fake_model: FakeModel) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    fake_model.script(Reply(text=long_text, chunk_chars=500))
    async with bridge(fake_model) as b:
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> write a lot", ts))
        await until(lambda: "\n\n".join(b.slack.in_thread("C1", ts)) == long_text, timeout=15)

        shown = b.slack.in_thread("C1", ts)
        assert len(shown) == 3
        assert all(len(text) <= 3500 for text in shown)


async def test_streamed_updates_survive_a_429_in_the_middle(fake_model: FakeModel) -> None:
    answer = " ".join(f"w{i}" for i in range(120))
    fake_model.script(Reply(text=answer, chunk_chars=8, chunk_delay_s=0.03))
    slack = FakeSlack()
    slack.rate_limit("chat.update", retry_after_s=1.0)
    async with bridge(fake_model, slack=slack, stream=True) as b:
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> stream it", ts))
        await until(lambda: b.slack.in_thread("C1", ts) == [answer], timeout=15)

        assert b.slack.count("chat.postMessage") == 1  # the placeholder, then only edits
        assert b.slack.count("chat.update") >= 3  # the refused one, at least one streamed edit, the final one
        assert b.slack.messages[0].edits >= 2


async def test_markdown_arrives_as_slack_mrkdwn(fake_model: FakeModel) -> None:
    fake_model.script(
        Reply(text="## Result\n**Bold**, *soft* and [docs](https://example.com/a?b=1&c=2)\n```python\nx = 1 < 2\n```")
    )
    async with bridge(fake_model) as b:
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> format", ts))
        expected = "*Result*\n*Bold*, _soft_ and <https://example.com/a?b=1&amp;c=2|docs>\n```\nx = 1 &lt; 2\n```"
        await until(lambda: b.slack.in_thread("C1", ts) == [expected])


# --- slash command --------------------------------------------------------------------------------


def command_payload(slack: FakeSlack, text: str, channel: str = "C1") -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": "U1",
        "user_name": "ann",
        "command": "/chatbridge",
        "text": text,
        "api_app_id": "A1",
        "response_url": f"{slack.base_url}respond/{uuid.uuid4().hex}",
        "trigger_id": uuid.uuid4().hex,
    }


async def test_slash_command_reset_is_answered_ephemerally_over_socket_mode(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        envelope = await b.slack.send_envelope(command_payload(b.slack, "reset"), kind="slash_commands")
        await asyncio.wait_for(envelope.acked.wait(), 3)
        await until(lambda: len(b.slack.ephemeral) == 1)

        assert b.slack.ephemeral == [texts.SESSION_WAS_EMPTY]
        assert b.slack.messages == []


def test_slash_command_text_maps_to_engine_commands() -> None:
    base = {"channel_id": "D9", "user_id": "U1", "trigger_id": "t"}
    assert translate_command(base | {"text": ""}).text == "/help"
    assert translate_command(base | {"text": "admin clear all"}).text == "/admin clear all"
    assert translate_command(base | {"text": "/reset"}).text == "/reset"
    assert translate_command(base).is_private


# --- connection ----------------------------------------------------------------------------------


async def test_socket_mode_reconnects_on_its_own_and_reports_readiness(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        assert b.adapter.ready
        await b.slack.drop_socket()
        await b.slack.wait_for_socket()
        await until(lambda: b.adapter.ready)
        ts = next_ts()
        await b.deliver(mention(f"<@{BOT_USER}> still there?", ts))
        await until(lambda: b.slack.in_thread("C1", ts) == ["echo: [slack:U1] still there?"])

        assert b.slack.count("apps.connections.open") == 2
    assert not b.adapter.ready


# --- start-up and configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda fake: setattr(fake, "auth_error", "invalid_auth"),
            "slack: auth.test failed: invalid_auth (check adapters.slack.bot_token)",
        ),
        (
            lambda fake: setattr(fake, "scopes", "chat:write,commands"),
            "slack: the bot token lacks the scope(s) app_mentions:read, channels:history, im:history",
        ),
        (
            lambda fake: setattr(fake, "app_token_error", "invalid_auth"),
            "slack: apps.connections.open failed: invalid_auth (check adapters.slack.app_token)",
        ),
    ],
)
async def test_start_up_errors_are_one_line_naming_the_adapter(
    setup: Callable[[FakeSlack], None], expected: str, fake_model: FakeModel
) -> None:
    fake = FakeSlack()
    await fake.start()
    setup(fake)
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        adapter = SlackAdapter(slack_settings(fake), HttpServer("127.0.0.1", 0))
        with pytest.raises(AdapterStartupError) as raised:
            await adapter.run(make_engine(MemoryStore(), model))
        assert str(raised.value).startswith(expected)
        assert "xoxb" not in str(raised.value) and "xapp" not in str(raised.value)
        assert not adapter.ready
    finally:
        await model.aclose()
        await fake.stop()


async def test_an_unreachable_api_is_one_clear_error() -> None:
    fake = FakeSlack()
    await fake.start()
    await fake.stop()  # nothing listens there any more
    adapter = SlackAdapter(slack_settings(fake), HttpServer("127.0.0.1", 0))
    with pytest.raises(AdapterStartupError) as raised:
        await adapter.check()
    assert str(raised.value) == (
        f"slack: cannot reach the Web API: adapters.slack.api_base_url {fake.api_url}: "
        "connection refused (nothing listens there)"
    )


async def test_check_reports_who_the_bot_is() -> None:
    fake = FakeSlack()
    await fake.start()
    try:
        adapter = SlackAdapter(slack_settings(fake), HttpServer("127.0.0.1", 0))
        assert await adapter.check() == "@chatbridge in Test Team (socket mode)"
        assert fake.count("apps.connections.open") == 1
    finally:
        await fake.stop()


def test_each_mode_requires_its_own_secret() -> None:
    with pytest.raises(ValueError, match="app_token: required"):
        SlackSettings(enabled=True, bot_token="xoxb", mode="socket")
    with pytest.raises(ValueError, match="signing_secret: required"):
        SlackSettings(enabled=True, bot_token="xoxb", mode="http", app_token="xapp")
    assert SlackSettings(enabled=False).thread_follow is True


async def test_enabled_slack_in_http_mode_mounts_the_events_route() -> None:
    config = Config(adapters={"slack": {"enabled": True, "bot_token": "xoxb", "signing_secret": "s", "mode": "http"}})
    server = HttpServer("127.0.0.1", 0)
    adapters = enabled_adapters(config.adapters, server)
    assert [adapter.name for adapter in adapters] == ["slack"]
    assert server.has_routes


def test_config_error_names_the_missing_key(tmp_path: Any) -> None:
    from chatbridge.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("adapters:\n  slack: {enabled: true, bot_token: xoxb, mode: http}\n")
    with pytest.raises(ConfigError, match="adapters.slack: signing_secret: required"):
        load_config(path)


# --- the command line -----------------------------------------------------------------------------


def _cli_env(fake_model: FakeModel, fake: FakeSlack, mode: str, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")}
    return env | {
        "CHATBRIDGE_MODEL__BASE_URL": fake_model.base_url,
        "CHATBRIDGE_CONTEXT__TOKENIZER": "estimate",
        "CHATBRIDGE_STORE__BACKEND": "memory",
        "CHATBRIDGE_SERVER__PORT": str(port),
        "CHATBRIDGE_ADAPTERS__SLACK__ENABLED": "true",
        "CHATBRIDGE_ADAPTERS__SLACK__MODE": mode,
        "CHATBRIDGE_ADAPTERS__SLACK__BOT_TOKEN": "xoxb-cli-secret",
        "CHATBRIDGE_ADAPTERS__SLACK__APP_TOKEN": "xapp-cli-secret",
        "CHATBRIDGE_ADAPTERS__SLACK__SIGNING_SECRET": SECRET,
        "CHATBRIDGE_ADAPTERS__SLACK__API_BASE_URL": fake.api_url,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_chatbridge_run_serves_slack_over_http_and_stops_on_sigterm(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake = FakeSlack()
    await fake.start()
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatbridge.cli",
        "run",
        cwd=tmp_path,
        env=_cli_env(fake_model, fake, "http", port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ts = next_ts()
        body = json.dumps(callback(mention(f"<@{BOT_USER}> from the cli", ts)))
        url = f"http://127.0.0.1:{port}/slack/events"
        deadline = time.monotonic() + 15
        status = 0
        async with aiohttp.ClientSession() as session:
            while status != 200 and time.monotonic() < deadline:
                try:
                    async with session.post(url, data=body, headers=signed(body)) as response:
                        status = response.status
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert status == 200
        await until(lambda: fake.in_thread("C1", ts) == ["echo: [slack:U1] from the cli"])
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        await fake.stop()
    assert process.returncode == 0, err.decode()
    assert "xoxb-cli-secret" not in err.decode()


async def test_chatbridge_check_reaches_slack(tmp_path: Path, fake_model: FakeModel) -> None:
    fake = FakeSlack()
    await fake.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatbridge.cli",
            "check",
            cwd=tmp_path,
            env=_cli_env(fake_model, fake, "socket", _free_port()),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        await fake.stop()
    assert process.returncode == 0, out.decode() + err.decode()
    assert "@chatbridge in Test Team (socket mode)" in out.decode()
