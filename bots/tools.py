"""The tools API of chat completions: the tools offered, the calls a reply asks for, the results sent back.

A model asks for tools by name with its arguments as a JSON text. Streamed, each call arrives in
pieces (``delta.tool_calls``), each piece naming the call's ``index``: the first piece of a call
brings its ``id`` and name, later ones bring fragments of the arguments; several calls of one round
(parallel calls) may come one after the other or interleaved. ``ToolCallAssembler`` puts them back
together by index. Arguments that are not a JSON object do not raise: the call carries an
``argument_error`` that the tool loop sends back to the model as the call's result, so that the
model can correct itself instead of the whole turn failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bots.model import ChatMessage, ToolCall, ToolCallEntry, ToolSpec

ARGUMENTS_SHOWN_IN_ERRORS = 200
"""How much of malformed arguments an error result repeats to the model."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool gave back, as text for the model; ``is_error`` when it failed or was refused."""

    text: str
    is_error: bool = False


class ToolSource(Protocol):
    """Something that has tools: the MCP servers, a built-in tool. It knows nothing of chats or
    users: who may see which tool is decided above it, in ``core.tools``."""

    def specs(self) -> Sequence[ToolSpec]:
        """The tools it offers now (an MCP server that is down offers none)."""
        ...

    def spec(self, name: str) -> ToolSpec | None:
        """A tool by name, also one not offered at the moment (its server is reconnecting): a
        call asked for just before is still made, and waits for the server."""
        ...

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run one of its tools. Failures of the tool come back as an error result; this raises only
        for what the caller did wrong (a name it does not have: ``KeyError``)."""
        ...


# --- the wire shapes ---------------------------------------------------------------------------


def request_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [tool.request_entry() for tool in tools]


def assistant_message(text: str, calls: Sequence[ToolCall]) -> ChatMessage:
    """The assistant's turn that asked for ``calls``: it goes into the next request before the results."""
    entries: list[ToolCallEntry] = [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
        for call in calls
    ]
    return ChatMessage(role="assistant", content=text, tool_calls=entries)


def tool_message(call: ToolCall, result: ToolResult) -> ChatMessage:
    """The result of one call, answering it by its id."""
    return ChatMessage(role="tool", content=result.text, tool_call_id=call.id)


def argument_error_result(call: ToolCall) -> ToolResult:
    """What the model is told instead of running a call whose arguments could not be read."""
    shown = call.arguments_json[:ARGUMENTS_SHOWN_IN_ERRORS]
    return ToolResult(f"error: the arguments of {call.name} are not usable ({call.argument_error}): {shown}", True)


# --- reading replies ---------------------------------------------------------------------------


def parse_call(call_id: str, name: str, arguments_json: str) -> ToolCall:
    """A call with its arguments parsed; an empty text means no arguments (some servers send "")."""
    if not arguments_json.strip():
        return ToolCall(call_id, name, arguments_json, {})
    try:
        arguments = json.loads(arguments_json)
    except ValueError as exc:
        return ToolCall(call_id, name, arguments_json, {}, f"not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name, arguments_json, {}, f"not a JSON object but {type(arguments).__name__}")
    return ToolCall(call_id, name, arguments_json, arguments)


def calls_of_message(message: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    """The calls of a non-streamed reply's ``message``; entries without a function name are skipped."""
    entries = message.get("tool_calls")
    if not isinstance(entries, list):
        return ()
    calls = []
    for position, entry in enumerate(entries):
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers (older Ollama) send an object, not its text
            arguments = json.dumps(arguments)
        calls.append(parse_call(_call_id(entry, position), function["name"], arguments or ""))
    return tuple(calls)


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Puts streamed ``delta.tool_calls`` pieces back together by their ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def add(self, pieces: object) -> None:
        """Record the ``tool_calls`` of one delta (anything that is not a list of pieces is ignored)."""
        if not isinstance(pieces, list):
            return
        for piece in pieces:
            if not isinstance(piece, dict):
                continue
            partial = self._partial(piece)
            if isinstance(piece.get("id"), str) and piece["id"]:
                partial.id = piece["id"]
            function = piece.get("function")
            if isinstance(function, dict):
                # The name comes whole in a call's first piece; some servers repeat it in later ones.
                if isinstance(function.get("name"), str) and not partial.name:
                    partial.name = function["name"]
                if isinstance(function.get("arguments"), str):
                    partial.arguments.append(function["arguments"])

    def _partial(self, piece: Mapping[str, Any]) -> _PartialCall:
        """The call a piece belongs to: by its ``index``; without one (a few servers send each call
        whole in one piece) a piece with a new id starts the next call, one without continues the last."""
        index = piece.get("index")
        if not isinstance(index, int):
            last = max(self._calls, default=None)
            starts = last is None or (bool(piece.get("id")) and piece.get("id") != self._calls[last].id)
            index = 0 if last is None else last + 1 if starts else last
        return self._calls.setdefault(index, _PartialCall())

    def result(self) -> tuple[ToolCall, ...]:
        return tuple(
            parse_call(partial.id or f"call_{index}", partial.name, "".join(partial.arguments))
            for index, partial in sorted(self._calls.items())
            if partial.name
        )


def _call_id(entry: Mapping[str, Any], position: int) -> str:
    call_id = entry.get("id")
    return call_id if isinstance(call_id, str) and call_id else f"call_{position}"
