"""The Feishu adapter end to end: lark-oapi's real event dispatcher (decryption, token and signature
checks) and its real client against a fake Feishu on 127.0.0.1 (tests/fakes/feishu_api.py), the
real engine on a memory store, the fake model server.

Assertions are on what lands in Feishu (the fake's cards after all patches), HTTP status codes,
what the model was asked and what the session holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.feishu.adapter import FeishuAdapter
from adapters.feishu.format import to_card_markdown
from adapters.feishu.settings import FeishuSettings
from adapters.kit import AdapterStartupError
from bots.openai_client import OpenAIChatModel
from chatbridge.config import ConfigError, load_config
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.store import Admission, StoreUnavailable, Verdict
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.fakes.feishu_api import (
    APP_SECRET,
    BOT_OPEN_ID,
    ENCRYPT_KEY,
    GROUP_CHAT,
    OTHER_OPEN_ID,
    P2P_CHAT,
    USER_OPEN_ID,
    VERIFICATION_TOKEN,
    FakeFeishu,
    encrypted,
    signed_headers,
)
from tests.kit.engine import make_engine, model_settings
from tests.kit.stores import stored_pairs
from tests.kit.waiting import settled, until


@dataclass
class Bridge:
    feishu: FakeFeishu
    store: MemoryStore
    engine: Engine
    adapter: FeishuAdapter
    server: HttpServer
    encrypt: bool

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}/feishu/events"

    async def post(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Deliver ``payload`` as Feishu would with this bridge's settings: encrypted and signed when
        it has an encrypt key, plain otherwise (unless ``headers`` says what to send)."""
        body = json.dumps(encrypted(payload) if self.encrypt else payload).encode()
        if headers is None:
            headers = signed_headers(body) if self.encrypt else {"Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.events_url, data=body, headers=headers) as response,
        ):
            text = await response.text()
            return response.status, json.loads(text) if text.startswith("{") else text

    async def deliver(self, payload: dict[str, Any]) -> None:
        status, _ = await self.post(payload)
        assert status == 200

    async def session(self, key: str, at_least: int = 0) -> list[tuple[str, str]]:
        return await stored_pairs(self.store, key, at_least=at_least)


def settings(fake: FakeFeishu, *, encrypt: bool = False, **overrides: Any) -> FeishuSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "app_id": fake.app_id,
        "app_secret": APP_SECRET,
        "verification_token": VERIFICATION_TOKEN,
        "encrypt_key": ENCRYPT_KEY if encrypt else "",
        "api_base_url": fake.base_url,
    }
    return FeishuSettings(**(values | overrides))


@asynccontextmanager
async def bridge(
    fake_model: FakeModel,
    *,
    encrypt: bool = False,
    feishu: FakeFeishu | None = None,
    store: MemoryStore | None = None,
    stream: bool = False,
    **sections: Any,
) -> AsyncIterator[Bridge]:
    fake = feishu or FakeFeishu()
    await fake.start()
    store = store or MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url, stream=stream))
    engine = make_engine(store, model, **sections)
    server = HttpServer("127.0.0.1", 0)
    adapter = FeishuAdapter(settings(fake, encrypt=encrypt), server)
    await server.start()
    running = asyncio.create_task(adapter.run(engine))
    try:
        await until(lambda: adapter.ready or running.done())
        if running.done():
            running.result()
        yield Bridge(fake, store, engine, adapter, server, encrypt)
    finally:
        await stop_adapters({running: adapter}, engine, 5)
        if not running.cancelled():
            running.result()
        await server.stop()
        await model.aclose()
        await store.close()
        await fake.stop()


BOT_MENTION = ("@_user_1", BOT_OPEN_ID, "chatbridge")


# --- conversations and triggers -------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True])
async def test_a_private_message_is_answered_with_a_card_reply(encrypt: bool, fake_model: FakeModel) -> None:
    async with bridge(fake_model, encrypt=encrypt) as b:
        event = b.feishu.message_event("hello there")
        await b.deliver(event)
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == ["echo: hello there"])

        assert b.feishu.messages[0].reply_to == event["event"]["message"]["message_id"]
        assert await b.session(f"feishu:{USER_OPEN_ID}", at_least=2) == [
            ("user", "hello there"),
            ("assistant", "echo: hello there"),
        ]


async def test_a_group_message_mentioning_the_bot_is_answered_with_the_placeholder_gone(
    fake_model: FakeModel,
) -> None:
    async with bridge(fake_model) as b:
        mentions = [BOT_MENTION, ("@_user_2", OTHER_OPEN_ID, "Bea")]
        await b.deliver(b.feishu.message_event("@_user_1 ask @_user_2 about it", group=True, mentions=mentions))
        # Feishu's events carry no display name, so the speaker is told by identity.
        speaker = f"[feishu:{USER_OPEN_ID}]"
        await until(lambda: b.feishu.in_chat(GROUP_CHAT) == [f"echo: {speaker} ask @Bea about it"])

        assert fake_model.user_texts() == [f"{speaker} ask @Bea about it"]
        assert await b.session(f"feishu:{GROUP_CHAT}", at_least=2) != []


