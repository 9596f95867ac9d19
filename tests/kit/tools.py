"""An engine with real tools: the MCP test server (tests/fakes/mcp_servers.py) over streamable HTTP,
behind the ``core.tools.Tools`` the bridge uses, for a model declared to take tools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bots.mcp_client import McpServers
from bots.model import ModelCard
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from core.engine import Engine
from core.store import Store
from core.tokens import TokenCounter
from core.tool_settings import McpServerSettings, ToolsSettings
from core.tools import CallObserver, Tools
from tests.kit.engine import engine_settings

TOOLS_CARD = ModelCard("default", "fake-model", tools=True)


@asynccontextmanager
async def tools_for(mcp_url: str, on_call: CallObserver | None = None, **tools: Any) -> AsyncIterator[Tools]:
    """``Tools`` over the test server, named ``kb``; keyword arguments are ``tools:`` keys."""
    settings = ToolsSettings.model_validate({"enabled": True, **tools})
    servers = {"kb": McpServerSettings(url=mcp_url)}
    connected = McpServers.from_settings(servers, connect_timeout_s=5.0)
    await connected.start(wait_s=5.0)
    try:
        yield Tools(settings, servers, [connected], on_call=on_call)
    finally:
        await connected.aclose()


def tool_engine(store: Store, model: OpenAIChatModel, tools: Tools, **sections: Any) -> Engine:
    return Engine(
        store=store,
        models=ModelRegistry.single(model, TOOLS_CARD),
        tokens=TokenCounter.estimate(),
        settings=engine_settings(**sections),
        tools=tools,
    )
