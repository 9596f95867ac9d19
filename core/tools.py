"""What the engine sees of tools (design section 10): the tools one user may be offered in one chat,
a call bounded in time whose failures come back as results, and whether a call needs confirming.

Access is decided here, where chats are known, before a tool is offered and again before it runs
(a model may name a tool it was never offered): ``tools.allow_users`` for every tool, and each MCP
server's own ``allow_users`` and ``allow_chats`` for its tools. Admins get no exception: tools reach
other systems, and who may do that is said in these lists alone. Tool output is only ever returned
as text for the model; nothing here reads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from bots.model import ToolSpec
from bots.tools import ToolResult, ToolSource
from core.tool_settings import McpServerSettings, ToolsSettings

logger = logging.getLogger("chatbridge.tools")

Outcome = Literal["ok", "error", "timeout", "refused"]
CallObserver = Callable[[str, str, Outcome, float], None]
"""Told of each call: source (server name or ``builtin``), tool name, outcome, seconds (for metrics)."""


class ToolBox(Protocol):
    @property
    def max_rounds(self) -> int:
        """``tools.max_rounds``: model requests answered with tool calls in one turn."""
        ...

    @property
    def timeout_s(self) -> float:
        """``tools.timeout_s``: for one call, and for a confirmation."""
        ...

    def offered(self, user: str, chat: str) -> Sequence[ToolSpec]:
        """The tools to offer the model for a message of ``user`` in ``chat`` (identities
        ``platform:id``); empty when tools are off or none is allowed there."""
        ...

    def needs_confirmation(self, name: str) -> bool:
        """Whether the writer of the message must confirm a call of ``name`` before it runs
        (``tools.confirm``; an unknown tool counts as writing)."""
        ...

    async def call(self, name: str, arguments: Mapping[str, Any], *, user: str, chat: str) -> ToolResult:
        """Run a tool for ``user`` in ``chat``, within ``tools.timeout_s``. Never raises for the
        tool's sake: a refusal, a failure or a timeout is an error result for the model."""
        ...


class NoTools:
    """The ``ToolBox`` when tools are off."""

    max_rounds = 0
    timeout_s = 0.0

    def offered(self, user: str, chat: str) -> Sequence[ToolSpec]:
        return ()

    def needs_confirmation(self, name: str) -> bool:
        return True

    async def call(self, name: str, arguments: Mapping[str, Any], *, user: str, chat: str) -> ToolResult:
        return ToolResult(f"error: no tool named {name} is available here", is_error=True)


class Tools:
    """The ``ToolBox`` over the configured sources (the MCP servers, the built-in tools)."""

    def __init__(
        self,
        settings: ToolsSettings,
        servers: Mapping[str, McpServerSettings],
        sources: Sequence[ToolSource],
        *,
        on_call: CallObserver | None = None,
    ) -> None:
        self._settings = settings
        self._servers = servers
        self._sources = sources
        self._on_call = on_call

    @property
    def max_rounds(self) -> int:
        return self._settings.max_rounds

    @property
    def timeout_s(self) -> float:
        return self._settings.timeout_s

    def offered(self, user: str, chat: str) -> Sequence[ToolSpec]:
        return [spec for source in self._sources for spec in source.specs() if self._allowed(spec, user, chat)]

    def needs_confirmation(self, name: str) -> bool:
        if self._settings.confirm == "never":
            return False
        if self._settings.confirm == "always":
            return True
        known = self._known(name)
        return known is None or not known[0].read_only

    async def call(self, name: str, arguments: Mapping[str, Any], *, user: str, chat: str) -> ToolResult:
        found = self._known(name)
        if found is None or not self._allowed(found[0], user, chat):
            self._observe(found[0].source if found else "unknown", name, "refused", 0.0)
            return ToolResult(f"error: no tool named {name} is available here", is_error=True)
        spec, source = found
        started = time.monotonic()
        outcome: Outcome = "error"
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                result = await source.call(name, arguments)
            outcome = "error" if result.is_error else "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            return ToolResult(f"error: {name} did not finish within {self._settings.timeout_s:g} s", is_error=True)
        except Exception as exc:  # noqa: BLE001 - a broken tool must not fail the turn; the model is told
            # Its message and traceback may hold the arguments, which are logged only at debug level.
            logger.warning("tool %s failed: %s", name, type(exc).__name__)
            logger.debug("tool %s failed", name, exc_info=True)
            return ToolResult(f"error: {name} failed ({type(exc).__name__})", is_error=True)
        finally:
            self._observe(spec.source, name, outcome, time.monotonic() - started)

    def _known(self, name: str) -> tuple[ToolSpec, ToolSource] | None:
        for source in self._sources:
            spec = source.spec(name)
            if spec is not None:
                return spec, source
        return None

    def _allowed(self, spec: ToolSpec, user: str, chat: str) -> bool:
        if not self._settings.enabled or not _listed(user, self._settings.allow_users):
            return False
        server = self._servers.get(spec.source)
        return server is None or (_listed(user, server.allow_users) and _listed(chat, server.allow_chats))

    def _observe(self, source: str, name: str, outcome: Outcome, seconds: float) -> None:
        if self._on_call is not None:
            self._on_call(source, name, outcome, seconds)


def _listed(identity: str, allowed: Sequence[str]) -> bool:
    return not allowed or identity in allowed
