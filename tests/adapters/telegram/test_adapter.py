"""The Telegram adapter end to end: the real python-telegram-bot against a local fake Bot API, the
real engine on a memory store, and the fake model server.

Assertions are on what a Telegram user would see (``FakeTelegram.sent``), what reached the model,
and what the store kept.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.kit import AdapterStartupError
from adapters.telegram.adapter import (
    SECRET_HEADER,
    WEBHOOK_PATH,
    TelegramAdapter,
    TelegramLimits,
)
from adapters.telegram.settings import TelegramSettings
from bots.model import ModelCatalog
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from chatbridge.config import Config, ConfigError, load_config
from chatbridge.http_server import HttpServer
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import stop_adapters
from core import texts
from core.channel import PlatformLimits
from core.engine import Engine
from core.splitter import split_message
from core.store import Admission, StoreUnavailable, Verdict
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Reply, _usage
from tests.fakes.telegram_api import (
    BOT_ID,
    BOT_USERNAME,
    TOKEN,
    FakeTelegram,
    entity,
)
from tests.kit.engine import make_engine, model_settings

SECRET = "s3cret-Token_1"
GROUP = -1001
FAST = TelegramLimits(private=PlatformLimits(4000, 0.02), group=PlatformLimits(4000, 0.02))


@dataclass
class Bridge:
    adapter: TelegramAdapter
    engine: Engine
    server: HttpServer
    task: asyncio.Task[None]

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}{WEBHOOK_PATH}"


Start = Callable[..., Awaitable[Bridge]]


def settings(telegram: FakeTelegram, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = {"enabled": True, "token": TOKEN, "base_url": telegram.base_url}
    values.update(overrides)
    return TelegramSettings(**values)


@pytest_asyncio.fixture
async def bridge(telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel) -> AsyncIterator[Start]:
    """Start the adapter (polling unless ``mode="webhook"``) and wait until it listens."""
    running: list[Bridge] = []

    async def start(
        *,
        mode: str = "polling",
        platform_limits: TelegramLimits = FAST,
        models: ModelCatalog | None = None,
        **sections: Any,
    ) -> Bridge:
        """``models``: several models instead of the one fake model (as ``default``); ``sections``
        are the engine's (``limits`` is the engine's section, ``platform_limits`` Telegram's)."""
        engine = make_engine(store, models or model, **sections)
        server = HttpServer("127.0.0.1", 0)
        webhook = {"webhook_url": "https://bridge.example/telegram/webhook", "webhook_secret": SECRET}
        config = settings(telegram, mode=mode, **(webhook if mode == "webhook" else {}))
        adapter = TelegramAdapter(config, server, limits=platform_limits, poll_timeout_s=1.0)
        if server.has_routes:
            await server.start()
        started = Bridge(adapter, engine, server, asyncio.create_task(adapter.run(engine)))
        running.append(started)
        listening = "setWebhook" if mode == "webhook" else "getUpdates"
        await telegram.wait_for(lambda: bool(telegram.calls_of(listening)) or started.task.done())
        return started

    yield start
    for started in running:
        await stop_adapters({started.task: started.adapter}, started.engine, 2)
        if not started.task.cancelled():
            started.task.result()
        await started.server.stop()


