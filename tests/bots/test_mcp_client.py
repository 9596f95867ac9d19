"""MCP servers' tools through the real ``mcp`` client, against real MCP servers started here:
one over streamable HTTP on 127.0.0.1 (in this process), one over stdio (a subprocess)."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from bots.mcp_client import McpServers, McpUnreachable, namespaced_names, probe
from bots.tool_settings import McpConnectionSettings
from bots.tools import ToolResult
from chatbridge.logging_setup import configure_logging
from tests.fakes.mcp_servers import STDIO_SCRIPT, HttpMcpServer

TOKEN = "mcp-secret-6a5b4c3d2e1f"
FAST = {"connect_timeout_s": 5.0, "health_interval_s": 0.2, "retry_initial_s": 0.05, "retry_max_s": 0.2}


def http_settings(server: HttpMcpServer, **extra: Any) -> McpConnectionSettings:
    return McpConnectionSettings.model_validate({"url": server.url, **extra})


def stdio_settings(**extra: Any) -> McpConnectionSettings:
    return McpConnectionSettings.model_validate({"command": sys.executable, "args": [STDIO_SCRIPT], **extra})


@pytest_asyncio.fixture
async def http_server() -> AsyncIterator[HttpMcpServer]:
    async with HttpMcpServer(require=("Authorization", f"Bearer {TOKEN}")) as server:
        yield server


@pytest_asyncio.fixture
async def connected() -> AsyncIterator[Callable[..., Awaitable[McpServers]]]:
    started: list[McpServers] = []

    async def start(settings: dict[str, McpConnectionSettings]) -> McpServers:
        servers = McpServers.from_settings(settings, **FAST)
        started.append(servers)
        await servers.start(wait_s=10.0)
        return servers

    yield start
    for servers in started:
        await servers.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_an_http_servers_tools_are_offered_namespaced_and_run(
    http_server: HttpMcpServer, connected: Callable[..., Awaitable[McpServers]]
) -> None:
    servers = await connected({"notes": http_settings(http_server, headers={"Authorization": f"Bearer {TOKEN}"})})

    specs = {spec.name: spec for spec in servers.specs()}
    assert sorted(specs) == [
        "notes__add_note",
        "notes__env",
        "notes__exit_now",
        "notes__fail",
        "notes__get_weather",
        "notes__lookup",
        "notes__pid",
        "notes__slow",
    ]
    assert {name for name, spec in specs.items() if spec.read_only} == {
        "notes__env",
        "notes__lookup",
        "notes__slow",
        "notes__get_weather",
        "notes__pid",
    }
    assert specs["notes__lookup"].description == "Look a word up."
    assert specs["notes__lookup"].parameters["properties"]["query"]["type"] == "string"
    assert specs["notes__lookup"].source == "notes"

    assert await servers.call("notes__lookup", {"query": "mcp"}) == ToolResult("found: mcp")
    assert await servers.call("notes__get_weather", {"city": "Oslo"}) == ToolResult("sunny in Oslo")
    assert await servers.call("notes__add_note", {"text": "milk"}) == ToolResult("noted (1)")
    failed = await servers.call("notes__fail", {})
    assert failed == ToolResult("Error executing tool fail: the tool broke", is_error=True)
    assert http_server.notes.texts == ["milk"]
    assert all(seen.get("authorization") == f"Bearer {TOKEN}" for seen in http_server.headers_seen)
    with pytest.raises(KeyError):
        await servers.call("notes__nothing", {})


async def test_the_allow_list_keeps_only_the_named_tools(
    http_server: HttpMcpServer, connected: Callable[..., Awaitable[McpServers]]
) -> None:
    settings = http_settings(http_server, headers={"Authorization": f"Bearer {TOKEN}"}, tools=["lookup", "get.weather"])
    servers = await connected({"kb": settings})

    assert sorted(spec.name for spec in servers.specs()) == ["kb__get_weather", "kb__lookup"]
    with pytest.raises(KeyError):
        await servers.call("kb__add_note", {"text": "x"})


async def test_a_refused_connection_offers_nothing_and_logs_no_secret(
    http_server: HttpMcpServer, connected: Callable[..., Awaitable[McpServers]]
) -> None:
    wrong = f"Bearer {TOKEN}-old"
    stream = io.StringIO()
    configure_logging(secrets=[wrong, TOKEN], stream=stream)
    try:
        servers = await connected({"notes": http_settings(http_server, headers={"Authorization": wrong})})
        await until(lambda: "connecting again" in stream.getvalue())
    finally:
        configure_logging(stream=io.StringIO())

    state = servers.servers["notes"].state
    assert servers.specs() == [] and not state.connected
    assert state.error is not None and "401" in state.error
    logged = stream.getvalue()
    assert "MCP server notes" in logged and "401" in logged
    assert TOKEN not in logged and http_server.headers_seen[0]["authorization"] == wrong


async def test_the_http_server_is_used_again_after_it_restarts(
    http_server: HttpMcpServer, connected: Callable[..., Awaitable[McpServers]]
) -> None:
    servers = await connected({"notes": http_settings(http_server, headers={"Authorization": f"Bearer {TOKEN}"})})
    assert (await servers.call("notes__lookup", {"query": "before"})).text == "found: before"

    await http_server.stop()
    await until(lambda: not servers.servers["notes"].state.connected)
    assert servers.specs() == []
    waiting = asyncio.create_task(servers.call("notes__lookup", {"query": "during"}))
    await asyncio.sleep(0.3)
    await http_server.start()

    assert (await asyncio.wait_for(waiting, 10)).text == "found: during"
    await until(lambda: bool(servers.specs()))
    assert (await servers.call("notes__add_note", {"text": "after"})).text == "noted (1)"


async def test_a_stdio_server_is_started_again_after_it_exits(
    connected: Callable[..., Awaitable[McpServers]],
) -> None:
    servers = await connected({"local": stdio_settings()})
    first_pid = (await servers.call("local__pid", {})).text

    lost = await servers.call("local__exit_now", {})

    assert lost.is_error and lost.text == (
        "error: the connection to MCP server local was lost during the call; it may or may not have run"
    )
    await until(lambda: bool(servers.specs()))
    second_pid = (await servers.call("local__pid", {})).text
    assert second_pid.isdigit() and first_pid.isdigit() and second_pid != first_pid
    assert servers.servers["local"].state.attempts >= 2


async def test_a_stdio_server_gets_its_env_and_nothing_of_the_bridges(
    monkeypatch: pytest.MonkeyPatch, connected: Callable[..., Awaitable[McpServers]]
) -> None:
    monkeypatch.setenv("CHATBRIDGE_MODEL__API_KEY", "sk-bridge-secret")
    servers = await connected({"local": stdio_settings(env={"NOTES_DIR": "/srv/notes"})})

    assert (await servers.call("local__env", {"name": "NOTES_DIR"})).text == "/srv/notes"
    assert (await servers.call("local__env", {"name": "CHATBRIDGE_MODEL__API_KEY"})).text == "<unset>"


async def test_probe_lists_a_stdio_servers_tools() -> None:
    found = await probe("local", stdio_settings(tools=["lookup"]), timeout_s=10)

    assert [tool.spec.name for tool in found.tools] == ["local__lookup"]
    assert "exit_now" in found.listed


async def test_probe_names_what_went_wrong_with_an_http_server(http_server: HttpMcpServer) -> None:
    with pytest.raises(McpUnreachable, match="HTTP 401 Unauthorized"):
        await probe("notes", http_settings(http_server), timeout_s=5)


def test_names_are_namespaced_sanitised_and_kept_distinct() -> None:
    long = "x" * 80
    names = namespaced_names("srv", ["a.b", "a b", "ok-name_1", long, long + "y"])

    assert names[0] == "srv__a_b"
    assert names[1].startswith("srv__a_b_") and names[1] != names[0]
    assert names[2] == "srv__ok-name_1"
    assert len(names[3]) == 64 and len(names[4]) == 64 and names[3] != names[4]
    assert len(set(names)) == len(names)
