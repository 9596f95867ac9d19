"""A tool's confirmation on Telegram: the real python-telegram-bot against the fake Bot API, which
delivers button presses as callback queries the way Telegram does; the real engine with the MCP
test server's tools over streamable HTTP, and the fake model asking for them.

Assertions are on what the users see (messages, their buttons, the notices of their presses) and on
what the tool did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from adapters.questions import button_data
from adapters.telegram.adapter import TelegramAdapter, TelegramLimits
from adapters.telegram.settings import TelegramSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.channel import PlatformLimits
from core.stores.memory import MemoryStore
from core.tool_loop import DECLINED
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer
from tests.fakes.telegram_api import BOT_USERNAME, TOKEN, FakeTelegram, Sent, entity
from tests.kit.tools import tool_engine, tools_for

GROUP = -1001
ALICE, BOB = 1, 2
FAST = TelegramLimits(private=PlatformLimits(4000, 0.02), group=PlatformLimits(4000, 0.02))

Start = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture
async def mcp() -> AsyncIterator[HttpMcpServer]:
    async with HttpMcpServer() as server:
        yield server


@pytest_asyncio.fixture
async def bridge(
    telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel, mcp: HttpMcpServer
) -> AsyncIterator[Start]:
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(**tools: Any) -> None:
        opened = tools_for(mcp.url, **tools)
        engine = tool_engine(store, model, await opened.__aenter__())
        server = HttpServer("127.0.0.1", 0)
        settings = TelegramSettings(enabled=True, token=TOKEN, base_url=telegram.base_url)
        adapter = TelegramAdapter(settings, server, limits=FAST, poll_timeout_s=1.0)
        task = asyncio.create_task(adapter.run(engine))
        await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")) or task.done())

        async def stop() -> None:
            await stop_adapters({task: adapter}, engine, 2)
            await opened.__aexit__(None, None, None)

        stops.append(stop)

    yield start
    for stop in stops:
        await stop()


def ask_in_group(telegram: FakeTelegram, text: str, user: int = ALICE) -> None:
    full = f"@{BOT_USERNAME} {text}"
    telegram.user_message(
        full, user=user, chat=GROUP, chat_type="supergroup", entities=[entity(full, f"@{BOT_USERNAME}")]
    )


async def question(telegram: FakeTelegram) -> Sent:
    await telegram.wait_for(lambda: bool(telegram.with_buttons(GROUP)))
    return telegram.with_buttons(GROUP)[0]


def notices(telegram: FakeTelegram) -> list[str | None]:
    return [call.get("text") for call in telegram.calls_of("answerCallbackQuery")]


async def test_only_the_askers_press_counts_and_then_the_tool_runs(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    await bridge(timeout_s=10)
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "buy milk"})]), Reply("Noted: buy milk."))
    ask_in_group(telegram, "note: buy milk")
    asked = await question(telegram)
    assert "kb__add_note" in asked.text and "buy milk" in asked.text and "telegram:1" in asked.text
    question_id = asked.button_data()[0].removeprefix("cbq:").rsplit(":", 1)[0]

    telegram.press(asked, button_data(question_id, True), user=BOB)
    await telegram.wait_for(lambda: notices(telegram) == [texts.TOOL_CONFIRM_NOT_YOURS])
    assert mcp.notes.texts == [] and asked.reply_markup, "another user's press changed nothing"

    telegram.press(asked, button_data(question_id, True), user=ALICE)
    await telegram.wait_for(lambda: "Noted: buy milk." in telegram.texts(GROUP))
    assert mcp.notes.texts == ["buy milk"]
    assert asked.text.endswith("→ Allowed; running it.") and not asked.reply_markup
    assert notices(telegram) == [texts.TOOL_CONFIRM_NOT_YOURS, None]


async def test_no_by_the_asker_or_no_answer_in_time_means_the_tool_does_not_run(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    await bridge(timeout_s=0.5)
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("Not written."))
    ask_in_group(telegram, "note x")
    asked = await question(telegram)
    await telegram.wait_for(lambda: "Not written." in telegram.texts(GROUP), timeout=5)
    assert asked.text.endswith("→ No answer in time; not run.") and not asked.reply_markup

    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "y"})]), Reply("Not written either."))
    ask_in_group(telegram, "note y")
    await telegram.wait_for(lambda: len(telegram.with_buttons(GROUP)) == 1)
    second = telegram.with_buttons(GROUP)[0]
    telegram.press(second, second.button_data()[1], user=ALICE)  # the second button: don't
    await telegram.wait_for(lambda: "Not written either." in telegram.texts(GROUP))
    assert second.text.endswith("→ Declined; not run.")

    assert mcp.notes.texts == []
    assert [messages[-1]["content"] for messages in (fake_model.tool_messages()[1], fake_model.tool_messages()[3])] == [
        DECLINED,
        DECLINED,
    ]


async def test_a_press_on_a_question_this_process_does_not_know_is_told_it_is_closed(
    bridge: Start, telegram: FakeTelegram, mcp: HttpMcpServer
) -> None:
    """As after a restart: the buttons are taken away and the presser told; nothing runs."""
    await bridge()
    left = Sent(GROUP, 77, "May I run kb__add_note…", None, None, None)
    left.reply_markup = {"inline_keyboard": [[{"text": "Run it", "callback_data": button_data("0123abcd", True)}]]}
    telegram.sent.append(left)
    telegram.press(left, button_data("0123abcd", True), user=ALICE)
    await telegram.wait_for(lambda: notices(telegram) == [texts.TOOL_CONFIRM_EXPIRED] and not left.reply_markup)
    assert mcp.notes.texts == []


async def test_a_read_only_tool_runs_without_a_question_and_its_status_line_gives_way_to_the_answer(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    await bridge()
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "otter"})]), Reply("Otters are mustelids."))
    telegram.user_message("what is an otter?", user=ALICE)
    await telegram.wait_for(lambda: telegram.texts(ALICE) == ["Otters are mustelids."])

    assert telegram.with_buttons(ALICE) == []
    first = telegram.calls_of("sendMessage")[0]["text"]
    assert "using kb__lookup" in first and "otter" in first, "the status line showed while the tool ran"
    assert fake_model.tool_messages()[1][0]["content"] == "found: otter"
