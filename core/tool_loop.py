"""The tool loop of one turn (design section 10): the model's requests for tools, answered until it
answers in text.

A round is one model request that comes back with tool calls, and running those calls (at once, when
the model asks for several). After ``max_rounds`` rounds the model is asked once more without tools,
so a model that keeps calling tools still ends with an answer. A call never fails the turn: bad
arguments, a refusal, a declined confirmation, a failure or a timeout each become an error result
that the model reads and can answer about.

A tool that is not read-only runs only once the user who wrote the message confirmed it. The engine
asks through the channel, if it can (``Confirming``); a channel that cannot ask, or a turn answered
again after a restart (its question, if one was showing, died with the process), counts as declined.

What the turn used of tools (``ToolReply.steps``) is stored with the answer, as part of its turn
group; results longer than ``RESULT_CAP_CHARS`` are cut, with a note saying so, before the model
sees them, so what is stored is what was sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bots.errors import ContextTooLong, ModelError
from bots.model import ChatMessage, ChatModel, ModelReply, TextSink, ToolCall, ToolSpec, Usage
from bots.parts import text_of
from bots.tools import ToolResult, argument_error_result, assistant_message, tool_message
from core import texts
from core.channel import ReplyChannel
from core.tools import ToolBox

log = logging.getLogger("chatbridge.tools")

RESULT_CAP_CHARS = 16_000
"""Longest tool result the model is sent (and stored); a page of text is far less, a dump is more."""
ARGUMENTS_SHOWN = 80
"""How much of a call's arguments the status line and the confirmation question show."""
CONFIRM_GRACE_S = 5.0
"""How much longer than ``timeout_s`` the engine waits for a channel's own answer to a confirmation."""

DECLINED = "error: the user declined this call; it was not run. Do not call it again unless they ask."
NOT_ASKED = "error: this call needs the user's confirmation, which cannot be asked here; it was not run."
PENDING_AT_RESTART = (
    "error: the bridge restarted while this call waited for the user's confirmation; that counts as "
    "declined and it was not run. Tell the user, who can ask again."
)


class ToolResultsTooLong(ModelError):
    """The server refused a request as too long once tools had run. Deliberately not a
    ``ContextTooLong``: the engine would trim the history and start the turn again, running (and
    asking for) the same tools a second time; the user is told the message was too long instead."""

    kind = ContextTooLong.kind


@runtime_checkable
class Confirming(Protocol):
    """A ``ReplyChannel`` that can ask its chat a yes/no question with buttons (or y/n on a console)."""

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        """Ask ``question``; True only when ``asker`` (``platform:id``) said yes within ``timeout_s``.
        Presses by anyone else are answered with ``texts.TOOL_CONFIRM_NOT_YOURS`` and not counted;
        the question's message is left showing what was decided."""
        ...


@runtime_checkable
class AppendOnly(Protocol):
    """A ``ReplyChannel`` that cannot take back what it showed (the console on a pipe): the status
    line would stay in front of the answer, so it gets none."""

    append_only: bool


@dataclass(frozen=True, slots=True)
class ToolTurn:
    """What the loop needs of the turn it runs in."""

    tools: ToolBox
    offered: Sequence[ToolSpec]
    user: str
    chat: str
    channel: ReplyChannel
    show_status: Callable[[str], Awaitable[None]]
    """Shows a line in the reply being streamed; the answer replaces it."""
    count: Callable[[str], int]
    """Token estimate, for rounds whose server sent no usage figures."""
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class ToolReply:
    reply: ModelReply
    """The last reply, the answer; its ``usage`` is summed over every round."""
    steps: tuple[ChatMessage, ...]
    rounds: int


async def reply_with_tools(
    model: ChatModel,
    messages: Sequence[ChatMessage],
    on_text: TextSink,
    turn: ToolTurn,
    *,
    temperature: float | None,
) -> ToolReply:
    steps: list[ChatMessage] = []
    prompt = completion = 0
    for _ in range(turn.tools.max_rounds):
        reply = await _ask(model, [*messages, *steps], on_text, turn.offered, temperature, after_tools=bool(steps))
        used = _usage(reply, [*messages, *steps], turn.count)
        prompt, completion = prompt + used.prompt_tokens, completion + used.completion_tokens
        if not reply.tool_calls:  # without rounds the reply is as the server sent it, for calibration
            return ToolReply(_with_usage(reply, prompt, completion) if steps else reply, tuple(steps), _rounds(steps))
        steps.append(assistant_message(reply.text, reply.tool_calls))
        await turn.show_status("\n\n".join(_status(call) for call in reply.tool_calls))
        results = await asyncio.gather(*(_run(call, turn) for call in reply.tool_calls))
        steps += [tool_message(call, _capped(result)) for call, result in zip(reply.tool_calls, results, strict=True)]
    reply = await _ask(model, [*messages, *steps], on_text, (), temperature, after_tools=bool(steps))
    used = _usage(reply, [*messages, *steps], turn.count)
    final = _with_usage(reply, prompt + used.prompt_tokens, completion + used.completion_tokens)
    return ToolReply(final, tuple(steps), _rounds(steps))


