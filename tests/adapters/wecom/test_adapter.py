"""The WeCom application adapter end to end: callbacks encrypted and signed as WeCom does, posted
over real HTTP to the bridge's server (tests/fakes/weixin_callbacks.py), the real engine on a
memory store, the fake model, and a fake of WeCom's API (tests/fakes/wecom_api.py).

Assertions are on what the member receives (``message/send`` calls), what the model was asked and
what the session holds.
"""

from __future__ import annotations

import asyncio
import itertools
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

from adapters.kit import AdapterStartupError
from adapters.wecom.adapter import WeComAdapter
from adapters.wecom.format import to_wecom_markdown
from adapters.wecom.settings import WeComSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.fakes.wecom_api import AGENT_ID, AGENT_NAME, CORP_ID, CORP_SECRET, FakeWeComApi
from tests.fakes.weixin_callbacks import CallbackClient, encrypt, xml
from tests.kit.engine import make_engine, model_settings
from tests.kit.stores import stored_pairs
from tests.kit.waiting import settled, until

TOKEN = "wecom-callback-token"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
USER = "zhangsan"
_ids = itertools.count(7_000_000_000_000_000)


@dataclass
class Bridge:
    api: FakeWeComApi
    model: FakeModel
    store: MemoryStore
    engine: Engine
    adapter: WeComAdapter
    server: HttpServer
    client: CallbackClient

    async def session(self, user: str = USER, at_least: int = 0) -> list[tuple[str, str]]:
        return await stored_pairs(self.store, f"wecom:{user}", at_least=at_least)


def settings_for(api: FakeWeComApi, **overrides: Any) -> WeComSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "corp_id": CORP_ID,
        "corp_secret": CORP_SECRET,
        "agent_id": AGENT_ID,
        "token": TOKEN,
        "encoding_aes_key": AES_KEY,
        "api_base_url": api.api_url,
    }
    return WeComSettings(**(values | overrides))