async def expect(telegram: FakeTelegram, chat: int, *shown: str, timeout: float = 3.0) -> None:
    """Wait until the chat shows exactly these messages (streamed ones edited to their final text)."""
    try:
        await telegram.wait_for(lambda: telegram.texts(chat) == list(shown), timeout)
    except TimeoutError:
        assert telegram.texts(chat) == list(shown)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """For conditions that no Bot API call signals (what the model server received)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def stored(store: MemoryStore, key: str) -> list[str]:
    state = await store.load_session(key, 1000)
    return [turn.content for turn in state.turns] if state else []


async def eventually_stored(store: MemoryStore, key: str, *turns: str, timeout: float = 2.0) -> None:
    """The reply is shown before the turn is committed, so wait for the commit too."""
    deadline = time.monotonic() + timeout
    while await stored(store, key) != list(turns) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert await stored(store, key) == list(turns)


def mention(text: str) -> dict[str, Any]:
    return {"text": text, "entities": [entity(text, f"@{BOT_USERNAME}")]}


def in_group(**fields: Any) -> dict[str, Any]:
    return {"chat": GROUP, "chat_type": "supergroup", **fields}


# --- private chats ------------------------------------------------------------------------------


async def test_private_chat_holds_a_conversation(bridge: Start, telegram: FakeTelegram, fake_model: FakeModel) -> None:
    await bridge()
    telegram.user_message("hello there")
    await expect(telegram, 1, "echo: hello there")
    telegram.user_message("and again")
    await expect(telegram, 1, "echo: hello there", "echo: and again")

    sent = [(m["role"], m["content"]) for m in fake_model.requests[-1]["messages"]]
    assert sent[1:] == [("user", "hello there"), ("assistant", "echo: hello there"), ("user", "and again")]
    assert all(message.reply_to is None and message.parse_mode == "HTML" for message in telegram.sent)
    assert telegram.calls_of("sendChatAction")[0]["action"] == "typing"


async def test_start_registers_the_menu_and_polls_without_a_webhook(bridge: Start, telegram: FakeTelegram) -> None:
    await bridge(bot={"reset_commands": ["/reset", "/new", "/forget", "!clear"]})
    menu = telegram.calls_of("setMyCommands")[0]["commands"]
    assert [command["command"] for command in menu] == [
        "reset",
        "new",
        "forget",
        "help",
        "id",
        "model",
        "persona",
        "instructions",
        "usage",
    ]
    assert telegram.calls_of("deleteWebhook")
    # Messages, and the presses of a tool confirmation's buttons.
    assert telegram.calls_of("getUpdates")[0]["allowed_updates"] == ["message", "callback_query"]


async def test_start_command_shows_help(bridge: Start, telegram: FakeTelegram) -> None:
    await bridge()
    telegram.user_message("/start")
    await telegram.wait_for(lambda: telegram.texts(1)[:1] != [] and telegram.texts(1)[0].startswith("Commands:"))


async def test_markdown_is_sent_as_telegram_formatting(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    fake_model.script(Reply(text="**Bold** and `x < y`"))
    await bridge()
    telegram.user_message("format")
    await expect(telegram, 1, "Bold and x < y")
    assert telegram.sent[0].parse_mode == "HTML"


async def test_rejected_formatting_falls_back_to_plain_text(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    telegram.reject_html = True
    fake_model.script(Reply(text="**Bold** and `x < y`"))
    await bridge()
    telegram.user_message("format")
    await expect(telegram, 1, "**Bold** and `x < y`")
    assert telegram.sent[0].parse_mode is None


STICKER = {"sticker": {"file_id": "s", "file_unique_id": "s", "width": 512, "height": 512, "type": "regular",
                       "is_animated": False, "is_video": False}}  # fmt: skip


async def test_what_is_neither_text_nor_a_file_gets_a_note_in_private_once_per_album_and_nothing_in_groups(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    telegram.user_message(None, media=STICKER, **in_group())
    telegram.user_message(None, media=STICKER, media_group_id="album")
    telegram.user_message(None, media=STICKER, media_group_id="album")
    await expect(telegram, 1, texts.ONLY_TEXT_SUPPORTED)
    telegram.user_message("@ChatBridgeBot ping", **in_group(entities=[entity("@ChatBridgeBot ping", "@ChatBridgeBot")]))
    await expect(telegram, GROUP, "echo: [User1] ping")
    assert telegram.texts(1) == [texts.ONLY_TEXT_SUPPORTED]
    assert fake_model.user_texts() == ["[User1] ping"]


async def test_messages_from_bots_are_ignored(bridge: Start, telegram: FakeTelegram, fake_model: FakeModel) -> None:
    await bridge()
    telegram.user_message("I am a bot", user=7, is_bot=True)
    telegram.user_message("I am not", user=8)
    await expect(telegram, 8, "echo: I am not")
    assert telegram.texts(7) == []
    assert fake_model.user_texts() == ["I am not"]


async def test_edited_messages_and_channel_posts_are_ignored(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    telegram.user_message("edited question", kind="edited_message")
    telegram.user_message("a post", chat=-2002, chat_type="channel", kind="channel_post")
    telegram.user_message("a real question")
    await expect(telegram, 1, "echo: a real question")
    assert fake_model.user_texts() == ["a real question"]
    assert telegram.texts(-2002) == []


async def test_a_denied_user_never_reaches_the_model(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(access={"deny_users": ["telegram:5"], "on_denied": "reply"})
    telegram.user_message("let me in", user=5)
    await expect(telegram, 5, texts.DENIED)
    assert fake_model.requests == []


# --- groups -------------------------------------------------------------------------------------


async def test_group_message_without_mention_gets_nothing(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    telegram.user_message(f"talking about {BOT_USERNAME} without addressing it", **in_group())
    asked = telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} what is two plus two?")))
    await expect(telegram, GROUP, "echo: [User1] what is two plus two?")
    assert fake_model.user_texts() == ["[User1] what is two plus two?"]
    assert telegram.sent[0].reply_to == asked["message"]["message_id"]


async def test_text_mention_and_reply_to_the_bot_trigger(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    text = "ChatBridge, first question"
    bot_user = {"id": BOT_ID, "is_bot": True, "first_name": "ChatBridge"}
    telegram.user_message(text, **in_group(entities=[entity(text, "ChatBridge", "text_mention", user=bot_user)]))
    await expect(telegram, GROUP, "echo: [User1] , first question")
    other = telegram.update("a human message", user=3, **in_group())["message"]
    telegram.user_message("replying to a human", **in_group(reply_to=other))
    telegram.user_message("follow-up", **in_group(reply_to=telegram.bot_message(telegram.sent[0])))
    await expect(telegram, GROUP, "echo: [User1] , first question", "echo: [User1] follow-up")
    assert fake_model.user_texts() == ["[User1] , first question", "[User1] follow-up"]


async def test_reset_addressed_to_this_bot_works_and_to_another_bot_is_ignored(
    bridge: Start, telegram: FakeTelegram, store: MemoryStore
) -> None:
    await bridge()
    telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} remember this")))
    await expect(telegram, GROUP, "echo: [User1] remember this")
    telegram.user_message("/reset@OtherBot", **in_group())
    telegram.user_message(f"/reset@{BOT_USERNAME}", **in_group())
    await expect(telegram, GROUP, "echo: [User1] remember this", texts.SESSION_CLEARED)
    await eventually_stored(store, f"telegram:{GROUP}")
    await asyncio.sleep(0.1)
    assert len(telegram.sent) == 2


async def test_forum_topic_is_its_own_session_and_gets_the_reply(
    bridge: Start, telegram: FakeTelegram, store: MemoryStore
) -> None:
    await bridge(session={"scope": "thread"})
    asked = telegram.user_message(**in_group(thread_id=7, **mention(f"@{BOT_USERNAME} in the topic")))
    telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} in general")))
    await telegram.wait_for(
        lambda: sorted(telegram.texts(GROUP)) == ["echo: [User1] in general", "echo: [User1] in the topic"]
    )
    topic = next(message for message in telegram.sent if message.thread_id == 7)
    assert topic.text == "echo: [User1] in the topic"
    assert topic.reply_to == asked["message"]["message_id"]
    assert 7 in [call.get("message_thread_id") for call in telegram.calls_of("sendChatAction")]
    await eventually_stored(store, f"telegram:{GROUP}/thread:7", "[User1] in the topic", "echo: [User1] in the topic")
    await eventually_stored(store, f"telegram:{GROUP}", "[User1] in general", "echo: [User1] in general")


async def test_a_reply_in_a_topic_to_the_topic_itself_is_not_a_reply_to_the_bot(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    telegram.user_message("chatting in the topic", **in_group(thread_id=9))
    telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} sync")))
    await expect(telegram, GROUP, "echo: [User1] sync")
    assert fake_model.user_texts() == ["[User1] sync"]


# --- replies ------------------------------------------------------------------------------------


async def test_a_long_reply_is_split_into_several_messages(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    long = " ".join(f"word{i}" for i in range(1500))
    fake_model.script(Reply(text=long, chunk_chars=2000))
    await bridge()
    telegram.user_message("a long one please")
    await telegram.wait_for(lambda: " ".join(telegram.texts(1)).split() == long.split())
    assert len(telegram.sent) == len(split_message(long, TelegramLimits().private.max_message_chars)) == 4
    assert all(len(message.text) <= 4096 for message in telegram.sent)


async def test_a_reply_of_emoji_is_split_by_telegrams_utf16_count_and_arrives_whole(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    """3,000 emoji are 3,000 characters but 6,000 UTF-16 units, over Telegram's 4,096."""
    emoji = "\U0001f600" * 3000
    fake_model.script(Reply(text=emoji, chunk_chars=500))
    await bridge()
    telegram.user_message("smile")
    await telegram.wait_for(lambda: "".join(telegram.texts(1)) == emoji, timeout=10)
    assert len(telegram.sent) == 2
    assert all(len(message.text.encode("utf-16-le")) // 2 <= 4096 for message in telegram.sent)


async def test_a_message_refused_as_too_long_is_cut_smaller_and_sent_again(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    """The platform is the judge of length: when it refuses a message the bridge thought would fit,
    the reply is cut into smaller messages rather than lost."""
    answer = " ".join(f"word{i}" for i in range(600))
    fake_model.script(Reply(text=answer, chunk_chars=5000))
    telegram.max_text = 2000
    await bridge()
    telegram.user_message("a long one please")
    await telegram.wait_for(lambda: " ".join(telegram.texts(1)).split() == answer.split(), timeout=10)
    assert all(len(message.text) <= 2000 for message in telegram.sent)


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # raised inside PTB's RetryAfter()
async def test_streamed_edits_wait_out_a_429_and_the_final_text_lands(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    answer = " ".join(f"token{i}" for i in range(80))
    fake_model.script(Reply(text=answer, chunk_chars=12, chunk_delay_s=0.005))
    limits = PlatformLimits(4000, 0.05)
    await bridge(platform_limits=TelegramLimits(private=limits, group=limits))
    telegram.fail("editMessageText", 429, "Too Many Requests: retry after 0.2", retry_after=0.2)
    started = time.monotonic()
    telegram.user_message("stream it")
    await telegram.wait_for(lambda: telegram.texts(1) == [answer], 3)
    assert telegram.rate_limited == ["editMessageText"]
    assert telegram.sent[0].edits >= 1
    assert time.monotonic() - started >= 0.2


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # raised inside PTB's RetryAfter()
async def test_a_storm_of_5xx_and_429_on_the_last_edits_still_lands_the_whole_answer_and_stores_it(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, store: MemoryStore
) -> None:
    answer = " ".join(f"token{i}" for i in range(120))
    fake_model.script(Reply(text=answer, chunk_chars=40, chunk_delay_s=0.01))
    await bridge()
    for status, description in [(502, "Bad Gateway"), (500, "Internal Server Error"), (500, "Internal Server Error")]:
        telegram.fail("editMessageText", status, description)
    telegram.fail("editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1)
    telegram.fail("editMessageText", 502, "Bad Gateway")
    telegram.user_message("a long one")
    await telegram.wait_for(lambda: telegram.texts(1) == [answer], timeout=15)
    await eventually_stored(store, "telegram:1", "a long one", answer)


async def test_an_answer_the_platform_cannot_take_is_stored_and_delivered_before_the_next_one(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, store: MemoryStore
) -> None:
    await bridge(delivery_timeout_s=1.0)
    for _ in range(20):
        telegram.fail("sendMessage", 500, "Internal Server Error")
    telegram.user_message("first question")
    await eventually_stored(store, "telegram:1", "first question", "echo: first question", timeout=5)
    assert telegram.texts(1) == []
    telegram.stop_failing("sendMessage")
    telegram.user_message("second question")
    await expect(telegram, 1, f"{texts.DELIVERED_LATE}\n\necho: first question", "echo: second question")


async def test_500_private_chats_at_once_are_all_answered_and_stored(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, store: MemoryStore
) -> None:
    fake_model.default_delay_s = 0.1
    await bridge()
    for n in range(500):
        telegram.user_message(f"hello from {n}", user=10_000 + n)
    expected = {10_000 + n: f"echo: hello from {n}" for n in range(500)}
    await telegram.wait_for(lambda: {sent.chat_id: sent.text for sent in telegram.sent} == expected, timeout=60)
    assert len(telegram.sent) == 500
    async with asyncio.timeout(5):  # each turn is stored a moment after its answer shows
        while len(await store.list_sessions()) < 500:
            await asyncio.sleep(0.05)


async def test_two_chats_are_served_concurrently_while_one_is_slow(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    fake_model.script(Reply(text="slow answer", delay_s=1.0))
    await bridge()
    telegram.user_message("slow question", user=1)
    await until(lambda: len(fake_model.requests) == 1)
    telegram.user_message("quick question", user=2)
    await expect(telegram, 2, "echo: quick question", timeout=0.5)
    assert telegram.texts(1) == []
    await expect(telegram, 1, "slow answer")


# --- webhook ------------------------------------------------------------------------------------


async def test_webhook_requires_the_secret_token(bridge: Start, telegram: FakeTelegram, fake_model: FakeModel) -> None:
    running = await bridge(mode="webhook")
    [hook] = telegram.calls_of("setWebhook")
    assert (hook["url"], hook["secret_token"], hook["allowed_updates"]) == (
        "https://bridge.example/telegram/webhook",
        SECRET,
        ["message", "callback_query"],
    )
    assert not telegram.calls_of("getUpdates")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {SECRET_HEADER: "wrong"}):
            async with http.post(running.webhook, json=telegram.update("sneaky"), headers=headers) as response:
                assert response.status == 403
        async with http.post(
            running.webhook, json=telegram.update("hello hook"), headers={SECRET_HEADER: SECRET}
        ) as response:
            assert response.status == 200
    await expect(telegram, 1, "echo: hello hook")
    assert fake_model.user_texts() == ["hello hook"]


def test_webhook_mode_needs_a_url_and_a_valid_secret(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "adapters:\n  telegram: {enabled: true, token: t, mode: webhook, webhook_url: 'https://x/telegram/webhook'}\n"
    )
    with pytest.raises(ConfigError, match="webhook_secret"):
        load_config(path)


def test_registry_builds_the_adapter_and_mounts_the_webhook(telegram: FakeTelegram) -> None:
    server = HttpServer("127.0.0.1", 0)
    webhook = settings(telegram, mode="webhook", webhook_url="https://x/telegram/webhook", webhook_secret=SECRET)
    adapters = enabled_adapters(Config(adapters={"telegram": webhook.model_dump()}).adapters, server)
    assert [adapter.name for adapter in adapters] == ["telegram"]
    assert server.has_routes


# --- start-up and connection --------------------------------------------------------------------


async def test_an_invalid_token_is_one_clear_error_without_the_token(
    telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel
) -> None:
    adapter = TelegramAdapter(settings(telegram, token="999:WRONG-token"), HttpServer("127.0.0.1", 0))
    with pytest.raises(AdapterStartupError, match="^telegram: the Bot API rejected the token") as error:
        await adapter.run(make_engine(store, model))
    assert "WRONG" not in str(error.value)
    with pytest.raises(AdapterStartupError, match="rejected the token"):
        await adapter.check()


async def test_an_unreachable_api_is_one_clear_error(store: MemoryStore, model: OpenAIChatModel) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = TelegramSettings(enabled=True, token=TOKEN, base_url=f"http://127.0.0.1:{port}/bot")
    adapter = TelegramAdapter(config, HttpServer("127.0.0.1", 0))
    expected = (
        f"telegram: cannot reach the Bot API: adapters.telegram.base_url http://127.0.0.1:{port}/bot: "
        "connection refused (nothing listens there)"
    )
    with pytest.raises(AdapterStartupError) as raised:
        await adapter.run(make_engine(store, model))
    assert str(raised.value) == expected
    with pytest.raises(AdapterStartupError) as raised:
        await adapter.check()
    assert str(raised.value) == expected


async def test_a_token_revoked_while_running_ends_run_with_one_line_naming_the_key(
    telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel
) -> None:
    """PTB's polling gives up on a 401 without telling anyone; the adapter must not sit there
    looking alive."""
    adapter = TelegramAdapter(settings(telegram), HttpServer("127.0.0.1", 0), poll_timeout_s=0.2)
    running = asyncio.create_task(adapter.run(make_engine(store, model)))
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))
    assert adapter.ready
    telegram.token = "123456:REVOKED"
    with pytest.raises(AdapterStartupError) as error:
        await asyncio.wait_for(running, 5)
    assert str(error.value) == "telegram: the Bot API no longer accepts the token; set a valid adapters.telegram.token"
    assert not adapter.ready


class _StoreDown(MemoryStore):
    """Cannot take messages until ``down`` is cleared."""

    down = True

    async def admit(self, admission: Admission) -> Verdict:
        if self.down:
            raise StoreUnavailable("connection refused")
        return await super().admit(admission)


async def test_polled_updates_are_confirmed_only_once_the_store_has_them(
    telegram: FakeTelegram, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    """While the store is down nothing is confirmed to Telegram and nobody is told to send again;
    when it is back, the same updates are fetched and answered, once."""
    store = _StoreDown()
    engine = make_engine(store, model)
    adapter = TelegramAdapter(settings(telegram), HttpServer("127.0.0.1", 0), limits=FAST, poll_timeout_s=0.2)
    running = asyncio.create_task(adapter.run(engine))
    try:
        await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))
        telegram.user_message("are you there?")
        await telegram.wait_for(lambda: len(telegram.calls_of("getUpdates")) >= 3, timeout=5)
        offsets = {call.get("offset") for call in telegram.calls_of("getUpdates")}
        assert offsets <= {None, 0, 1, "1"}, offsets  # never past the update the store did not take
        assert telegram.sent == []
        store.down = False
        await expect(telegram, 1, "echo: are you there?", timeout=5)
        assert fake_model.user_texts() == ["are you there?"]
    finally:
        await stop_adapters({running: adapter}, engine, 2)


async def test_a_second_poller_makes_the_adapter_not_ready_while_the_conflict_lasts(
    bridge: Start, telegram: FakeTelegram
) -> None:
    started = await bridge()
    assert started.adapter.ready
    telegram.fail("getUpdates", 409, "Conflict: terminated by other getUpdates request")
    await until(lambda: not started.adapter.ready, timeout=4)
    telegram.user_message("after the other poller stopped")
    await expect(telegram, 1, "echo: after the other poller stopped", timeout=6)


async def test_check_names_the_bot(telegram: FakeTelegram) -> None:
    adapter = TelegramAdapter(settings(telegram), HttpServer("127.0.0.1", 0))
    assert await adapter.check() == f"connected as @{BOT_USERNAME} (polling)"


WEBHOOK = {"mode": "webhook", "webhook_secret": "s3cret"}


@pytest.mark.parametrize(
    "url", ["http://bridge.example.org/telegram/webhook", "https://bridge.example.org:8080/telegram/webhook"]
)
async def test_check_fails_for_a_webhook_url_the_bot_api_would_refuse(url: str) -> None:
    """Telegram's setWebhook takes https:// on four ports only, so run would stop at start-up."""
    config = TelegramSettings(enabled=True, token=TOKEN, webhook_url=url, **WEBHOOK)
    with pytest.raises(AdapterStartupError) as raised:
        await TelegramAdapter(config, HttpServer("127.0.0.1", 0)).check()
    assert str(raised.value) == (
        "telegram: the Bot API sets webhooks only on https:// URLs with port 443, 80, 88 or 8443; "
        "change adapters.telegram.webhook_url"
    )


async def test_check_leaves_the_webhook_url_to_a_local_bot_api_server(telegram: FakeTelegram) -> None:
    """A local Bot API server (base_url) takes plain http and any port."""
    config = settings(telegram, webhook_url="http://10.0.0.5:8080/telegram/webhook", **WEBHOOK)
    assert (
        await TelegramAdapter(config, HttpServer("127.0.0.1", 0)).check() == f"connected as @{BOT_USERNAME} (webhook)"
    )
    assert not telegram.calls_of("setWebhook")


async def test_polling_survives_a_lost_connection(bridge: Start, telegram: FakeTelegram) -> None:
    telegram.fail("getUpdates", 502, "Bad Gateway")
    await bridge()
    await telegram.wait_for(lambda: len(telegram.calls_of("getUpdates")) >= 2, 3)
    telegram.user_message("still there?")
    await expect(telegram, 1, "echo: still there?", timeout=4)


# --- models, personas, instructions, budgets (through the real library) -------------------------

ADMIN = 9


@pytest_asyncio.fixture
async def two_models(fake_model: FakeModel) -> AsyncIterator[tuple[ModelRegistry, FakeModel]]:
    """``default`` is the usual fake model; ``local`` another server with its own key."""
    async with FakeModel() as local:
        registry = ModelRegistry.from_settings(
            {
                "default": model_settings(fake_model.base_url, price_in_per_mtok=0.15, price_out_per_mtok=0.6),
                "local": model_settings(local.base_url, api_key="sk-local-key", name="llama3.1"),
            }
        )
        yield registry, local
        await registry.aclose()


async def test_model_switches_a_chat_to_another_server_and_key_and_groups_need_an_admin(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, two_models: tuple[ModelRegistry, FakeModel]
) -> None:
    models, local = two_models
    await bridge(models=models, access={"admins": [f"telegram:{ADMIN}"]})
    telegram.user_message("/model local")
    await expect(telegram, 1, texts.MODEL_SWITCHED.format(name="local"))
    telegram.user_message("hello local")
    await expect(telegram, 1, texts.MODEL_SWITCHED.format(name="local"), "echo: hello local")
    assert local.user_texts() == ["hello local"]
    assert local.auth_headers == ["Bearer sk-local-key"]
    assert local.requests[0]["model"] == "llama3.1"
    assert fake_model.requests == []

    telegram.user_message("/model local", **in_group())
    await expect(telegram, GROUP, texts.GROUP_SETTINGS_ADMINS_ONLY.format(what="model"))
    telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} which model?")))
    await expect(telegram, GROUP, texts.GROUP_SETTINGS_ADMINS_ONLY.format(what="model"), "echo: [User1] which model?")
    assert fake_model.user_texts() == ["[User1] which model?"]
    telegram.user_message(f"/model@{BOT_USERNAME} local", user=ADMIN, **in_group())
    await telegram.wait_for(lambda: texts.MODEL_SWITCHED.format(name="local") in telegram.texts(GROUP))
    telegram.user_message(**in_group(**mention(f"@{BOT_USERNAME} and now?")))
    await telegram.wait_for(lambda: "echo: [User1] and now?" in telegram.texts(GROUP))
    assert local.user_texts()[-1] == "[User1] and now?"


