"""The tools of MCP servers, over the official ``mcp`` package: streamable HTTP and stdio servers.

Each server is kept connected by a task of its own (``McpServer``). The ``mcp`` client runs its
transport in anyio task groups, which must be left by the task that entered them, and a transport
failure (a refused connection, a server that went away) tears down the whole client: so the client
lives in that one task, every call runs as a child of it, and when the connection breaks the task
connects again with backoff, while the calls in flight are told the connection was lost. Between
calls the task re-reads the tool listing every ``health_interval_s``, which both notices a server
that went away while idle and picks up tools it added or removed.

Tool names are namespaced ``<server>__<tool>`` and cut to what the chat-completions API accepts
(``^[a-zA-Z0-9_-]{1,64}$``); the model sees those names, the server its own.

A lost connection is retried for a read-only tool only: a writing call may already have run, and
running it twice is worse than telling the model it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bots.model import ToolSpec
from bots.redaction import Redactor
from bots.tool_settings import McpConnectionSettings
from bots.tools import ToolResult

logger = logging.getLogger("chatbridge.tools")

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What the chat-completions API accepts as a function name."""
NAMESPACE_SEPARATOR = "__"
MAX_TOOL_PAGES = 20
"""A server whose tool listing never ends is read this many pages far."""
CALL_CAP_S = 3600.0
"""A backstop only: a call is bounded by whoever awaits it."""
CLIENT_INFO = types.Implementation(name="chatbridge", version="0.1.0")


class ServerDropped(Exception):
    """The connection to the server broke while a call was in flight."""


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of one server: the name the model sees, and the server's own."""

    spec: ToolSpec
    remote_name: str


@dataclass(slots=True)
class _Live:
    client: Client
    group: anyio.abc.TaskGroup


@dataclass(slots=True)
class ServerState:
    """What is known of a server now, for logs and ``chatbridge check``."""

    connected: bool = False
    error: str | None = None
    tools: tuple[McpTool, ...] = ()
    attempts: int = 0


@contextlib.asynccontextmanager
async def connect(
    settings: McpConnectionSettings, *, timeout_s: float, refusals: list[str] | None = None
) -> AsyncIterator[Client]:
    """One connection to a server, handshake done. The headers and the stdio server's environment
    are secrets: they go into the request and the child process, never into a message.

    The ``mcp`` client reports an HTTP error status only as "Server returned an error response";
    each status of 400 and up is added to ``refusals``, so that a 401 can be told as one."""

    async def note_refusal(response: httpx2.Response) -> None:
        if response.status_code >= 400 and refusals is not None:
            refusals.append(f"HTTP {response.status_code} {response.reason_phrase}".strip())

    async with contextlib.AsyncExitStack() as stack:
        if settings.url:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers={name: value.get_secret_value() for name, value in settings.headers.items()},
                    timeout=httpx2.Timeout(timeout_s, read=max(timeout_s, 300.0)),
                    event_hooks={"response": [note_refusal]},
                )
            )
            transport = streamable_http_client(settings.url, http_client=http)
        else:
            parameters = StdioServerParameters(
                command=settings.command,
                args=list(settings.args),
                env={name: value.get_secret_value() for name, value in settings.env.items()},
            )
            transport = stdio_client(parameters)
        # The handshake is bounded by the client's read timeout: a cancel scope around entering
        # the client would be left by another scope than the one it was entered in.
        client = Client(transport, client_info=CLIENT_INFO, cache=None, read_timeout_seconds=timeout_s)
        yield await stack.enter_async_context(client)