async def test_group_messages_without_the_bot_in_mentions_are_not_answered(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("@chatbridge typed by hand", group=True))
        await b.deliver(b.feishu.message_event("@_user_1 hi", group=True, mentions=[("@_user_1", OTHER_OPEN_ID, "B")]))
        await settled()

        assert b.feishu.messages == []
        assert fake_model.requests == []


async def test_bots_and_the_bridge_itself_are_ignored(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("from an app", sender_type="app", sender=OTHER_OPEN_ID))
        await b.deliver(b.feishu.message_event("from myself", sender=BOT_OPEN_ID))
        await settled()

        assert b.feishu.messages == []
        assert fake_model.requests == []


async def test_a_denied_user_never_reaches_the_model(fake_model: FakeModel) -> None:
    async with bridge(fake_model, access={"deny_users": [f"feishu:{USER_OPEN_ID}"], "on_denied": "reply"}) as b:
        await b.deliver(b.feishu.message_event("let me in"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == [to_card_markdown(texts.DENIED)])
        await settled()

        assert fake_model.requests == []


async def test_commands_are_text(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("/admin stats"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == [to_card_markdown(texts.ADMIN_ONLY)])
        assert fake_model.requests == []


async def test_an_image_in_a_private_chat_gets_the_only_text_note(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("", message_type="image"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == [to_card_markdown(texts.ONLY_TEXT_SUPPORTED)])
        assert fake_model.requests == []


# --- verification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True])
async def test_the_url_verification_challenge_is_answered(encrypt: bool, fake_model: FakeModel) -> None:
    async with bridge(fake_model, encrypt=encrypt) as b:
        challenge = {"challenge": "ch-123", "token": VERIFICATION_TOKEN, "type": "url_verification"}
        assert await b.post(challenge) == (200, {"challenge": "ch-123"})
        wrong = challenge | {"token": "not-the-token"}
        assert (await b.post(wrong))[0] == 401


async def test_a_wrong_verification_token_gets_401_and_nothing_happens(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        status, _ = await b.post(b.feishu.message_event("sneaky", token="forged"))
        await settled()

        assert status == 401
        assert b.feishu.messages == [] and fake_model.requests == []


async def test_encrypted_events_need_a_valid_signature(fake_model: FakeModel) -> None:
    async with bridge(fake_model, encrypt=True) as b:
        event = b.feishu.message_event("sneaky")
        body = json.dumps(encrypted(event)).encode()
        assert (await b.post(event, signed_headers(body, key="another-key")))[0] == 401
        assert (await b.post(event, {"Content-Type": "application/json"}))[0] == 401
        # the right signature over a body encrypted with another key: not readable, so not taken
        foreign = json.dumps(encrypted(event, key="another-key")).encode()
        async with (
            aiohttp.ClientSession() as session,
            session.post(b.events_url, data=foreign, headers=signed_headers(foreign)) as response,
        ):
            assert response.status in (400, 401)
        await settled()

        assert b.feishu.messages == [] and fake_model.requests == []


# --- acknowledgement and redeliveries -------------------------------------------------------------


async def test_a_retried_event_is_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model, encrypt=True) as b:
        event = b.feishu.message_event("once please")
        await b.deliver(event)
        await b.deliver(event)  # Feishu retries with the same event_id and message_id
        await until(lambda: len(b.feishu.messages) == 1)
        await settled()

        assert b.feishu.in_chat(P2P_CHAT) == ["echo: once please"]
        assert fake_model.user_texts() == ["once please"]


async def test_the_event_is_acknowledged_before_a_slow_model_answers(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 1.0
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("slow one"))
        answered_before_the_ack = b.feishu.in_chat(P2P_CHAT)
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == ["echo: slow one"], timeout=8)

        assert answered_before_the_ack == []


class _StoreDown(MemoryStore):
    down = True

    async def admit(self, admission: Admission) -> Verdict:
        if self.down:
            raise StoreUnavailable("connection refused")
        return await super().admit(admission)


async def test_an_event_the_store_cannot_take_gets_500_and_its_retry_is_answered(fake_model: FakeModel) -> None:
    store = _StoreDown()
    async with bridge(fake_model, store=store) as b:
        event = b.feishu.message_event("are you there?")
        assert (await b.post(event))[0] == 500
        await settled()
        assert b.feishu.messages == []  # nobody is asked to resend: Feishu retries

        store.down = False
        await b.deliver(event)
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == ["echo: are you there?"])


# --- replies --------------------------------------------------------------------------------------


async def test_a_streamed_answer_patches_its_card_and_survives_a_429(fake_model: FakeModel) -> None:
    answer = " ".join(f"w{i}" for i in range(150))
    fake_model.script(Reply(text=answer, chunk_chars=8, chunk_delay_s=0.06))  # about 4.5 s of streaming
    async with bridge(fake_model, stream=True) as b:
        b.feishu.rate_limit("patch")
        await b.deliver(b.feishu.message_event("stream it"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == [answer], timeout=15)

        assert b.feishu.count("reply") == 1
        assert b.feishu.messages[0].edits >= 2
        assert b.feishu.count("patch") >= 3  # the refused one, a streamed one, the final one


async def test_a_long_answer_is_split_into_several_cards(fake_model: FakeModel) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    fake_model.script(Reply(text=long_text))
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("write a lot"))
        await until(lambda: len(b.feishu.messages) == 3, timeout=15)

        shown = b.feishu.in_chat(P2P_CHAT)
        assert all(len(text) <= 4000 for text in shown)
        assert "\n\n".join(shown) == long_text


async def test_markdown_arrives_as_card_markdown(fake_model: FakeModel) -> None:
    fake_model.script(Reply(text="## Result\n**Bold** <at id=all></at> ~~old~~\n* one\n* two"))
    async with bridge(fake_model) as b:
        await b.deliver(b.feishu.message_event("format"))
        await until(lambda: len(b.feishu.messages) == 1)

        assert b.feishu.messages[0].markdown == (
            "**Result**\n**Bold** &lt;at id=all&gt;&lt;/at&gt; ~~old~~\n- one\n- two"
        )


async def test_a_rate_limited_reply_is_waited_out(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        b.feishu.rate_limit("reply")
        await b.deliver(b.feishu.message_event("busy?"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == ["echo: busy?"], timeout=8)
        assert b.feishu.count("reply") == 2


async def test_a_refused_tenant_token_is_fetched_again(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        b.feishu.revoke_tokens()
        await b.deliver(b.feishu.message_event("new token please"))
        await until(lambda: b.feishu.in_chat(P2P_CHAT) == ["echo: new token please"])
        assert len(b.feishu.tokens_issued) == 2


# --- start-up, check, configuration ---------------------------------------------------------------


async def test_refused_credentials_are_one_line_naming_the_keys(fake_model: FakeModel) -> None:
    fake = FakeFeishu()
    await fake.start()
    fake.refuse_credentials = True
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        adapter = FeishuAdapter(settings(fake), HttpServer("127.0.0.1", 0))
        with pytest.raises(AdapterStartupError) as raised:
            await adapter.run(make_engine(MemoryStore(), model))
        assert str(raised.value) == (
            "feishu: Feishu refused the tenant access token (code 10014); "
            "check adapters.feishu.app_id and adapters.feishu.app_secret"
        )
        assert APP_SECRET not in str(raised.value)
    finally:
        await model.aclose()
        await fake.stop()


async def test_check_names_the_bot() -> None:
    fake = FakeFeishu()
    await fake.start()
    try:
        adapter = FeishuAdapter(settings(fake), HttpServer("127.0.0.1", 0))
        assert await adapter.check() == f"chatbridge ({BOT_OPEN_ID}, http mode)"
    finally:
        await fake.stop()


def test_websocket_mode_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "adapters:\n  feishu: {enabled: true, app_id: cli_1, app_secret: s, verification_token: t, mode: websocket}\n"
    )
    with pytest.raises(ConfigError, match="adapters.feishu.mode"):
        load_config(path)


def test_credentials_are_required_when_enabled() -> None:
    with pytest.raises(ValueError, match="verification_token"):
        FeishuSettings(enabled=True, app_id="cli_1", app_secret="s")
    with pytest.raises(ValueError, match="app_id: required"):
        FeishuSettings(enabled=True, app_secret="s", verification_token="t")


async def test_no_secret_or_token_in_the_logs(fake_model: FakeModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with bridge(fake_model, encrypt=True) as b:
        b.feishu.rate_limit("reply")
        await b.deliver(b.feishu.message_event("logged?"))
        await b.post(b.feishu.message_event("forged", token="forged"))
        await until(lambda: len(b.feishu.messages) == 1, timeout=8)
        secrets = [APP_SECRET, VERIFICATION_TOKEN, ENCRYPT_KEY, *b.feishu.tokens_issued]

    assert "handled platform=feishu" in caplog.text  # the logs were captured
    assert [secret for secret in secrets if secret in caplog.text] == []


async def test_chatbridge_check_reaches_feishu(tmp_path: Path, fake_model: FakeModel) -> None:
    fake = FakeFeishu()
    await fake.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")} | {
        "CHATBRIDGE_MODEL__BASE_URL": fake_model.base_url,
        "CHATBRIDGE_CONTEXT__TOKENIZER": "estimate",
        "CHATBRIDGE_STORE__BACKEND": "memory",
        "CHATBRIDGE_ADAPTERS__FEISHU__ENABLED": "true",
        "CHATBRIDGE_ADAPTERS__FEISHU__APP_ID": fake.app_id,
        "CHATBRIDGE_ADAPTERS__FEISHU__APP_SECRET": APP_SECRET,
        "CHATBRIDGE_ADAPTERS__FEISHU__VERIFICATION_TOKEN": VERIFICATION_TOKEN,
        "CHATBRIDGE_ADAPTERS__FEISHU__API_BASE_URL": fake.base_url,
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
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await fake.stop()
    assert process.returncode == 0, out.decode() + err.decode()
    assert f"chatbridge ({BOT_OPEN_ID}, http mode)" in out.decode()
    assert APP_SECRET not in out.decode() + err.decode()
