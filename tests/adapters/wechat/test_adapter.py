"""The WeChat Official Account adapter end to end: callbacks signed (and encrypted) as WeChat signs
them, posted over real HTTP to the bridge's server with WeChat's retries (tests/fakes/
weixin_callbacks.py), the real engine on a memory store, the fake model, and a fake of WeChat's
API for access tokens and customer-service messages (tests/fakes/wechat_api.py).

WeChat's clock runs fast here: each delivery waits 0.4 s instead of 5, so the three deliveries of
a message span 1.2 s. Assertions are on what the user receives (the passive reply WeChat took, the
customer-service messages), what the model was asked, and what the session holds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
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
from adapters.wechat.adapter import WeChatAdapter
from adapters.wechat.passive import PassiveTimings
from adapters.wechat.settings import WeChatSettings
from adapters.weixin.api import WeixinApi
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.fakes.wechat_api import APP_ID, APP_SECRET, FakeWeChatApi
from tests.fakes.weixin_callbacks import CallbackClient, Delivered, encrypt, sign, xml
from tests.kit.engine import make_engine, model_settings
from tests.kit.stores import stored_pairs
from tests.kit.waiting import settled, until

TOKEN = "callback-token-42"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OPENID = "oLVPpjqs9BhvzwPj5A-vTYAX3GLc"
OTHER = "oLVPpjqs9BhvzwPj5A-vTYAX3GLd"
ACCOUNT = "gh_0123456789ab"
TIMINGS = PassiveTimings(reply_within_s=0.3, wechat_waits_s=0.4, hold_margin_s=0.1)
SLOW_S = 0.55
"""An answer ready during the second delivery's window (0.4 s to 0.7 s)."""
SLOWER_S = 1.5
"""An answer later than the last delivery's window (it ends near 1.1 s)."""
_ids = itertools.count(10_000_000_000_000_000)


@dataclass
class Bridge:
    api: FakeWeChatApi
    model: FakeModel
    store: MemoryStore
    engine: Engine
    adapter: WeChatAdapter
    server: HttpServer
    client: CallbackClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}/wechat/callback"

    async def session(self, openid: str = OPENID, at_least: int = 0) -> list[tuple[str, str]]:
        return await stored_pairs(self.store, f"wechat:{openid}", at_least=at_least)