async def list_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class McpServer:
    """One server, kept connected by ``run`` (started by ``McpServers.start``)."""

    def __init__(
        self,
        name: str,
        settings: McpConnectionSettings,
        *,
        connect_timeout_s: float = 10.0,
        health_interval_s: float = 30.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.state = ServerState()
        self._connect_timeout_s = connect_timeout_s
        self._health_interval_s = health_interval_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._live: _Live | None = None
        self._connected = asyncio.Event()
        self._tried = asyncio.Event()
        self._closing = asyncio.Event()
        self._redact = Redactor([v.get_secret_value() for v in (*settings.headers.values(), *settings.env.values())])

    @property
    def where(self) -> str:
        """The server as an operator recognises it (never with its headers)."""
        return self.settings.url or " ".join([self.settings.command, *self.settings.args])

    async def wait_tried(self) -> None:
        """Until the first connection attempt has succeeded or failed."""
        await self._tried.wait()

    async def run(self) -> None:
        delay = self._retry_initial_s
        while not self._closing.is_set():
            self.state.attempts += 1
            refusals: list[str] = []
            try:
                await self._serve(refusals)
            except Exception as exc:  # noqa: BLE001 - any failure of a connection means: connect again
                self.state.error = self._redact(describe(exc, refusals))
            self._live = None
            self._connected.clear()
            was_connected, self.state.connected = self.state.connected, False
            self._tried.set()
            if self._closing.is_set():
                return
            if was_connected:
                delay = self._retry_initial_s
            wait_s = delay / 2 + random.uniform(0, delay / 2)
            logger.warning(
                "MCP server %s (%s): %s; connecting again in %.1f s", self.name, self.where, self.state.error, wait_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), wait_s)
            delay = min(delay * 2, self._retry_max_s)

    async def _serve(self, refusals: list[str]) -> None:
        async with connect(self.settings, timeout_s=self._connect_timeout_s, refusals=refusals) as client:
            async with anyio.create_task_group() as group:
                with anyio.fail_after(self._connect_timeout_s):
                    self.state.tools = tools_of(self.name, self.settings, await list_tools(client))
                self._live = _Live(client, group)
                self.state.connected, self.state.error = True, None
                self._connected.set()
                self._tried.set()
                logger.info("MCP server %s connected: %d tools", self.name, len(self.state.tools))
                while not self._closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self._health_interval_s)
                    if self._closing.is_set():
                        break
                    with anyio.fail_after(self._connect_timeout_s):
                        self.state.tools = tools_of(self.name, self.settings, await list_tools(client))
                group.cancel_scope.cancel()

    async def call(self, tool: McpTool, arguments: Mapping[str, Any]) -> ToolResult:
        """Run a tool; waits for the connection when the server is down (the caller bounds the time)."""
        for _ in range(2 if tool.spec.read_only else 1):
            live = await self._wait_live()
            try:
                return _result_text(await self._call_in(live, tool.remote_name, arguments))
            except ServerDropped:
                self._forget(live)
            except MCPError as exc:
                if exc.code != types.CONNECTION_CLOSED:
                    return ToolResult(f"error from {self.name}: {self._redact(exc.error.message)}", is_error=True)
                self._forget(live)
        return ToolResult(self._lost(tool), is_error=True)

    async def _wait_live(self) -> _Live:
        while self._live is None:
            await self._connected.wait()
        return self._live

    def _forget(self, live: _Live) -> None:
        """Stop using a connection that failed a call, and end it, so that ``run`` connects again
        (a stdio server that exited closes its pipe without the client raising anything)."""
        if self._live is live:
            self._live = None
            self._connected.clear()
            live.group.cancel_scope.cancel()

    def _lost(self, tool: McpTool) -> str:
        maybe = "" if tool.spec.read_only else "; it may or may not have run"
        return f"error: the connection to MCP server {self.name} was lost during the call{maybe}"

    async def _call_in(self, live: _Live, remote_name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """Runs the call as a child of the connection's task, so that a broken connection ends it."""
        done: asyncio.Future[types.CallToolResult] = asyncio.get_running_loop().create_future()
        scopes: list[anyio.CancelScope] = []

        async def run() -> None:
            try:
                with anyio.CancelScope() as scope:
                    scopes.append(scope)
                    # The caller bounds the call (tools.timeout_s); the client's own timeout is the handshake's.
                    result = await live.client.call_tool(remote_name, dict(arguments), read_timeout_seconds=CALL_CAP_S)
                    if not done.done():
                        done.set_result(result)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, never to the connection's task
                if not done.done():
                    done.set_exception(exc)
            finally:
                if not done.done():
                    done.set_exception(ServerDropped())

        live.group.start_soon(run)
        try:
            return await done
        finally:
            if not done.done():
                done.cancel()
                for scope in scopes:
                    scope.cancel()

    async def aclose(self) -> None:
        self._closing.set()


def tools_of(server: str, settings: McpConnectionSettings, listed: Sequence[types.Tool]) -> tuple[McpTool, ...]:
    """The listed tools that ``settings.tools`` lets through, under their namespaced names."""
    allowed = set(settings.tools)
    kept = [tool for tool in listed if not allowed or tool.name in allowed]
    names = namespaced_names(server, [tool.name for tool in kept])
    return tuple(
        McpTool(
            ToolSpec(
                name=name,
                description=tool.description or tool.title or "",
                parameters=_object_schema(tool.input_schema),
                read_only=bool(tool.annotations and tool.annotations.read_only_hint),
                source=server,
            ),
            remote_name=tool.name,
        )
        for name, tool in zip(names, kept, strict=True)
    )


class McpServers:
    """Every configured server as one ``ToolSource``; a server that is down offers no tools."""

    def __init__(self, servers: Mapping[str, McpServer]) -> None:
        self._servers = dict(servers)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Mapping[str, McpConnectionSettings], **options: float) -> McpServers:
        return cls({name: McpServer(name, server, **options) for name, server in settings.items()})

    @property
    def servers(self) -> Mapping[str, McpServer]:
        return self._servers

    async def start(self, wait_s: float = 10.0) -> None:
        """Connect every server, waiting up to ``wait_s`` for their first attempts; a server that is
        not up by then keeps being tried in the background (and offers no tools meanwhile)."""
        self._tasks = [asyncio.create_task(server.run(), name=f"mcp {name}") for name, server in self._servers.items()]
        waits = [asyncio.ensure_future(server.wait_tried()) for server in self._servers.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=wait_s)
            for waiting in pending:
                waiting.cancel()

    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._tools(connected_only=True).values()]

    def spec(self, name: str) -> ToolSpec | None:
        tool = self.tool(name)
        return tool.spec if tool is not None else None

    def tool(self, name: str) -> McpTool | None:
        """A tool by the name the model knows it by, also while its server is reconnecting: a
        call the model asked for just before the server went away waits for it to be back."""
        return self._tools(connected_only=False).get(name)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        tool = self.tool(name)
        if tool is None:
            raise KeyError(name)
        return await self._servers[tool.spec.source].call(tool, arguments)

    def _tools(self, *, connected_only: bool) -> dict[str, McpTool]:
        return {
            tool.spec.name: tool
            for server in self._servers.values()
            if server.state.connected or not connected_only
            for tool in server.state.tools
        }

    async def aclose(self, timeout_s: float = 5.0) -> None:
        for server in self._servers.values():
            await server.aclose()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def namespaced_names(server: str, tools: Sequence[str]) -> list[str]:
    """``<server>__<tool>`` for each tool, with characters the API refuses replaced by ``_`` and cut
    to 64; names that come out alike get a short hash of the original, so each stays distinct."""
    names: list[str] = []
    for tool in tools:
        name = _clean(f"{server}{NAMESPACE_SEPARATOR}{tool}")[:64]
        if name in names:
            digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
            name = f"{name[: 64 - 9]}_{digest}"
        names.append(name)
    return names


