"""Real MCP servers for tests, built with the ``mcp`` package's ``MCPServer``.

``HttpMcpServer`` serves them over streamable HTTP on 127.0.0.1 in the test's own process (uvicorn),
optionally only to requests with a given header, and can be stopped and started again on the same
port. Run as a script, this file is a stdio server (``python tests/fakes/mcp_servers.py``); it then
imports nothing of the project, since a stdio server gets only a minimal environment (no PYTHONPATH).

The tools: ``lookup`` (read-only), ``add_note`` (writes: every call is counted), ``slow`` (read-only,
sleeps), ``fail`` (raises), ``get.weather`` (a name the chat API refuses as it is), ``exit_now``
(the process ends, as a crashing stdio server does), ``env`` and ``pid``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)


@dataclass
class Notes:
    """What the writing tool did, shared by every incarnation of an HTTP server."""

    texts: list[str] = field(default_factory=list)


def build_server(notes: Notes | None = None) -> MCPServer:
    notes = notes if notes is not None else Notes()
    server = MCPServer("chatbridge-test", log_level="WARNING")  # its INFO lines flooded the benchmark table

    @server.tool(annotations=READ_ONLY)
    def lookup(query: str) -> str:
        """Look a word up."""
        return f"found: {query}"

    @server.tool()
    def add_note(text: str) -> str:
        """Write a note down."""
        notes.texts.append(text)
        return f"noted ({len(notes.texts)})"

    @server.tool(annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        """Take a while."""
        await asyncio.sleep(seconds)
        return "done"

    @server.tool()
    def fail() -> str:
        """Always fails, saying why (as a tool reports a failure it expected)."""
        raise ToolError("the tool broke")

    @server.tool(name="get.weather", annotations=READ_ONLY)
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @server.tool()
    def exit_now() -> str:
        """End the server's process."""
        os._exit(3)

    @server.tool(annotations=READ_ONLY)
    def env(name: str) -> str:
        """One variable of the server's environment."""
        return os.environ.get(name, "<unset>")

    @server.tool(annotations=READ_ONLY)
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    return server


class HttpMcpServer:
    """``build_server`` over streamable HTTP at ``url``; ``headers_seen`` records each request's headers."""

    def __init__(self, *, require: tuple[str, str] | None = None) -> None:
        self.notes = Notes()
        self.headers_seen: list[dict[str, str]] = []
        self._require = require
        self._port = _free_port()
        self.url = f"http://127.0.0.1:{self._port}/mcp"
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import uvicorn

        app = build_server(self.notes).streamable_http_app()
        config = uvicorn.Config(self._guard(app), host="127.0.0.1", port=self._port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the MCP test server stopped at start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    async def __aenter__(self) -> HttpMcpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _guard(self, app: Any) -> Any:
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
                self.headers_seen.append(headers)
                if self._require is not None and headers.get(self._require[0].lower()) != self._require[1]:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await app(scope, receive, send)

        return guarded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


STDIO_SCRIPT = os.path.abspath(__file__)
"""Run with ``sys.executable`` as a stdio server's command."""


if __name__ == "__main__":
    build_server().run("stdio")
    sys.exit(0)
