"""A picture and a tool round in the same turn: the engine's media step and its tool loop together,
through the real model client against the fake model and the real MCP test server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bots.model import ModelCard
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from core.engine import Engine, Outcome
from core.events import Attachment, AttachmentKind, Fetch
from core.stores.sqlite import SqliteStore
from core.tokens import TokenCounter
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer
from tests.kit.channel import RecordingChannel
from tests.kit.engine import engine_settings, private
from tests.kit.media import photo
from tests.kit.tools import tools_for


@pytest_asyncio.fixture
async def mcp() -> AsyncIterator[HttpMcpServer]:
    async with HttpMcpServer() as server:
        yield server


def _picture(data: bytes) -> Attachment:
    async def fetch(max_bytes: int) -> bytes:
        return data

    fetched: Fetch = fetch
    return Attachment(AttachmentKind.IMAGE, "image/jpeg", "otter.jpg", len(data), "f1", fetched)


async def test_a_picture_stays_in_every_round_of_a_tool_turn_and_both_come_back_after_a_restart(
    tmp_path: Path, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    sqlite_path = str(tmp_path / "bridge.db")
    card = ModelCard("default", "fake-model", vision=True, tools=True)
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "otter"})]), Reply("An otter, a mustelid."))
    store = SqliteStore(sqlite_path)
    await store.open()
    try:
        async with tools_for(mcp.url) as tools:
            engine = Engine(
                store=store,
                models=ModelRegistry.single(model, card),
                tokens=TokenCounter.estimate(),
                settings=engine_settings(),
                tools=tools,
            )
            channel = RecordingChannel()
            question = private("what animal is this?", attachments=(_picture(photo()),))
            assert await engine.handle(question, channel) is Outcome.ANSWERED
    finally:
        await store.close()
    assert channel.text == "An otter, a mustelid."
    # Both requests of the turn (the one answered with a tool call and the one after it) show the picture.
    assert [len(images) for images in fake_model.user_images()] == [1, 1]
    assert [len(results) for results in fake_model.tool_messages()] == [0, 1]

    reopened = SqliteStore(sqlite_path)  # what a restarted process reads back
    await reopened.open()
    try:
        [info] = await reopened.list_sessions()
        state = await reopened.load_session(info.key, 10)
    finally:
        await reopened.close()
    assert state is not None
    asked, answer = state.turns
    assert asked.content == "what animal is this?" and len(asked.images) == 1 and asked.steps == ()
    assert answer.content == "An otter, a mustelid." and answer.images == ()
    assert [step["role"] for step in answer.steps] == ["assistant", "tool"]