@asynccontextmanager
async def bridge(
    fake_model: FakeModel, *, adapter: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[Bridge]:
    api = FakeWeChatApi()
    await api.start()
    store = MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    engine = make_engine(store, model, **sections)
    server = HttpServer("127.0.0.1", 0)
    values = {"enabled": True, "app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN, "api_base_url": api.api_url}
    settings = WeChatSettings(**(values | (adapter or {})))
    wechat = WeChatAdapter(settings, server, timings=TIMINGS)
    await server.start()
    running = asyncio.create_task(wechat.run(engine))
    key = settings.encoding_aes_key.get_secret_value()
    url = f"http://127.0.0.1:{server.bound_port}/wechat/callback"
    client = CallbackClient(url, TOKEN, key, APP_ID if key else "", waits_s=TIMINGS.wechat_waits_s)
    try:
        await until(lambda: wechat.ready or running.done())
        if running.done():
            running.result()
        yield Bridge(api, fake_model, store, engine, wechat, server, client)
    finally:
        await stop_adapters({running: wechat}, engine, 5)
        if not running.cancelled():
            running.result()
        await server.stop()
        await model.aclose()
        await store.close()
        await api.stop()


def text_message(content: str, *, openid: str = OPENID, msg_id: int | None = None) -> dict[str, Any]:
    return {
        "ToUserName": ACCOUNT,
        "FromUserName": openid,
        "CreateTime": int(time.time()),
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id if msg_id is not None else next(_ids),
    }


def event(name: str, *, openid: str = OPENID, created: int | None = None) -> dict[str, Any]:
    return {
        "ToUserName": ACCOUNT,
        "FromUserName": openid,
        "CreateTime": created or int(time.time()),
        "MsgType": "event",
        "Event": name,
    }


RETRIES_SETTLED_S = 0.5
"""Long enough for anything that might still (wrongly) answer, retries included."""


def answered_passively(delivered: Delivered, text: str) -> bool:
    return delivered.text == text and delivered.reply is not None and delivered.reply["ToUserName"] == OPENID


# --- the server check -----------------------------------------------------------------------------


async def test_the_server_check_echoes_echostr_only_when_signed_with_the_token(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b, aiohttp.ClientSession() as session:
        query = b.client.query() | {"echostr": "4962812937216574023"}
        async with session.get(b.url, params=query) as response:
            assert (response.status, await response.text()) == (200, "4962812937216574023")
        forged = query | {"signature": sign("another-token", query["timestamp"], query["nonce"])}
        async with session.get(b.url, params=forged) as response:
            assert response.status == 401
            assert "4962812937216574023" not in await response.text()


# --- answers --------------------------------------------------------------------------------------


async def test_a_fast_answer_is_the_passive_reply(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("hello"))

        assert delivered.statuses == [200]
        assert answered_passively(delivered, "echo: hello")
        assert delivered.reply is not None and delivered.reply["FromUserName"] == ACCOUNT
        assert b.api.sent == []
        assert fake_model.user_texts() == ["hello"]
        assert await b.session(at_least=2) == [("user", "hello"), ("assistant", "echo: hello")]


async def test_safe_mode_decrypts_the_callback_and_encrypts_the_reply(fake_model: FakeModel) -> None:
    async with bridge(fake_model, adapter={"encoding_aes_key": AES_KEY}) as b:
        delivered = await b.client.deliver(text_message("你好, encrypted"))
        assert "Encrypt" in delivered.bodies[0] and "echo" not in delivered.bodies[0]
        assert answered_passively(delivered, "echo: 你好, encrypted")  # the client checked and decrypted it

        # In safe mode a plaintext callback is refused, even one signed with the right token.
        query, body = b.client.body(text_message("plaintext sneaks in"), encrypted=False)
        assert (await b.client.post(query, body))[0] == 401
        await settled(RETRIES_SETTLED_S)
        assert fake_model.user_texts() == ["你好, encrypted"]


async def test_markdown_arrives_as_plain_text(fake_model: FakeModel) -> None:
    fake_model.script(Reply("## Steps\n\n1. **Open** the `app`\n2. See [docs](https://example.com/d)"))
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("how?"))
        assert delivered.text == "Steps\n\n1. Open the app\n2. See docs (https://example.com/d)"


async def test_a_slow_answer_rides_on_a_retry_without_a_second_model_call(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = SLOW_S
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("take your time"))

        assert delivered.statuses == [None, 200]  # WeChat gave up on the first delivery, not the second
        assert answered_passively(delivered, "echo: take your time")
        assert len(fake_model.requests) == 1
        assert b.api.sent == []


async def test_a_slower_answer_goes_out_as_a_customer_service_message(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = SLOWER_S
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("think hard"))
        assert delivered.statuses == [None, None, 200]
        assert delivered.bodies == ["success"]  # WeChat stops retrying and shows nothing yet

        await until(lambda: b.api.to(OPENID) == ["echo: think hard"])
        assert len(fake_model.requests) == 1
        assert b.api.token_fetches == 1


async def test_without_customer_service_a_late_answer_comes_with_the_next_message(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = SLOWER_S
    async with bridge(fake_model, adapter={"async_reply": "on_next_message", "app_secret": ""}) as b:
        delivered = await b.client.deliver(text_message("think hard"))
        assert delivered.statuses == [None, None, 200]
        assert delivered.text == texts.ANSWER_WITH_NEXT_MESSAGE

        await until(lambda: len(fake_model.requests) == 1)
        await asyncio.sleep(SLOWER_S)  # the answer is done and waits for the user
        fake_model.default_delay_s = 0.0
        fetch = await b.client.deliver(text_message("ok?"))
        assert fetch.text == "echo: think hard"
        assert fake_model.user_texts() == ["think hard"]  # the fetching message is not a question

        after = await b.client.deliver(text_message("next question"))
        assert after.text == "echo: next question"
        assert b.api.sent == [] and b.api.token_fetches == 0


async def test_three_deliveries_of_one_message_are_answered_once(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        message = text_message("only once")
        first = await b.client.deliver(message)
        again = [await b.client.deliver(message) for _ in range(2)]  # as if the first reply was lost
        await settled(RETRIES_SETTLED_S)

        assert answered_passively(first, "echo: only once")
        assert [d.bodies for d in again] == [["success"], ["success"]]
        # Long after this process let go of the message, the store still knows it.
        await asyncio.sleep(TIMINGS.passive_for_s)
        assert (await b.client.deliver(message)).bodies == ["success"]
        assert fake_model.user_texts() == ["only once"]
        assert b.api.sent == []


async def test_retries_of_an_event_are_told_apart_by_sender_and_time(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        welcome = await b.client.deliver(event("subscribe", created=1700000000))
        repeat = await b.client.deliver(event("subscribe", created=1700000000))
        other = await b.client.deliver(event("subscribe", openid=OTHER, created=1700000000))

        assert welcome.text is not None and welcome.text.startswith(texts.WELCOME)
        assert "/help" in welcome.text and "/reset" in welcome.text
        assert repeat.bodies == ["success"]
        assert other.text == welcome.text
        assert fake_model.requests == []


async def test_other_events_get_no_answer(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        for name in ("unsubscribe", "CLICK", "VIEW"):
            assert (await b.client.deliver(event(name))).bodies == ["success"]
        assert fake_model.requests == [] and b.api.sent == []


async def test_voice_is_answered_from_wechats_recognition_and_media_gets_a_note(fake_model: FakeModel) -> None:
    async with bridge(fake_model) as b:
        voice = text_message("") | {"MsgType": "voice", "MediaId": "m1", "Format": "amr", "Recognition": "天气怎么样"}
        unrecognised = voice | {"MsgId": next(_ids), "Recognition": ""}
        image = text_message("") | {"MsgType": "image", "PicUrl": "http://mmbiz/x.jpg", "MediaId": "m2"}

        assert (await b.client.deliver(voice)).text == "echo: 天气怎么样"
        assert (await b.client.deliver(unrecognised)).text == texts.ONLY_TEXT_SUPPORTED
        assert (await b.client.deliver(image)).text == texts.ONLY_TEXT_SUPPORTED
        assert fake_model.user_texts() == ["天气怎么样"]


async def test_a_denied_user_never_reaches_the_model(fake_model: FakeModel) -> None:
    access = {"deny_users": [f"wechat:{OTHER}"], "on_denied": "reply"}
    async with bridge(fake_model, access=access) as b:
        told = await b.client.deliver(text_message("let me in", openid=OTHER))
        again = await b.client.deliver(text_message("please", openid=OTHER))
        await settled(RETRIES_SETTLED_S)

        assert told.text == texts.DENIED
        assert again.bodies == ["success"]
        assert fake_model.requests == []
        assert await b.session(OTHER) == []


# --- length ---------------------------------------------------------------------------------------


LONG = "\n\n".join("这是一个很长的回答。" * 20 + f" part {n}" for n in range(12))
"""About 7,300 bytes of UTF-8 in 2,500 characters: four WeChat messages, where a character count
would see two."""


async def test_a_long_answer_is_split_in_bytes_the_first_part_passive_the_rest_by_customer_service(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(LONG))
    async with bridge(fake_model) as b:
        delivered = await b.client.deliver(text_message("a long one"))
        assert delivered.text is not None
        await until(lambda: len(b.api.sent) >= 3)
        await settled(RETRIES_SETTLED_S)

        parts = [delivered.text, *b.api.to(OPENID)]
        assert all(len(part.encode()) <= 2048 for part in parts)
        assert len(parts) == 4
        assert "".join(parts).replace("\n", "") == LONG.replace("\n", "")


async def test_without_customer_service_each_next_message_fetches_the_next_part(fake_model: FakeModel) -> None:
    fake_model.script(Reply(LONG))
    async with bridge(fake_model, adapter={"async_reply": "on_next_message"}) as b:
        parts = [(await b.client.deliver(text_message("a long one"))).text]
        while parts[-1] is not None and parts[-1].endswith(texts.MORE_WITH_NEXT_MESSAGE):
            parts.append((await b.client.deliver(text_message("more"))).text)

        assert all(part is not None and len(part.encode()) <= 2048 for part in parts)
        shown = "".join(str(part).removesuffix(texts.MORE_WITH_NEXT_MESSAGE) for part in parts)
        assert shown.replace("\n", "") == LONG.replace("\n", "")
        assert fake_model.user_texts() == ["a long one"]


# --- the API --------------------------------------------------------------------------------------


async def test_an_expired_access_token_is_replaced_and_the_message_still_sent(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = SLOWER_S
    async with bridge(fake_model) as b:
        await b.client.deliver(text_message("first"))
        await until(lambda: b.api.to(OPENID) == ["echo: first"])
        b.api.expire_tokens()
        await b.client.deliver(text_message("second"))
        await until(lambda: b.api.to(OPENID) == ["echo: first", "echo: second"])

        assert b.api.token_fetches == 2


async def test_the_access_token_is_cached_and_refreshed_before_it_expires() -> None:
    api = FakeWeChatApi()
    await api.start()
    now = [1000.0]
    client = WeixinApi(
        api.api_url,
        "/cgi-bin/token",
        {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET},
        clock=lambda: now[0],
    )
    try:
        first = await client.access_token()
        now[0] += 7200 - 301  # the fake's tokens live 7,200 s; five minutes before, the cache still holds
        assert await client.access_token() == first
        now[0] += 2
        assert await client.access_token() != first
        assert api.token_fetches == 2
    finally:
        await client.aclose()
        await api.stop()


async def test_a_wrong_app_secret_stops_start_up_naming_the_key(fake_model: FakeModel) -> None:
    with pytest.raises(AdapterStartupError, match=r"^wechat: .*adapters\.wechat\.app_secret"):
        async with bridge(fake_model, adapter={"app_secret": "wrong-secret"}):
            pass


async def test_check_reports_the_credentials() -> None:
    api = FakeWeChatApi()
    await api.start()
    try:
        settings = WeChatSettings(
            enabled=True, app_id=APP_ID, app_secret=APP_SECRET, token=TOKEN, api_base_url=api.api_url
        )
        report = await WeChatAdapter(settings, HttpServer("127.0.0.1", 0)).check()
    finally:
        await api.stop()
    assert report == f"app {APP_ID}: access token fetched (plaintext mode, late answers: customer_service)"


# --- refused input --------------------------------------------------------------------------------


async def test_bad_callbacks_are_refused_and_nothing_is_processed(fake_model: FakeModel) -> None:
    async with bridge(fake_model, adapter={"encoding_aes_key": AES_KEY}) as b:
        good_query, good_body = b.client.body(text_message("forged"))
        bad_signature = good_query | {"msg_signature": "0" * 40}
        stale = CallbackClient(b.url, TOKEN, AES_KEY, APP_ID, timestamp_offset_s=-3600).body(text_message("old"))
        foreign = encrypt(AES_KEY, "wx0000000000000000", xml(text_message("for another account")))
        foreign_query = b.client.query(foreign, name="msg_signature")
        bomb = (
            '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
            "<xml><Encrypt>&b;</Encrypt></xml>"
        )
        external = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>'

        assert (await b.client.post(bad_signature, good_body))[0] == 401
        assert (await b.client.post(*stale))[0] == 401
        assert (await b.client.post(foreign_query, xml({"ToUserName": ACCOUNT, "Encrypt": foreign})))[0] == 401
        assert (await b.client.post(b.client.query(), "<xml><Encrypt>unclosed"))[0] == 400
        assert (await b.client.post(b.client.query(), bomb))[0] == 400
        assert (await b.client.post(b.client.query(), external))[0] == 400
        await settled(RETRIES_SETTLED_S)

        assert fake_model.requests == []
        assert b.api.sent == []


async def test_no_secret_reaches_the_logs(fake_model: FakeModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_model.default_delay_s = SLOWER_S
    async with bridge(fake_model, adapter={"encoding_aes_key": AES_KEY}) as b:
        await b.client.deliver(text_message("a secret-free answer"))
        await until(lambda: len(b.api.sent) == 1)
        tokens = {f"ACCESS_TOKEN_1_{'x' * 40}"}
        query, body = b.client.body(text_message("tampered"))
        await b.client.post(query | {"msg_signature": "f" * 40}, body)

    logged = caplog.text
    assert "/cgi-bin/message/custom/send" in logged  # httpx did log the request line
    for secret in (APP_SECRET, AES_KEY, TOKEN, *tokens):
        assert secret not in logged


def test_the_settings_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="app_secret: required .* customer_service"):
        WeChatSettings(enabled=True, app_id=APP_ID, token=TOKEN)
    with pytest.raises(ValueError, match="app_id: required"):
        WeChatSettings(enabled=True, app_secret=APP_SECRET, token=TOKEN)
    with pytest.raises(ValueError, match="encoding_aes_key"):
        WeChatSettings(enabled=True, app_id=APP_ID, app_secret=APP_SECRET, token=TOKEN, encoding_aes_key="short")
    assert WeChatSettings(enabled=True, app_id=APP_ID, token=TOKEN, async_reply="on_next_message").enabled


# --- the command line -----------------------------------------------------------------------------


def _cli_env(fake_model: FakeModel, api: FakeWeChatApi, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")}
    return env | {
        "CHATBRIDGE_MODEL__BASE_URL": fake_model.base_url,
        "CHATBRIDGE_CONTEXT__TOKENIZER": "estimate",
        "CHATBRIDGE_STORE__BACKEND": "memory",
        "CHATBRIDGE_SERVER__PORT": str(port),
        "CHATBRIDGE_LOG__LEVEL": "debug",
        "CHATBRIDGE_ADAPTERS__WECHAT__ENABLED": "true",
        "CHATBRIDGE_ADAPTERS__WECHAT__APP_ID": APP_ID,
        "CHATBRIDGE_ADAPTERS__WECHAT__APP_SECRET": APP_SECRET,
        "CHATBRIDGE_ADAPTERS__WECHAT__TOKEN": TOKEN,
        "CHATBRIDGE_ADAPTERS__WECHAT__ENCODING_AES_KEY": AES_KEY,
        "CHATBRIDGE_ADAPTERS__WECHAT__API_BASE_URL": api.api_url,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_chatbridge_run_answers_wechat_in_safe_mode_and_logs_no_secret(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    api = FakeWeChatApi()
    await api.start()
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatbridge.cli",
        "run",
        cwd=tmp_path,
        env=_cli_env(fake_model, api, port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        client = CallbackClient(f"http://127.0.0.1:{port}/wechat/callback", TOKEN, AES_KEY, APP_ID)
        deadline = time.monotonic() + 15
        delivered = Delivered()
        while delivered.reply is None and time.monotonic() < deadline:
            try:
                delivered = await client.deliver(text_message("from the cli", msg_id=next(_ids)))
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        assert delivered.text == "echo: from the cli"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        await api.stop()
    log_text = err.decode()
    assert process.returncode == 0, log_text
    for secret in (APP_SECRET, AES_KEY, TOKEN, "ACCESS_TOKEN_1_"):
        assert secret not in log_text


async def test_chatbridge_check_reports_the_wechat_credentials(tmp_path: Path, fake_model: FakeModel) -> None:
    api = FakeWeChatApi()
    await api.start()
    try:
        env = _cli_env(fake_model, api, _free_port())
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatbridge.cli", "check", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 20)
        env["CHATBRIDGE_ADAPTERS__WECHAT__APP_SECRET"] = "a-wrong-secret"
        refused = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatbridge.cli", "check", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        refused_out, refused_err = await asyncio.wait_for(refused.communicate(), 20)
    finally:
        await api.stop()
    assert process.returncode == 0, out.decode() + err.decode()
    assert f"app {APP_ID}: access token fetched (safe mode, late answers: customer_service)" in out.decode()
    assert refused.returncode != 0
    assert "adapters.wechat.app_secret" in refused_out.decode() + refused_err.decode()
    assert "a-wrong-secret" not in refused_out.decode() + refused_err.decode()