def _clean(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)


def _object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The API wants an object schema; a server's may lack ``type`` (or ``properties``, for OpenAI)."""
    cleaned = dict(schema)
    cleaned.setdefault("type", "object")
    if cleaned["type"] == "object":
        cleaned.setdefault("properties", {})
    return cleaned


def _result_text(result: types.CallToolResult) -> ToolResult:
    """A result as text for the model; pictures and binary resources are named, not sent."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            parts.append(f"[{block.type} ({block.mime_type}) left out]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource {block.uri}{f' ({block.name})' if block.name else ''}]")
        elif isinstance(block, types.EmbeddedResource):
            contents = block.resource
            text = getattr(contents, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {contents.uri} (binary) left out]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolResult("\n".join(parts), is_error=result.is_error)


def describe(error: BaseException, refusals: Sequence[str] = ()) -> str:
    """The innermost causes of a failure, one line each (anyio wraps transport errors in groups),
    after the HTTP statuses that the server refused requests with."""
    leaves = list(_leaves(error))
    seen: list[str] = list(dict.fromkeys(refusals))
    for leaf in leaves:
        line = _one_line(leaf)
        if line not in seen:
            seen.append(line)
    return "; ".join(seen[:3])


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _one_line(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, MCPError):
        return f"MCP error {error.code}: {error.error.message}"
    if isinstance(error, FileNotFoundError):
        return f"cannot start the command: {error.filename or error}"
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


@dataclass(frozen=True, slots=True)
class Probe:
    """What one connection to a server showed (``chatbridge check``)."""

    tools: tuple[McpTool, ...] = ()
    listed: tuple[str, ...] = ()


class McpUnreachable(Exception):
    """A server could not be connected to or listed; the message says why, without secrets."""


async def probe(name: str, settings: McpConnectionSettings, *, timeout_s: float = 10.0) -> Probe:
    """Connect once, read the tools, disconnect."""
    refusals: list[str] = []
    redact = Redactor([v.get_secret_value() for v in (*settings.headers.values(), *settings.env.values())])
    try:
        async with connect(settings, timeout_s=timeout_s, refusals=refusals) as client:
            with anyio.fail_after(timeout_s):
                listed = await list_tools(client)
    except Exception as exc:  # noqa: BLE001 - every failure is reported as one line
        raise McpUnreachable(redact(describe(exc, refusals))) from None
    return Probe(tools=tools_of(name, settings, listed), listed=tuple(tool.name for tool in listed))
