"""What the model room needs to reach tools: one MCP server's connection, and the built-in ``fetch_url``.

Who may use a server (``allow_users``, ``allow_chats``) is a matter of chats and is added to these
in ``core.tool_settings``; the whole ``tools:`` section lives there too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class FetchUrlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="offer the built-in fetch_url tool (read-only: it never asks to confirm)")
    allow_private_addresses: bool = Field(
        False,
        description="also fetch from loopback, private, link-local and cloud metadata addresses; "
        "leave off unless the bridge's network holds nothing a chat user should reach",
    )
    max_bytes: int = Field(
        2_000_000, gt=0, description="most bytes of a page read; a longer page is cut there and the model told"
    )


class McpConnectionSettings(BaseModel):
    """Either ``url`` (a streamable HTTP server) or ``command`` (a stdio server the bridge starts)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("", description="the streamable HTTP endpoint, e.g. https://mcp.example.com/mcp")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HTTP headers sent with every request, e.g. Authorization; secrets: best set as "
        "CHATBRIDGE_MCP_SERVERS__<NAME>__HEADERS__<HEADER> (names from the environment arrive in lower case)",
    )
    command: str = Field(
        "", description="a stdio server: the program the bridge starts (needs tools.allow_stdio: true)"
    )
    args: list[str] = Field(default_factory=list, description="the stdio server's command-line arguments")
    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="environment variables of the stdio server, over a minimal default (PATH, HOME...); "
        "the bridge's own environment, its secrets included, is not passed on",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="offer only these of the server's tools (the names the server gives them); empty = all",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _one_transport(self) -> McpConnectionSettings:
        if bool(self.url) == bool(self.command):
            raise ValueError("set either url (a streamable HTTP server) or command (a stdio server)")
        if self.url and (self.args or self.env):
            raise ValueError("args and env are for stdio servers (command), not for url")
        if self.command and self.headers:
            raise ValueError("headers are for streamable HTTP servers (url), not for command")
        return self

    @property
    def transport(self) -> str:
        return "streamable HTTP" if self.url else "stdio"