async def test_persona_and_instructions_shape_the_prompt_and_survive_reset(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    personas = {"translator": {"system_prompt": "Translate the user's message into English."}}
    await bridge(personas=personas)
    for command in ("/persona translator", "/instructions Keep names untranslated.", "/reset"):
        telegram.user_message(command)
    await expect(
        telegram,
        1,
        texts.PERSONA_SWITCHED.format(name="translator"),
        texts.INSTRUCTIONS_SET.format(size=len("Keep names untranslated.")),
        texts.SESSION_WAS_EMPTY,
    )
    telegram.user_message("Guten Morgen, Anna")
    await telegram.wait_for(lambda: "echo: Guten Morgen, Anna" in telegram.texts(1))
    system = [m for m in fake_model.requests[-1]["messages"] if m["role"] == "system"]
    assert [m["content"] for m in system] == [
        "Translate the user's message into English.",
        f"{texts.INSTRUCTIONS_HEADER}\nKeep names untranslated.",
    ]
    telegram.user_message("/reset")
    await telegram.wait_for(lambda: texts.SESSION_CLEARED in telegram.texts(1))
    telegram.user_message("Bis bald")
    await telegram.wait_for(lambda: "echo: Bis bald" in telegram.texts(1))
    assert [m["content"] for m in fake_model.requests[-1]["messages"]][:2] == [m["content"] for m in system]


async def test_over_budget_is_refused_without_the_model_and_usage_shows_the_reported_figures(
    bridge: Start,
    telegram: FakeTelegram,
    fake_model: FakeModel,
    store: MemoryStore,
    two_models: tuple[ModelRegistry, FakeModel],
) -> None:
    models, _ = two_models
    await bridge(models=models, limits={"user_tokens_per_day": 20})
    question = "tell me something long enough to use the budget"
    telegram.user_message(question)
    # Tokens count once the turn is stored: a message that arrives while it is answered still gets in.
    await eventually_stored(store, "telegram:1", question, f"echo: {question}")
    telegram.user_message("and more?")
    await telegram.wait_for(lambda: len(telegram.texts(1)) == 2)
    refusal = telegram.texts(1)[1]
    assert refusal.startswith("You have used up today's token budget on this bridge (20 tokens a day).")
    assert "midnight (UTC)" in refusal
    assert len(fake_model.requests) == 1

    figures = _usage(fake_model.requests[0], "echo: " + fake_model.user_texts()[0])
    spent_in, spent_out = figures["prompt_tokens"], figures["completion_tokens"]
    telegram.user_message("/usage")
    await telegram.wait_for(lambda: len(telegram.texts(1)) == 3)
    report = telegram.texts(1)[2]
    cost = texts.dollars((spent_in * 0.15 + spent_out * 0.6) / 1e6)
    assert f"default: {spent_in + spent_out} tokens ({spent_in} in, {spent_out} out), {cost}" in report
    assert "you: 0 of 20 tokens left today" in report
