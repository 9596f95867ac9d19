"""The engine's view of tools: who is offered what, calls bounded in time, what needs confirming.

The tools are real: a streamable HTTP MCP server started here, and the built-in fetch_url.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio

from bots.fetch_url import FetchUrl
from bots.mcp_client import McpServers
from bots.model import ToolSpec
from bots.tools import ToolResult
from core.tool_settings import McpServerSettings, ToolsSettings
from core.tools import NoTools, Tools
from tests.fakes.mcp_servers import HttpMcpServer

ALICE, BOB = "telegram:1001", "telegram:1002"
TEAM, ELSEWHERE = "telegram:-500", "telegram:-600"


@pytest_asyncio.fixture
async def mcp() -> AsyncIterator[HttpMcpServer]:
    async with HttpMcpServer() as server:
        yield server


@pytest_asyncio.fixture
async def make_tools(mcp: HttpMcpServer) -> AsyncIterator[Any]:
    opened: list[McpServers] = []

    async def make(tools: dict[str, Any] | None = None, **server: Any) -> tuple[Tools, list[tuple[Any, ...]]]:
        settings = ToolsSettings.model_validate({"enabled": True, "fetch_url": {"enabled": True}, **(tools or {})})
        servers = {"kb": McpServerSettings.model_validate({"url": mcp.url, **server})}
        connected = McpServers.from_settings(servers, connect_timeout_s=5.0)
        opened.append(connected)
        await connected.start()
        calls: list[tuple[Any, ...]] = []
        fetch = FetchUrl(settings.fetch_url, timeout_s=settings.timeout_s)
        toolbox = Tools(settings, servers, [fetch, connected], on_call=lambda *call: calls.append(call))
        return toolbox, calls

    yield make
    for servers in opened:
        await servers.aclose()


def names(specs: Sequence[ToolSpec]) -> set[str]:
    return {spec.name for spec in specs}


async def test_everyone_allowed_is_offered_every_tool_and_calls_run(make_tools: Any, mcp: HttpMcpServer) -> None:
    tools, calls = await make_tools()

    offered = names(tools.offered(ALICE, TEAM))
    assert {"fetch_url", "kb__lookup", "kb__add_note"} <= offered
    assert await tools.call("kb__add_note", {"text": "hi"}, user=ALICE, chat=TEAM) == ToolResult("noted (1)")
    assert mcp.notes.texts == ["hi"]
    assert calls[0][:3] == ("kb", "kb__add_note", "ok")


async def test_tools_off_offer_nothing_and_run_nothing(make_tools: Any, mcp: HttpMcpServer) -> None:
    tools, _ = await make_tools({"enabled": False})

    assert tools.offered(ALICE, TEAM) == []
    refused = await tools.call("kb__add_note", {"text": "x"}, user=ALICE, chat=TEAM)
    assert refused.is_error and mcp.notes.texts == []
    assert NoTools().offered(ALICE, TEAM) == ()


async def test_tools_allow_users_limits_who_is_offered_tools_and_who_runs_them(
    make_tools: Any, mcp: HttpMcpServer
) -> None:
    tools, calls = await make_tools({"allow_users": [ALICE]})

    assert "kb__add_note" in names(tools.offered(ALICE, TEAM))
    assert tools.offered(BOB, TEAM) == []
    refused = await tools.call("kb__add_note", {"text": "from bob"}, user=BOB, chat=TEAM)
    assert refused == ToolResult("error: no tool named kb__add_note is available here", is_error=True)
    assert mcp.notes.texts == []
    assert calls == [("kb", "kb__add_note", "refused", 0.0)]


async def test_a_servers_own_lists_limit_its_tools_only(make_tools: Any, mcp: HttpMcpServer) -> None:
    tools, _ = await make_tools(allow_users=[ALICE], allow_chats=[TEAM])

    assert "kb__lookup" in names(tools.offered(ALICE, TEAM))
    assert names(tools.offered(ALICE, ELSEWHERE)) == {"fetch_url"}
    assert names(tools.offered(BOB, TEAM)) == {"fetch_url"}
    assert (await tools.call("kb__add_note", {"text": "x"}, user=ALICE, chat=ELSEWHERE)).is_error
    assert (await tools.call("kb__add_note", {"text": "x"}, user=BOB, chat=TEAM)).is_error
    assert mcp.notes.texts == []


async def test_a_hanging_tool_times_out_as_an_error_result(make_tools: Any) -> None:
    tools, calls = await make_tools({"timeout_s": 0.3})

    result = await tools.call("kb__slow", {"seconds": 5}, user=ALICE, chat=TEAM)

    assert result == ToolResult("error: kb__slow did not finish within 0.3 s", is_error=True)
    assert calls[-1][:3] == ("kb", "kb__slow", "timeout") and 0.25 <= calls[-1][3] < 2
    assert (
        await tools.call("kb__lookup", {"query": "still there"}, user=ALICE, chat=TEAM)
    ).text == "found: still there"


@pytest.mark.parametrize(
    ("confirm", "lookup", "add_note", "unknown"),
    [("unless_read_only", False, True, True), ("always", True, True, True), ("never", False, False, False)],
)
async def test_what_needs_confirming(
    make_tools: Any, confirm: str, lookup: bool, add_note: bool, unknown: bool
) -> None:
    tools, _ = await make_tools({"confirm": confirm})

    assert tools.needs_confirmation("kb__lookup") is lookup
    assert tools.needs_confirmation("fetch_url") is lookup
    assert tools.needs_confirmation("kb__add_note") is add_note
    assert tools.needs_confirmation("nothing") is unknown


class Broken:
    """A tool source whose call raises, as a bug in a built-in tool would."""

    def specs(self) -> Sequence[ToolSpec]:
        return [ToolSpec("broken", "", {"type": "object", "properties": {}})]

    def spec(self, name: str) -> ToolSpec | None:
        return self.specs()[0] if name == "broken" else None

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        raise RuntimeError("bug")


async def test_a_tool_that_raises_is_an_error_result_not_a_failed_turn() -> None:
    tools = Tools(ToolsSettings(enabled=True), {}, [Broken()])

    assert await tools.call("broken", {}, user=ALICE, chat=TEAM) == ToolResult(
        "error: broken failed (RuntimeError)", is_error=True
    )