async def _ask(
    model: ChatModel,
    messages: Sequence[ChatMessage],
    on_text: TextSink,
    tools: Sequence[ToolSpec],
    temperature: float | None,
    *,
    after_tools: bool,
) -> ModelReply:
    try:
        return await model.reply(messages, on_text, tools=tools, temperature=temperature)
    except ContextTooLong as refused:
        if after_tools:
            raise ToolResultsTooLong(refused.detail) from None
        raise


async def _run(call: ToolCall, turn: ToolTurn) -> ToolResult:
    if call.argument_error is not None:
        return argument_error_result(call)
    if turn.tools.needs_confirmation(call.name):
        refusal = await _unconfirmed(call, turn)
        if refusal is not None:
            return refusal
    return await turn.tools.call(call.name, call.arguments, user=turn.user, chat=turn.chat)


async def _unconfirmed(call: ToolCall, turn: ToolTurn) -> ToolResult | None:
    """None when the asker allowed the call; otherwise the result the model gets instead."""
    if turn.recovered:
        return ToolResult(PENDING_AT_RESTART, is_error=True)
    if not isinstance(turn.channel, Confirming):
        return ToolResult(NOT_ASKED, is_error=True)
    timeout_s = turn.tools.timeout_s
    question = texts.TOOL_CONFIRM_QUESTION.format(
        tool=call.name, arguments=_shown(call), asker=turn.user, seconds=f"{timeout_s:g}"
    )
    try:
        async with asyncio.timeout(timeout_s + CONFIRM_GRACE_S):
            allowed = await turn.channel.confirm(question, turn.user, timeout_s)
    except TimeoutError:
        allowed = False
    except Exception as exc:  # noqa: BLE001 - a platform failing to ask counts as no, never as yes
        log.warning("could not ask to confirm %s: %s", call.name, type(exc).__name__)
        allowed = False
    return None if allowed else ToolResult(DECLINED, is_error=True)


def steps_tokens(steps: Sequence[ChatMessage], count: Callable[[str], int]) -> int:
    """What the calls (their arguments) and results of a turn add to its stored token count."""
    total = 0
    for step in steps:
        total += count(text_of(step["content"]))
        for call in step.get("tool_calls", ()):
            total += count(call["function"]["name"]) + count(call["function"]["arguments"])
    return total


def _status(call: ToolCall) -> str:
    return texts.TOOL_STATUS.format(tool=call.name, arguments=_shown(call))


def _shown(call: ToolCall) -> str:
    text = call.arguments_json.strip() or "{}"
    return text if len(text) <= ARGUMENTS_SHOWN else f"{text[:ARGUMENTS_SHOWN]}…"


def _capped(result: ToolResult) -> ToolResult:
    if len(result.text) <= RESULT_CAP_CHARS:
        return result
    note = f"\n[cut: the result had {len(result.text)} characters; only the first {RESULT_CAP_CHARS} are shown]"
    return ToolResult(result.text[:RESULT_CAP_CHARS] + note, result.is_error)


def _rounds(steps: Sequence[ChatMessage]) -> int:
    return sum(1 for step in steps if step["role"] == "assistant")


def _usage(reply: ModelReply, sent: Sequence[ChatMessage], count: Callable[[str], int]) -> Usage:
    """The server's figures for one request, else an estimate: every round is paid for, so every
    round counts against the budgets. The estimate counts text only: pictures in the request are
    left out of it (the server's figures, when sent, include them)."""
    if reply.usage is not None:
        return reply.usage
    asked = "".join(call.arguments_json for call in reply.tool_calls)
    return Usage(sum(count(text_of(message["content"])) for message in sent), count(reply.text + asked))


def _with_usage(reply: ModelReply, prompt: int, completion: int) -> ModelReply:
    return ModelReply(reply.text, reply.finish_reason, Usage(prompt, completion), reply.tool_calls)