@asynccontextmanager
async def bridge(
    fake_model: FakeModel, *, adapter: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[Bridge]:
    api = FakeWeComApi()
    await api.start()
    store = MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    engine = make_engine(store, model, **sections)
    server = HttpServer("127.0.0.1", 0)
    wecom = WeComAdapter(settings_for(api, **(adapter or {})), server)
    await server.start()
    running = asyncio.create_task(wecom.run(engine))
    url = f"http://127.0.0.1:{server.bound_port}/wecom/callback"
    try:
        await until(lambda: wecom.ready or running.done())
        if running.done():
            running.result()
        yield Bridge(api, fake_model, store, engine, wecom, server, CallbackClient(url, TOKEN, AES_KEY, CORP_ID))
    finally:
        await stop_adapters({running: wecom}, engine, 5)
        if not running.cancelled():
            running.result()
        await server.stop()
        await model.aclose()
        await store.close()
        await api.stop()


def text_message(content: str, *, user: str = USER, msg_id: int | None = None, agent: int = AGENT_ID) -> dict[str, Any]:
    return {
        "ToUserName": CORP_ID,
        "FromUserName": user,
        "CreateTime": int(time.time()),
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id if msg_id is not None else next(_ids),
        "AgentID": agent,
    }


async def test_the_url_check_answers_the_decrypted_echostr(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b, aiohttp.ClientSession() as session:
        echo = encrypt(AES_KEY, CORP_ID, "1288432023552776189")
        query = b.client.query(echo, name="msg_signature") | {"echostr": echo}
        async with session.get(b.client.url, params=query) as response:
            assert (response.status, await response.text()) == (200, "1288432023552776189")
        async with session.get(b.client.url, params=query | {"msg_signature": "0" * 40}) as response:
            assert response.status == 401


async def test_a_message_is_acked_at_once_and_answered_through_message_send(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 0.5
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("你好"))
        answered_before_the_ack = list(b.api.sent)
        await until(lambda: b.api.to(USER) == ["echo: 你好"])

        assert delivered.statuses == [200] and delivered.bodies == [""]
        assert answered_before_the_ack == []  # acknowledged before the model had answered
        assert b.api.sent[0].msgtype == "markdown"
        assert await b.session(at_least=2) == [("user", "你好"), ("assistant", "echo: 你好")]


async def test_redeliveries_of_one_message_are_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        message = text_message("only once")
        for _ in range(3):
            assert (await b.client.deliver(message)).statuses == [200]
        await until(lambda: len(b.api.sent) >= 1)
        await settled()

        assert b.api.to(USER) == ["echo: only once"]
        assert fake_model.user_texts() == ["only once"]


async def test_markdown_is_sent_in_the_subset_wecom_renders(fake_model: FakeModel) -> None:
    fake_model.script(Reply("# Plan\n\n*Soon*: **ship** it, see [docs](https://example.com)\n\n```\nmake\n```"))
    async with bridge(fake_model) as b:
        await b.client.deliver(text_message("plan?"))
        await until(lambda: len(b.api.sent) == 1)
        assert b.api.to(USER) == ["**Plan**\n\nSoon: **ship** it, see [docs](https://example.com)\n\n`make`"]


async def test_a_long_answer_is_split_under_wecoms_byte_limit(fake_model: FakeModel) -> None:
    long = "\n\n".join("企业微信的长回答。" * 30 + f" part {n}" for n in range(8))
    fake_model.script(Reply(long))
    async with bridge(fake_model) as b:
        await b.client.deliver(text_message("a long one"))
        await until(lambda: len(b.api.sent) >= 4)
        await settled()

        parts = b.api.to(USER)
        assert all(len(part.encode()) <= 2048 for part in parts)
        assert len(parts) == 4  # about 6,600 bytes in 2,200 characters
        assert "".join(parts).replace("\n", "") == long.replace("\n", "")


async def test_an_expired_access_token_is_replaced(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        await b.client.deliver(text_message("first"))
        await until(lambda: b.api.to(USER) == ["echo: first"])
        b.api.expire_tokens()
        await b.client.deliver(text_message("second"))
        await until(lambda: b.api.to(USER) == ["echo: first", "echo: second"])
        assert b.api.token_fetches == 2


async def test_other_messages_get_a_note_and_events_nothing(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        image = text_message("") | {"MsgType": "image", "PicUrl": "http://p/x.jpg", "MediaId": "m1"}
        enter = {"ToUserName": CORP_ID, "FromUserName": USER, "CreateTime": 1, "MsgType": "event"}
        await b.client.deliver(image)
        await b.client.deliver(enter | {"Event": "enter_agent", "AgentID": AGENT_ID})
        await until(lambda: len(b.api.sent) == 1)
        await settled()

        assert b.api.to(USER) == [to_wecom_markdown(texts.ONLY_TEXT_SUPPORTED)]
        assert fake_model.requests == []


async def test_a_callback_for_another_application_is_ignored(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        assert (await b.client.deliver(text_message("not for us", agent=AGENT_ID + 1))).statuses == [200]
        await settled()
        assert b.api.sent == [] and fake_model.requests == []


async def test_a_denied_member_never_reaches_the_model(fake_model: FakeModel) -> None:
    async with bridge(fake_model, access={"deny_users": ["wecom:lisi"], "on_denied": "reply"}) as b:
        await b.client.deliver(text_message("let me in", user="lisi"))
        await until(lambda: b.api.to("lisi") == [to_wecom_markdown(texts.DENIED)])
        assert fake_model.requests == []


async def test_bad_callbacks_are_refused_and_nothing_is_processed(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        query, body = b.client.body(text_message("forged"))
        foreign = encrypt(AES_KEY, "ww0000000000000000", xml(text_message("for another corp")))
        plain_query, plain_body = b.client.body(text_message("plaintext"), encrypted=False)

        assert (await b.client.post(query | {"msg_signature": "0" * 40}, body))[0] == 401
        assert (await b.client.post(b.client.query(foreign, name="msg_signature"), xml({"Encrypt": foreign})))[0] == 401
        assert (await b.client.post(plain_query, plain_body))[0] == 401
        assert (await b.client.post(b.client.query(), "<xml><Encrypt>"))[0] == 400
        await settled()
        assert b.api.sent == [] and fake_model.requests == []


async def test_no_secret_reaches_the_logs(fake_model: FakeModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with bridge(fake_model) as b:
        await b.client.deliver(text_message("hello"))
        await until(lambda: len(b.api.sent) == 1)
    assert "/cgi-bin/message/send" in caplog.text
    for secret in (CORP_SECRET, AES_KEY, TOKEN, "WECOM_TOKEN_1_"):
        assert secret not in caplog.text


async def test_check_reports_the_application_and_a_wrong_secret_names_the_key() -> None:
    api = FakeWeComApi()
    await api.start()
    try:
        report = await WeComAdapter(settings_for(api), HttpServer("127.0.0.1", 0)).check()
        with pytest.raises(AdapterStartupError, match=r"^wecom: .*adapters\.wecom\.corp_secret"):
            await WeComAdapter(settings_for(api, corp_secret="wrong"), HttpServer("127.0.0.1", 0)).check()
        with pytest.raises(AdapterStartupError, match=r"adapters\.wecom\.agent_id"):
            await WeComAdapter(settings_for(api, agent_id=7), HttpServer("127.0.0.1", 0)).check()
    finally:
        await api.stop()
    assert report == f"application {AGENT_NAME} (agent {AGENT_ID}) of corp {CORP_ID}: access token fetched"


def test_the_settings_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="encoding_aes_key"):
        WeComSettings(enabled=True, corp_id=CORP_ID, corp_secret=CORP_SECRET, agent_id=AGENT_ID, token=TOKEN)
    with pytest.raises(ValueError, match="agent_id: required"):
        WeComSettings(enabled=True, corp_id=CORP_ID, corp_secret=CORP_SECRET, token=TOKEN, encoding_aes_key=AES_KEY)
    with pytest.raises(ValueError, match="corp_id: required"):
        WeComSettings(enabled=True, corp_secret=CORP_SECRET, agent_id=1, token=TOKEN, encoding_aes_key=AES_KEY)


async def test_chatbridge_check_reports_the_wecom_application(tmp_path: Path, fake_model: FakeModel) -> None:
    api = FakeWeComApi()
    await api.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")} | {
        "CHATBRIDGE_MODEL__BASE_URL": fake_model.base_url,
        "CHATBRIDGE_CONTEXT__TOKENIZER": "estimate",
        "CHATBRIDGE_STORE__BACKEND": "memory",
        "CHATBRIDGE_ADAPTERS__WECOM__ENABLED": "true",
        "CHATBRIDGE_ADAPTERS__WECOM__CORP_ID": CORP_ID,
        "CHATBRIDGE_ADAPTERS__WECOM__CORP_SECRET": CORP_SECRET,
        "CHATBRIDGE_ADAPTERS__WECOM__AGENT_ID": str(AGENT_ID),
        "CHATBRIDGE_ADAPTERS__WECOM__TOKEN": TOKEN,
        "CHATBRIDGE_ADAPTERS__WECOM__ENCODING_AES_KEY": AES_KEY,
        "CHATBRIDGE_ADAPTERS__WECOM__API_BASE_URL": api.api_url,
    }
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatbridge.cli", "check", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        await api.stop()
    assert process.returncode == 0, out.decode() + err.decode()
    assert f"application {AGENT_NAME} (agent {AGENT_ID}) of corp {CORP_ID}: access token fetched" in out.decode()
    assert CORP_SECRET not in out.decode() + err.decode()
