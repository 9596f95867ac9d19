"""The DingTalk adapter end to end: the real dingtalk-stream SDK (frames, callback handler, acks)
and the adapter's HTTP calls against a fake DingTalk on 127.0.0.1 (tests/fakes/dingtalk_api.py),
the real engine on a memory store, the fake model server.

Assertions are on what lands in DingTalk (the fake's sent messages and the path they took), the
stream acknowledgements and HTTP status codes, what the model was asked and what the session holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.dingtalk.adapter import DingTalkAdapter, safe_id, signature
from adapters.dingtalk.format import to_dingtalk
from adapters.dingtalk.settings import DingTalkSettings
from adapters.kit import AdapterStartupError
from bots.openai_client import OpenAIChatModel
from chatbridge.config import Config
from chatbridge.http_server import HttpServer
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.identities import identity_problem
from core.store import Admission, StoreUnavailable, Verdict
from core.stores.memory import MemoryStore
from tests.fakes.dingtalk_api import CLIENT_ID, CLIENT_SECRET, ROBOT_USER, FakeDingTalk
from tests.fakes.fake_model import FakeModel, Reply
from tests.kit.engine import make_engine, model_settings
from tests.kit.stores import stored_pairs
from tests.kit.waiting import settled, until

PRIVATE = "cidPrivate1+p/q=="
GROUP = "cidGroup1+x/y=="


@dataclass
class Bridge:
    dingtalk: FakeDingTalk
    store: MemoryStore
    engine: Engine
    adapter: DingTalkAdapter
    server: HttpServer
    task: asyncio.Task[None]

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}/dingtalk/events"

    async def deliver(self, message: dict[str, Any]) -> dict[str, Any]:
        """Push a message over the stream and wait for its acknowledgement."""
        delivery = await self.dingtalk.deliver(message)
        await asyncio.wait_for(delivery.acked.wait(), 3)
        return delivery.ack

    async def post(self, message: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.events_url, json=message, headers=signed() if headers is None else headers) as response,
        ):
            return response.status

    async def session(self, key: str, at_least: int = 0) -> list[tuple[str, str]]:
        return await stored_pairs(self.store, key, at_least=at_least)


def settings(fake: FakeDingTalk, mode: str = "stream", **overrides: Any) -> DingTalkSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "mode": mode,
        "api_base_url": fake.base_url,
    }
    return DingTalkSettings(**(values | overrides))


@asynccontextmanager
async def bridge(
    fake_model: FakeModel,
    mode: str = "stream",
    *,
    dingtalk: FakeDingTalk | None = None,
    store: MemoryStore | None = None,
    **sections: Any,
) -> AsyncIterator[Bridge]:
    fake = dingtalk or FakeDingTalk()
    await fake.start()
    store = store or MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    engine = make_engine(store, model, **sections)
    server = HttpServer("127.0.0.1", 0)
    adapter = DingTalkAdapter(settings(fake, mode), server)
    if server.has_routes:
        await server.start()
    running = asyncio.create_task(adapter.run(engine))
    try:
        await until(lambda: adapter.ready or running.done())
        if running.done():
            running.result()
        yield Bridge(fake, store, engine, adapter, server, running)
    finally:
        await stop_adapters({running: adapter}, engine, 5)
        if not running.cancelled():
            running.result()
        await server.stop()
        await model.aclose()
        await store.close()
        await fake.stop()


def signed(*, secret: str = CLIENT_SECRET, age_s: float = 0.0) -> dict[str, str]:
    timestamp = str(int((time.time() - age_s) * 1000))
    return {"timestamp": timestamp, "sign": signature(timestamp, secret)}


# --- conversations and triggers -------------------------------------------------------------------


async def test_a_private_message_is_answered_through_its_session_webhook(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        ack = await b.deliver(b.dingtalk.robot_message("hello there"))
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: hello there"])

        assert ack["code"] == 200
        assert [sent.via for sent in b.dingtalk.sent] == ["webhook"]
        assert b.dingtalk.sent[0].title == "echo: hello there"
        assert await b.session("dingtalk:manager4220", at_least=2) == [
            ("user", "hello there"),
            ("assistant", "echo: hello there"),
        ]


async def test_a_group_message_that_ats_the_robot_is_answered_with_the_mention_gone(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        # DingTalk removes the robot's @name from the text and leaves the space before the rest.
        await b.deliver(b.dingtalk.robot_message(" what is 2+2?", group=True))
        await until(lambda: b.dingtalk.in_conversation(GROUP) == ["echo: [Ann] what is 2+2?"])

        assert fake_model.user_texts() == ["[Ann] what is 2+2?"]
        assert await b.session(f"dingtalk:{safe_id(GROUP)}", at_least=2) == [
            ("user", "[Ann] what is 2+2?"),
            ("assistant", "echo: [Ann] what is 2+2?"),
        ]


async def test_the_robot_in_at_users_is_a_mention_and_its_name_in_the_text_is_not(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("@chatbridge typed by hand", group=True, in_at_list=False))
        await b.deliver(b.dingtalk.robot_message(" picked from the list", group=True, in_at_list=False, at_robot=True))
        await until(lambda: b.dingtalk.in_conversation(GROUP) == ["echo: [Ann] picked from the list"])
        await settled()

        assert fake_model.user_texts() == ["[Ann] picked from the list"]


async def test_messages_from_the_robot_itself_are_ignored(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        ack = await b.deliver(b.dingtalk.robot_message("loop?", sender_id=ROBOT_USER, staff_id=None))
        await settled()

        assert ack["code"] == 200
        assert b.dingtalk.sent == []
        assert fake_model.requests == []


async def test_a_denied_user_never_reaches_the_model(fake_model: FakeModel) -> None:
    async with bridge(fake_model, access={"deny_users": ["dingtalk:intruder1"], "on_denied": "reply"}) as b:
        await b.deliver(b.dingtalk.robot_message("let me in", staff_id="intruder1"))
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == [to_dingtalk(texts.DENIED)])
        await settled()

        assert fake_model.requests == []


async def test_a_sender_without_a_staff_id_is_named_by_a_well_formed_sender_id(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("/id", staff_id=None))
        await until(lambda: len(b.dingtalk.sent) == 1)

        user = "dingtalk:" + safe_id("$:LWCP_v1:$senderA+b/c==")
        chat = "dingtalk:" + safe_id(PRIVATE)
        assert b.dingtalk.sent[0].text == to_dingtalk(texts.identity_card(user, chat, user))
        assert identity_problem(user) is None and identity_problem(chat) is None
        assert fake_model.requests == []


async def test_commands_are_text(fake_model: FakeModel) -> None:
    async with bridge(fake_model, access={"admins": ["dingtalk:boss1"]}) as b:
        await b.deliver(b.dingtalk.robot_message("remember me"))
        await until(lambda: len(b.dingtalk.sent) == 1)
        await b.deliver(b.dingtalk.robot_message("/reset"))
        await b.deliver(b.dingtalk.robot_message("/admin stats", staff_id="manager4220"))
        await until(lambda: len(b.dingtalk.sent) == 3)

        assert b.dingtalk.sent[2].text == to_dingtalk(texts.ADMIN_ONLY)
        assert await b.session("dingtalk:manager4220") == []


async def test_a_picture_in_a_private_chat_gets_the_only_text_note(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("", msgtype="picture"))
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == [to_dingtalk(texts.ONLY_TEXT_SUPPORTED)])
        assert fake_model.requests == []


# --- delivery: acknowledgements and redeliveries --------------------------------------------------


async def test_a_redelivered_message_is_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        message = b.dingtalk.robot_message("once please", msg_id="msgSame1")
        first = await b.deliver(message)
        again = await b.deliver(message)  # the gateway sends it again: our ack was late
        await until(lambda: len(b.dingtalk.sent) == 1)
        await settled()

        assert (first["code"], again["code"]) == (200, 200)
        assert b.dingtalk.in_conversation(PRIVATE) == ["echo: once please"]
        assert fake_model.user_texts() == ["once please"]


async def test_the_ack_comes_before_the_model_answers(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 0.8
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("slow one"))
        answered_before_the_ack = b.dingtalk.in_conversation(PRIVATE)
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: slow one"])

        assert answered_before_the_ack == []


class _StoreDown(MemoryStore):
    """Cannot take messages until ``down`` is cleared."""

    down = True

    async def admit(self, admission: Admission) -> Verdict:
        if self.down:
            raise StoreUnavailable("connection refused")
        return await super().admit(admission)


async def test_a_message_the_store_cannot_take_is_not_acknowledged_and_its_redelivery_is_answered(
    fake_model: FakeModel,
) -> None:
    store = _StoreDown()
    async with bridge(fake_model, store=store) as b:
        message = b.dingtalk.robot_message("are you there?")
        lost = await b.dingtalk.deliver(message)
        await settled()
        assert not lost.acked.is_set()
        assert b.dingtalk.sent == []  # nobody is asked to send it again: the gateway will

        store.down = False
        ack = await b.deliver(message)
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: are you there?"])
        assert ack["code"] == 200


async def test_pings_are_answered_and_a_disconnect_notice_reconnects(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        ping = await b.dingtalk.ping()
        await asyncio.wait_for(ping.acked.wait(), 3)
        assert json.loads(ping.ack["data"]) == {"opaque": ping.frame_id}

        await b.dingtalk.ask_to_reconnect()
        await b.dingtalk.wait_for_socket()
        await until(lambda: b.adapter.ready and b.dingtalk.connections_opened == 2)
        await b.deliver(b.dingtalk.robot_message("still there?"))
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: still there?"])


async def test_a_dropped_stream_reconnects_on_its_own(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.dingtalk.drop_socket()
        await b.dingtalk.wait_for_socket()
        await until(lambda: b.adapter.ready)
        await b.deliver(b.dingtalk.robot_message("back?"))
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: back?"])

        assert b.dingtalk.count("connections/open") == 2
    assert not b.adapter.ready


# --- replies --------------------------------------------------------------------------------------


async def test_an_expired_session_webhook_falls_back_to_the_openapi(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("private, webhook past its time", webhook_valid_s=-10))
        await b.deliver(b.dingtalk.robot_message(" group, same", group=True, webhook_valid_s=-10))
        await until(lambda: len(b.dingtalk.sent) == 2)

        assert b.dingtalk.in_conversation(PRIVATE) == ["echo: private, webhook past its time"]
        assert b.dingtalk.in_conversation(GROUP) == ["echo: [Ann] group, same"]
        assert {sent.via for sent in b.dingtalk.sent} == {"openapi"}
        assert b.dingtalk.count("webhook") == 0
        assert b.dingtalk.tokens == {b.dingtalk.tokens_issued[0]}


async def test_a_session_webhook_refused_early_falls_back_to_the_openapi(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        message = b.dingtalk.robot_message("webhook says expired")
        b.dingtalk.expire_sessions()
        await b.deliver(message)
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: webhook says expired"])

        assert b.dingtalk.count("webhook") == 1
        assert [sent.via for sent in b.dingtalk.sent] == ["openapi"]


async def test_a_revoked_access_token_is_fetched_again(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        b.dingtalk.revoke_tokens()
        await b.deliver(b.dingtalk.robot_message(" new token please", group=True, webhook_valid_s=-10))
        await until(lambda: b.dingtalk.in_conversation(GROUP) == ["echo: [Ann] new token please"])

        assert len(b.dingtalk.tokens_issued) == 2


async def test_rate_limits_are_waited_out(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        b.dingtalk.rate_limit("webhook", "webhook")
        b.dingtalk.rate_limit("group", "429", "qps")
        await b.deliver(b.dingtalk.robot_message("through the webhook"))
        await b.deliver(b.dingtalk.robot_message(" through the openapi", group=True, webhook_valid_s=-10))
        await until(lambda: len(b.dingtalk.sent) == 2, timeout=10)

        assert b.dingtalk.in_conversation(PRIVATE) == ["echo: through the webhook"]
        assert b.dingtalk.in_conversation(GROUP) == ["echo: [Ann] through the openapi"]
        assert b.dingtalk.count("webhook") == 2
        assert b.dingtalk.count("group") == 3


async def test_an_answer_after_a_restart_still_arrives_through_the_openapi(fake_model: FakeModel) -> None:
    """A message queued by one process and answered through a channel rebuilt from its route."""
    store = MemoryStore()
    dingtalk = FakeDingTalk()
    async with bridge(fake_model, dingtalk=dingtalk, store=store) as b:
        message = b.dingtalk.robot_message(" from before the restart", group=True)
        channel = b.adapter._reopen(  # the route the queue stores, after the webhook expired
            json.dumps(
                {
                    "private": False,
                    "conversation_id": GROUP,
                    "staff_id": "",
                    "robot_code": CLIENT_ID,
                    "webhook": message["sessionWebhook"],
                    "webhook_expires_ms": int((time.time() - 1) * 1000),
                }
            )
        )
        await channel.send("**answered** later")

        assert [(s.conversation, s.text, s.via) for s in b.dingtalk.sent] == [(GROUP, "**answered** later", "openapi")]


async def test_a_long_answer_is_split_under_the_limit(fake_model: FakeModel) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    fake_model.script(Reply(text=long_text, chunk_chars=500))
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("write a lot"))
        await until(lambda: len(b.dingtalk.sent) == 3, timeout=15)

        shown = b.dingtalk.in_conversation(PRIVATE)
        assert all(len(text) <= 3500 for text in shown)
        assert "\n\n".join(shown) == long_text


async def test_markdown_arrives_as_dingtalk_markdown(fake_model: FakeModel) -> None:
    fake_model.script(Reply(text="## Result\n**Bold** and ~~gone~~\nnext line\n* one\n* two"))
    async with bridge(fake_model) as b:
        await b.deliver(b.dingtalk.robot_message("format"))
        await until(lambda: len(b.dingtalk.sent) == 1)

        assert b.dingtalk.sent[0].text == "### Result\n\n**Bold** and gone  \nnext line\n\n- one\n- two"
        assert b.dingtalk.sent[0].title == "Result"


# --- HTTP mode ------------------------------------------------------------------------------------


async def test_http_signed_callback_is_answered(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        assert await b.post(b.dingtalk.robot_message("over http")) == 200
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == ["echo: over http"])


async def test_http_bad_or_stale_signatures_get_401_and_nothing_happens(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        message = b.dingtalk.robot_message("sneaky")
        assert await b.post(message, signed(secret="wrong-secret")) == 401
        assert await b.post(message, signed(age_s=2 * 3600)) == 401
        assert await b.post(message, {}) == 401
        await settled()

        assert b.dingtalk.sent == []
        assert fake_model.requests == []


async def test_http_redelivery_is_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http") as b:
        message = b.dingtalk.robot_message("only once", msg_id="msgHttp1")
        assert await b.post(message) == 200
        assert await b.post(message) == 200
        await until(lambda: len(b.dingtalk.sent) == 1)
        await settled()

        assert fake_model.user_texts() == ["only once"]


async def test_http_callback_the_store_cannot_take_gets_503(fake_model: FakeModel) -> None:
    async with bridge(fake_model, "http", store=_StoreDown()) as b:
        assert await b.post(b.dingtalk.robot_message("lost?")) == 503
        await until(lambda: b.dingtalk.in_conversation(PRIVATE) == [to_dingtalk(texts.TEMPORARILY_UNAVAILABLE)])


# --- start-up, check and configuration ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "http"])
async def test_refused_credentials_are_one_line_naming_the_keys(mode: str, fake_model: FakeModel) -> None:
    fake = FakeDingTalk()
    await fake.start()
    fake.refuse_credentials = True
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        adapter = DingTalkAdapter(settings(fake, mode), HttpServer("127.0.0.1", 0))
        with pytest.raises(AdapterStartupError) as raised:
            await adapter.run(make_engine(MemoryStore(), model))
        assert str(raised.value) == (
            "dingtalk: DingTalk refused the access token (invalidClientIdOrSecret); "
            "check adapters.dingtalk.client_id and adapters.dingtalk.client_secret"
        )
        assert not adapter.ready
    finally:
        await model.aclose()
        await fake.stop()


async def test_an_unreachable_api_is_one_clear_error() -> None:
    fake = FakeDingTalk()
    await fake.start()
    await fake.stop()
    adapter = DingTalkAdapter(settings(fake), HttpServer("127.0.0.1", 0))
    with pytest.raises(
        AdapterStartupError, match=r"^dingtalk: cannot reach http://127\.0\.0\.1:\d+ for the access token"
    ):
        await adapter.check()


async def test_check_reports_the_credentials_and_the_stream() -> None:
    fake = FakeDingTalk()
    await fake.start()
    try:
        adapter = DingTalkAdapter(settings(fake), HttpServer("127.0.0.1", 0))
        assert await adapter.check() == f"credentials accepted for app {CLIENT_ID} (stream mode)"
        assert fake.count("connections/open") == 1
    finally:
        await fake.stop()


def test_credentials_are_required_when_enabled() -> None:
    with pytest.raises(ValueError, match="client_secret"):
        DingTalkSettings(enabled=True, client_id="x")
    with pytest.raises(ValueError, match="client_id: required"):
        DingTalkSettings(enabled=True, client_secret="s")
    assert DingTalkSettings().mode == "stream"


async def test_enabled_dingtalk_in_http_mode_mounts_the_events_route() -> None:
    config = Config(adapters={"dingtalk": {"enabled": True, "client_id": "a", "client_secret": "s", "mode": "http"}})
    server = HttpServer("127.0.0.1", 0)
    adapters = enabled_adapters(config.adapters, server)
    assert [adapter.name for adapter in adapters] == ["dingtalk"]
    assert server.has_routes


def test_dingtalk_identities() -> None:
    assert identity_problem("dingtalk:manager4220") is None
    assert identity_problem("dingtalk:" + safe_id("cidAb+cd/ef==")) is None
    assert identity_problem("dingtalk:cidAb+cd/ef==") is not None  # the raw form breaks session keys
    assert identity_problem("dingtalk:a b") is not None


# --- secrets and the command line -----------------------------------------------------------------


async def test_no_secret_or_token_in_the_logs(fake_model: FakeModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with bridge(fake_model) as b:
        b.dingtalk.rate_limit("group", "429")
        messages = [
            b.dingtalk.robot_message(" logged?", group=True, webhook_valid_s=-10),
            b.dingtalk.robot_message("and the webhook"),
        ]
        for message in messages:
            await b.deliver(message)
        await until(lambda: len(b.dingtalk.sent) == 2, timeout=10)
        secrets = [CLIENT_SECRET, *b.dingtalk.tokens_issued]
        secrets += [message["sessionWebhook"].partition("session=")[2] for message in messages]

    assert "echo: logged?" in caplog.text or "handled platform=dingtalk" in caplog.text  # the logs were captured
    assert [secret for secret in secrets if secret in caplog.text] == []


async def test_chatbridge_check_reaches_dingtalk(tmp_path: Path, fake_model: FakeModel) -> None:
    fake = FakeDingTalk()
    await fake.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")} | {
        "CHATBRIDGE_MODEL__BASE_URL": fake_model.base_url,
        "CHATBRIDGE_CONTEXT__TOKENIZER": "estimate",
        "CHATBRIDGE_STORE__BACKEND": "memory",
        "CHATBRIDGE_ADAPTERS__DINGTALK__ENABLED": "true",
        "CHATBRIDGE_ADAPTERS__DINGTALK__CLIENT_ID": CLIENT_ID,
        "CHATBRIDGE_ADAPTERS__DINGTALK__CLIENT_SECRET": CLIENT_SECRET,
        "CHATBRIDGE_ADAPTERS__DINGTALK__API_BASE_URL": fake.base_url,
    }
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatbridge.cli",
            "check",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        await fake.stop()
    assert process.returncode == 0, out.decode() + err.decode()
    assert f"credentials accepted for app {CLIENT_ID} (stream mode)" in out.decode()
    assert CLIENT_SECRET not in out.decode() + err.decode()
