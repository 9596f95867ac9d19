"""Issue 18: what one tool round adds to a turn, against the model calls alone, in the same run.

A turn with one round is two model requests (the one answered with a tool call, and the one that
reads the result) and the tool call between them. The floor is those two requests made directly
with the bridge's model client, carrying the very messages and tools the engine sent; the tool call
alone (the MCP test server's read-only ``lookup`` over streamable HTTP on loopback) is measured too.
The three alternate in rounds and medians are compared, as in the overhead section.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from bots.model import ChatMessage
from bots.openai_client import OpenAIChatModel
from core.channel import PlatformLimits
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer
from tests.kit.engine import model_settings, private
from tests.kit.tools import tool_engine, tools_for


class _Sink:
    """A platform that takes everything at once."""

    route = ""
    limits = PlatformLimits(4096, 0.0)

    async def send(self, text: str) -> object:
        return 1

    async def edit(self, handle: object, text: str) -> None:
        return None

    async def typing(self) -> None:
        return None


def _script(fake: FakeModel) -> None:
    fake.script(ToolCalls([FakeCall("kb__lookup", {"query": "otter"})]), Reply("Otters are mustelids."))


async def tool_round(rounds: int = 5, per_round: int = 40) -> list[tuple[str, str, str]]:
    """``(metric, value, target)`` rows."""
    turns: list[float] = []
    floors: list[float] = []
    calls: list[float] = []
    async with FakeModel() as fake, HttpMcpServer() as mcp, tools_for(mcp.url) as tools:
        model = OpenAIChatModel(model_settings(fake.base_url, timeout_s=30))
        store = MemoryStore()
        await store.open()
        engine = tool_engine(store, model, tools, limits={"user_messages_per_minute": 0})
        offered = tools.offered("telegram:1", "telegram:1")
        try:
            _script(fake)
            await engine.handle(private("warm up", "telegram:1"), _Sink())
            first, second = (_messages(body) for body in fake.requests[-2:])
            for n in range(rounds * per_round + 20):
                warm = n < 20
                user = f"telegram:{1000 + n}"  # a fresh session each time: the same window every turn
                _script(fake)
                started = time.perf_counter()
                await engine.handle(private("what is an otter?", user), _Sink())
                turn = time.perf_counter() - started

                _script(fake)
                started = time.perf_counter()
                await model.reply(first, tools=offered)
                await model.reply(second, tools=offered)
                floor = time.perf_counter() - started

                started = time.perf_counter()
                await tools.call("kb__lookup", {"query": "otter"}, user=user, chat=user)
                call = time.perf_counter() - started
                if not warm:
                    turns.append(turn)
                    floors.append(floor)
                    calls.append(call)
                fake.requests.clear()
        finally:
            await model.aclose()
            await store.close()
    turn_ms, floor_ms, call_ms = (statistics.median(xs) * 1000 for xs in (turns, floors, calls))
    return [
        ("the two model requests of a one-round turn, made directly (floor)", f"{floor_ms:.2f} ms", ""),
        ("one MCP tool call (streamable HTTP, loopback), directly", f"{call_ms:.2f} ms", ""),
        (
            "a turn with one tool round through the engine: message to final reply",
            f"{turn_ms:.2f} ms, ratio {turn_ms / floor_ms:.2f}x the model calls alone "
            f"({turn_ms - floor_ms - call_ms:.2f} ms beyond them and the tool call)",
            "",
        ),
    ]


def _messages(body: dict[str, Any]) -> Sequence[ChatMessage]:
    messages: list[ChatMessage] = body["messages"]  # as the engine sent them
    return messages
