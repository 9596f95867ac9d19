"""The tools of a running bridge, assembled from the configuration, and their rows in ``chatbridge check``.

``open_tools`` connects the MCP servers (waiting a bounded time for each, so that a server that is
down delays start-up by seconds, not forever: it keeps being tried in the background) and hands out
the ``core.tools.ToolBox`` the engine uses; leaving it closes the connections and stops the stdio
servers it started.

The ``mcp`` package is imported only where a server is used: importing it takes as long as
importing the whole rest of the command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bots.fetch_url import FetchUrl
from bots.tools import ToolSource
from chatbridge.config import Config, ConfigError
from core.tool_settings import McpServerSettings, stdio_problems
from core.tools import CallObserver, NoTools, ToolBox, Tools

CONNECT_TIMEOUT_S = 10.0
"""Longest wait for one MCP server at start-up and in ``chatbridge check``."""
TOOL_NAMES_SHOWN = 12


@asynccontextmanager
async def open_tools(config: Config, *, on_call: CallObserver | None = None) -> AsyncIterator[ToolBox]:
    """The bridge's ``ToolBox``; ``NoTools`` when ``tools.enabled`` is off (no server is started)."""
    problems = stdio_problems(config.tools, config.mcp_servers)
    if problems:
        raise ConfigError("; ".join(problems))
    if not config.tools.enabled:
        yield NoTools()
        return
    from bots.mcp_client import McpServers

    servers = McpServers.from_settings(config.mcp_servers, connect_timeout_s=CONNECT_TIMEOUT_S)
    sources: list[ToolSource] = [FetchUrl(config.tools.fetch_url, timeout_s=config.tools.timeout_s), servers]
    await servers.start(wait_s=CONNECT_TIMEOUT_S)
    try:
        yield Tools(config.tools, config.mcp_servers, sources, on_call=on_call)
    finally:
        await servers.aclose()


async def tool_rows(config: Config) -> list[tuple[str, str, str]]:
    """``(name, status, detail)`` for ``chatbridge check``: the tools section, fetch_url, and each
    MCP server reached once and its tools listed. Status is ``ok``, ``warn`` or ``FAIL``."""
    rows: list[tuple[str, str, str]] = []
    fetch = config.tools.fetch_url
    if not (config.tools.enabled or config.mcp_servers or fetch.enabled):
        return rows
    if not config.tools.enabled:
        rows.append(("tools", "warn", "tools.enabled is false: none of the tools below is offered"))
    else:
        rows.append(
            (
                "tools",
                "ok",
                f"enabled: at most {config.tools.max_rounds} rounds, {config.tools.timeout_s:g} s a call, "
                f"confirm {config.tools.confirm}",
            )
        )
    if fetch.enabled:
        private = "private addresses ALLOWED" if fetch.allow_private_addresses else "public addresses only"
        rows.append(("tool fetch_url", "warn" if fetch.allow_private_addresses else "ok", f"built-in, {private}"))
    results = await asyncio.gather(
        *(_server_row(name, server, config.tools.allow_stdio) for name, server in config.mcp_servers.items())
    )
    rows.extend(results)
    return rows


async def _server_row(name: str, server: McpServerSettings, allow_stdio: bool) -> tuple[str, str, str]:
    row = f"mcp {name}"
    if server.command and not allow_stdio:
        return row, "FAIL", f"a stdio server; set tools.allow_stdio: true to allow starting {server.command}"
    from bots.mcp_client import McpUnreachable, probe

    where = server.url or server.command
    try:
        found = await probe(name, server, timeout_s=CONNECT_TIMEOUT_S)
    except McpUnreachable as exc:
        return row, "FAIL", f"{server.transport} {where}: {exc}"
    tools = [tool.spec for tool in found.tools]
    shown = ", ".join(spec.name + ("" if spec.read_only else " (writes)") for spec in tools[:TOOL_NAMES_SHOWN])
    more = f" and {len(tools) - TOOL_NAMES_SHOWN} more" if len(tools) > TOOL_NAMES_SHOWN else ""
    detail = f"{server.transport} {where}: {len(tools)} tool{'' if len(tools) == 1 else 's'}: {shown or 'none'}{more}"
    missing = sorted(set(server.tools) - set(found.listed))
    if missing:
        return row, "warn", f"{detail}; mcp_servers.{name}.tools names tools it lacks: {', '.join(missing)}"
    if not tools:
        return row, "warn", detail
    return row, "ok", detail
