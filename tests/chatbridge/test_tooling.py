"""The bridge's tools as ``run`` assembles them from the configuration."""

from __future__ import annotations

import pytest

from chatbridge.config import Config, ConfigError
from chatbridge.tooling import open_tools
from core.tools import NoTools
from tests.fakes.mcp_servers import HttpMcpServer

ALICE, CHAT = "slack:U1", "slack:C1"


async def test_the_configured_tools_are_connected_and_offered() -> None:
    async with HttpMcpServer() as kb:
        config = Config.model_validate(
            {"tools": {"enabled": True, "fetch_url": {"enabled": True}}, "mcp_servers": {"kb": {"url": kb.url}}}
        )
        async with open_tools(config) as tools:
            offered = {spec.name for spec in tools.offered(ALICE, CHAT)}
            result = await tools.call("kb__lookup", {"query": "x"}, user=ALICE, chat=CHAT)

    assert {"fetch_url", "kb__lookup", "kb__add_note"} <= offered
    assert result.text == "found: x"


async def test_with_tools_off_no_server_is_reached() -> None:
    async with HttpMcpServer() as kb:
        config = Config.model_validate({"mcp_servers": {"kb": {"url": kb.url}}})
        async with open_tools(config) as tools:
            assert isinstance(tools, NoTools)
    assert kb.headers_seen == []


async def test_a_stdio_server_is_refused_at_start_unless_allowed() -> None:
    config = Config.model_validate({"tools": {"enabled": True}, "mcp_servers": {"local": {"command": "true"}}})

    with pytest.raises(ConfigError, match=r"mcp_servers\.local\.command: .*tools\.allow_stdio: true"):
        async with open_tools(config):
            pass
