"""A tool's confirmation on Discord: the real discord.py client against the fake Discord, which
delivers button presses as component interactions (INTERACTION_CREATE of type 3) the way Discord
does; the real engine with the MCP test server's tools over streamable HTTP, and the fake model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from adapters.discord.adapter import DiscordAdapter
from adapters.questions import button_data
from bots.openai_client import OpenAIChatModel
from chatbridge.runtime import stop_adapters
from core import texts
from core.stores.memory import MemoryStore
from tests.adapters.discord.test_adapter import settings_for
from tests.fakes import discord_api as wire
from tests.fakes.discord_api import ALICE, BOB, BOT, FakeDiscord
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer
from tests.kit.engine import model_settings
from tests.kit.tools import tool_engine, tools_for

MENTION = f"<@{wire.BOT_ID}>"
Start = Callable[..., Awaitable[HttpMcpServer]]


@pytest_asyncio.fixture
async def bridge(discord_fake: FakeDiscord, fake_model: FakeModel) -> AsyncIterator[Start]:
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(**tools: Any) -> HttpMcpServer:
        mcp = HttpMcpServer()
        await mcp.start()
        opened = tools_for(mcp.url, **tools)
        store = MemoryStore()
        await store.open()
        model = OpenAIChatModel(model_settings(fake_model.base_url, stream=False))
        engine = tool_engine(store, model, await opened.__aenter__())
        adapter = DiscordAdapter(settings_for(discord_fake))
        task = asyncio.create_task(adapter.run(engine))
        await discord_fake.wait_ready()

        async def stop() -> None:
            await stop_adapters({task: adapter}, engine, 2)
            await opened.__aexit__(None, None, None)
            await model.aclose()
            await store.close()
            await mcp.stop()

        stops.append(stop)
        return mcp

    yield start
    for stop in stops:
        await stop()


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row.get("components", [])]


async def test_only_the_askers_press_counts_and_the_question_shows_the_decision(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    mcp = await bridge(timeout_s=10)
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "buy milk"})]), Reply("Noted: buy milk."))
    await discord_fake.say(f"{MENTION} note: buy milk", mentions=(BOT,))
    await discord_fake.wait_until(lambda: bool(discord_fake.with_buttons()))
    [asked] = discord_fake.with_buttons()
    assert "kb__add_note" in asked["content"] and f"discord:{wire.ALICE_ID}" in asked["content"]
    yes, no = buttons(asked)

    by_bob = await discord_fake.press(asked, yes, author=BOB)
    await discord_fake.wait_until(lambda: by_bob.callback is not None)
    assert by_bob.callback is not None and by_bob.callback["type"] == 4
    assert by_bob.callback["data"]["content"] == texts.TOOL_CONFIRM_NOT_YOURS
    assert by_bob.callback["data"]["flags"] & wire.EPHEMERAL_FLAG
    assert mcp.notes.texts == [] and buttons(asked), "another user's press changed nothing"

    await discord_fake.press(asked, yes, author=ALICE)
    await discord_fake.wait_until(lambda: "Noted: buy milk." in discord_fake.bot_messages())
    assert mcp.notes.texts == ["buy milk"]
    assert asked["content"].endswith("→ Allowed; running it.") and buttons(asked) == []


async def test_a_no_or_no_answer_in_time_runs_nothing(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    mcp = await bridge(timeout_s=0.5)
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("Not written."))
    await discord_fake.say(f"{MENTION} note x", mentions=(BOT,))
    await discord_fake.wait_until(lambda: "Not written." in discord_fake.bot_messages())
    [timed_out] = [m for m in discord_fake.bot_posts() if "kb__add_note" in m["content"]]
    assert timed_out["content"].endswith("→ No answer in time; not run.") and buttons(timed_out) == []

    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "y"})]), Reply("Not written either."))
    await discord_fake.say(f"{MENTION} note y", mentions=(BOT,))
    await discord_fake.wait_until(lambda: bool(discord_fake.with_buttons()))
    [asked] = discord_fake.with_buttons()
    await discord_fake.press(asked, buttons(asked)[1], author=ALICE)
    await discord_fake.wait_until(lambda: "Not written either." in discord_fake.bot_messages())
    assert asked["content"].endswith("→ Declined; not run.")
    assert mcp.notes.texts == []


async def test_a_press_on_a_question_from_before_a_restart_is_told_it_is_closed(
    bridge: Start, discord_fake: FakeDiscord
) -> None:
    await bridge()
    left = await discord_fake.say("May I run kb__add_note…", author=BOT)
    left["components"] = [
        {"type": 1, "components": [{"type": 2, "style": 3, "label": "Run it", "custom_id": button_data("ab12", True)}]}
    ]
    pressed = await discord_fake.press(left, button_data("ab12", True), author=ALICE)
    await discord_fake.wait_until(lambda: bool(pressed.followups))
    assert pressed.followups[0]["content"] == texts.TOOL_CONFIRM_EXPIRED
    assert pressed.callback is not None and pressed.callback["type"] == 7 and buttons(left) == []
