"""The ``tools:`` section and the access part of each ``mcp_servers:`` entry (design sections 5 and 10)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from bots.tool_settings import FetchUrlSettings, McpConnectionSettings
from core.settings import _check_identities

McpServerName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,24}$")]
"""Lower case, since a name given in the environment arrives in lower case; short, since it prefixes
each of its tools' names, which the API caps at 64 characters."""


class McpServerSettings(McpConnectionSettings):
    allow_users: list[str] = Field(
        default_factory=list,
        description="only these users (platform:id) are offered this server's tools; empty = everyone tools.allow_users allows",
    )
    allow_chats: list[str] = Field(
        default_factory=list,
        description="only in these chats (platform:id) are this server's tools offered; empty = every chat",
    )

    _identities = field_validator("allow_users", "allow_chats")(_check_identities)


class ToolsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="offer tools (fetch_url, mcp_servers) to the models that have tools: true")
    max_rounds: int = Field(
        5,
        ge=1,
        le=50,
        description="most model requests answered with tool calls in one turn; then one more without tools",
    )
    timeout_s: float = Field(30.0, gt=0, description="seconds one tool call may take, and a confirmation may wait")
    confirm: Literal["always", "unless_read_only", "never"] = Field(
        "unless_read_only",
        description="when the writer of the message is asked before a tool runs: unless_read_only asks for every "
        "tool that its server does not mark read-only (MCP readOnlyHint)",
    )
    allow_users: list[str] = Field(
        default_factory=list,
        description="only these users (platform:id) are offered tools; empty = everyone allowed to use the bot",
    )
    allow_stdio: bool = Field(
        False, description="allow mcp_servers with command: the bridge then starts those programs"
    )
    fetch_url: FetchUrlSettings = Field(default_factory=FetchUrlSettings, description="the built-in fetch_url tool")

    _identities = field_validator("allow_users")(_check_identities)


def stdio_problems(tools: ToolsSettings, servers: Mapping[str, McpConnectionSettings]) -> list[str]:
    """One line for each stdio server configured while ``tools.allow_stdio`` is off: ``run`` and
    ``check`` refuse to start rather than leave a configured server silently unused."""
    if tools.allow_stdio:
        return []
    return [
        f"mcp_servers.{name}.command: stdio servers start programs on this machine; "
        "set tools.allow_stdio: true to allow it"
        for name, server in servers.items()
        if server.command
    ]
