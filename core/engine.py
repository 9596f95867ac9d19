"""The engine: one incoming event in, at most one answer out, following design section 2.

The order of the checks differs from the design's list in two respects, on purpose. The pure checks
(bot authors, whether the message addresses the bot at all) run before anything touches the store:
group chatter that is not for the bot costs no store round trip, and a denied user is only ever told
so when they actually addressed the bot. And a prompt's dedupe, access and rate checks are one store
call together with queueing it (``Store.admit``), one round trip before the model call in a shared
store; commands and refused prompts are checked on their own, then answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bots.errors import (
    ContextTooLong,
    ModelError,
)
from bots.model import ChatModel, ModelReply, TextSink
from core import texts
from core.access import AccessPolicy
from core.arrivals import Arrivals, Ticket
from core.channel import ReplyChannel
from core.commands import CommandContext, Commands, CommandSpec, command_list
from core.events import IncomingMessage
from core.observe import NULL_OBSERVER, MessageRecord, Observer
from core.render import StreamRenderer, send_text, typing_indicator
from core.sessions import session_key
from core.settings import AccessSettings, BotSettings, ContextSettings, LimitsSettings, OnDenied, SessionSettings
from core.store import (
    AccessDecision,
    Admission,
    PendingMessage,
    SessionState,
    StaleLease,
    Store,
    StoreUnavailable,
    Turn,
    UsageDelta,
    Verdict,
)
from core.tokens import TokenCounter
from core.triggers import Addressed, CommandName, address
from core.usage import RunningTotals, day_of
from core.window import Budget, Window, build_window

log = logging.getLogger("chatbridge.engine")

DEDUPE_TTL_S = 6 * 3600.0
"""Platform redeliveries (Slack retries, webhook retries, gateway replays) come within minutes."""
DENIED_NOTICE_TTL_S = 24 * 3600.0
"""A denied user is told at most once a day, so the bot cannot be used to spam a chat."""
RATE_WINDOW_S = 60.0


class Outcome(StrEnum):
    ANSWERED = "answered"
    JOINED = "joined"
    COMMAND = "command"
    DUPLICATE = "duplicate"
    IGNORED_BOT = "ignored_bot"
    NOT_ADDRESSED = "not_addressed"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"


_QUIET_OUTCOMES = frozenset({Outcome.IGNORED_BOT, Outcome.NOT_ADDRESSED})


@dataclass(frozen=True, slots=True)
class EngineSettings:
    bot: BotSettings
    context: ContextSettings
    session: SessionSettings
    access: AccessSettings
    limits: LimitsSettings
    lease_ttl_s: float = 300.0
    """How long a crashed holder can block a session in a shared store; longer than any model call."""
    extra_admins: tuple[str, ...] = ()
    log_content: bool = False
    """Put the message and reply texts into the per-message log line (``log.content``)."""


@dataclass(slots=True)
class _Handled:
    """What one message came to, for the log line and the observer."""

    outcome: Outcome
    session: str = "-"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    model_s: float | None = None
    first_token_s: float | None = None
    reply: str = ""


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        model: ChatModel,
        tokens: TokenCounter,
        settings: EngineSettings,
        clock: Callable[[], float] = time.time,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self._model = model
        self._tokens = tokens
        self._settings = settings
        self._clock = clock
        self._access = AccessPolicy(settings.access, settings.extra_admins)
        self._system_prompt = settings.bot.system_prompt
        self._system_tokens = tokens.count(self._system_prompt)
        self.totals = RunningTotals()
        self._commands = Commands(
            store=store,
            access=self._access,
            bot=settings.bot,
            session=settings.session,
            totals=self.totals,
            clear_session=self.clear_session,
            clock=clock,
        )
        self._command_list = command_list(settings.bot)
        self._arrivals = Arrivals()
        self._closing = False

    # --- public API -----------------------------------------------------------------------------

    async def handle(self, message: IncomingMessage, channel: ReplyChannel) -> Outcome:
        """Process one incoming message to the end; never raises for a problem of this one message."""
        if self._closing:
            return Outcome.SHUTTING_DOWN
        started = time.monotonic()
        handled = _Handled(Outcome.FAILED)
        try:
            handled = await self._handle(message, channel)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            handled = _Handled(Outcome.UNAVAILABLE, error="store_unavailable")
            await self._reply_quietly(channel, texts.TEMPORARILY_UNAVAILABLE)
        except asyncio.CancelledError:
            handled = _Handled(Outcome.SHUTTING_DOWN)
            raise
        except Exception:
            log.exception("unexpected error while handling a %s message", message.platform)
            handled = _Handled(Outcome.FAILED, error="internal")
            await self._reply_quietly(channel, texts.INTERNAL_ERROR)
        finally:
            self._report(message, handled, time.monotonic() - started)
        return handled.outcome

    async def clear_session(self, key: str) -> bool:
        """Clear under the session's lease, so a reset lands between turns, never inside one."""
        async with self._store.lease(key, self._settings.lease_ttl_s):
            return await self._store.clear_session(key)

    @property
    def commands(self) -> tuple[CommandSpec, ...]:
        """Every command users can send, for the platforms' command menus."""
        return self._command_list

    def close(self) -> None:
        """Take no new messages from now on (shutdown); those being answered go on to the end.

        Waiting for them, and cancelling what outlives the grace period, is the adapters' part:
        they know which updates are theirs.
        """
        self._closing = True

    # --- the pipeline ---------------------------------------------------------------------------

    async def _handle(self, message: IncomingMessage, channel: ReplyChannel) -> _Handled:
        """Design section 2 in order; the numbers are the design's steps (see the module docstring
        for why the pure checks 2 and 4 come first)."""
        if message.from_bot:  # 2. ignore bots, the bridge itself included
            return _Handled(Outcome.IGNORED_BOT)
        addressed = address(message, self._settings.bot)  # 4. trigger
        if addressed is None:
            return _Handled(Outcome.NOT_ADDRESSED)
        key = session_key(message, self._settings.session.scope)  # 8. which session it belongs to
        ticket = self._arrivals.ticket(key)
        try:
            refusal = self._refusal(addressed.text) if addressed.command is None else None
            if addressed.command is None and refusal is None:
                # 1, 3, 6, 7, 8: dedupe, access, rate limit, queue and session lease are one store
                # step; then 10-12: window, model call, delivery and commit.
                return await self._take_turn(message, addressed, key, ticket, channel)
            # 1, 3: dedupe and access; then 5: the command, or the prompt's refusal.
            return await self._answer_directly(message, addressed, key, ticket, channel, refusal)
        finally:
            ticket.give_back()

    async def _answer_directly(
        self,
        message: IncomingMessage,
        addressed: Addressed,
        key: str,
        ticket: Ticket,
        channel: ReplyChannel,
        refusal: str | None,
    ) -> _Handled:
        """A command or a refused prompt: answered without the model, after the checks every message
        gets, in the session's arrival order."""
        first, overrides = await self._store.first_seen_with_access(f"msg:{message.dedupe_key}", DEDUPE_TTL_S)
        if not first:
            return _Handled(Outcome.DUPLICATE)
        if not self._allowed(message, overrides):
            await self._tell_denied(message, addressed, key, channel)
            return _Handled(Outcome.DENIED, key)
        await ticket.wait_for_earlier()
        if addressed.command is not None:
            is_admin = self._access.is_admin(message.user_id)
            context = CommandContext(message=message, session_key=key, is_admin=is_admin)
            await send_text(channel, await self._commands.run(addressed.command, context))
            return _Handled(Outcome.COMMAND, key)
        assert refusal is not None  # only commands and refused prompts come this way
        await send_text(channel, refusal)
        return _Handled(Outcome.REFUSED, key)

    def _allowed(self, message: IncomingMessage, overrides: Mapping[str, AccessDecision]) -> bool:
        return self._access.allows(message.user_id, message.chat_id, private=message.is_private, overrides=overrides)

    async def _tell_denied(
        self, message: IncomingMessage, addressed: Addressed, key: str, channel: ReplyChannel
    ) -> None:
        """Denied users learn their identity through /id (to ask an admin) and are told "no" once."""
        if self._settings.access.on_denied is not OnDenied.REPLY:
            return
        command = addressed.command
        if command is not None and command.name is CommandName.ID:
            await send_text(channel, texts.identity_card(message.user_id, message.chat_id, key))
        elif await self._store.first_seen(f"denied-notice:{message.user_id}", DENIED_NOTICE_TTL_S):
            await send_text(channel, texts.DENIED)

    def _refusal(self, text: str) -> str | None:
        if not text:
            return texts.EMPTY_PROMPT
        limit = self._settings.bot.max_input_chars
        if len(text) > limit:
            return texts.MESSAGE_TOO_LONG.format(size=len(text), limit=limit)
        return None

    async def _take_turn(
        self, message: IncomingMessage, addressed: Addressed, key: str, ticket: Ticket, channel: ReplyChannel
    ) -> _Handled:
        """Check the prompt, queue it, then, holding the session, answer everything queued as one turn.

        The checks (dedupe, access, rate limit) and the queueing are one store call, made once every
        earlier message of the session has been queued, so the queue keeps arrival order. Whoever
        holds the lease answers all waiting messages of the session at once; a handler that finds the
        queue empty was answered together with an earlier message.
        """
        await ticket.wait_for_earlier()
        limits = self._settings.limits
        admission = Admission(
            dedupe_key=f"msg:{message.dedupe_key}",
            dedupe_ttl_s=DEDUPE_TTL_S,
            allowed=lambda overrides: self._allowed(message, overrides),
            rate_key=f"rate:{message.user_id}",
            rate_window_s=RATE_WINDOW_S,
            rate_limit=max(limits.user_messages_per_minute, 0),
            session_key=key,
            lease_ttl_s=self._settings.lease_ttl_s,
            item=PendingMessage(message.dedupe_key, message.user_id, addressed.text, message.received_at),
            max_turns=self._settings.context.max_messages,
            on_queued=ticket.give_back,
        )
        async with self._store.admit(admission) as admitted:
            held = admitted.held
            if held is not None:
                if not held.waiting:
                    return _Handled(Outcome.JOINED, key)
                return await self._answer(message, key, held.fence, held.waiting, held.state, channel)
        # Refusals are sent after the store call has ended, so that nothing is held meanwhile.
        match admitted.verdict:
            case Verdict.DUPLICATE:
                return _Handled(Outcome.DUPLICATE)
            case Verdict.DENIED:
                await self._tell_denied(message, addressed, key, channel)
                return _Handled(Outcome.DENIED, key)
            case _:  # Verdict.RATE_LIMITED: a held session was answered above
                await send_text(channel, texts.RATE_LIMITED.format(limit=limits.user_messages_per_minute))
                return _Handled(Outcome.RATE_LIMITED, key)

    async def _answer(
        self,
        message: IncomingMessage,
        key: str,
        fence: int,
        waiting: list[PendingMessage],
        state: SessionState | None,
        channel: ReplyChannel,
    ) -> _Handled:
        now = self._clock()
        history = await self._history(key, now, state)
        text = "\n".join(item.text for item in waiting)
        user_turn = Turn("user", text, self._tokens.count(text), now)
        budget = self._budget()
        window = build_window(self._system_prompt, self._system_tokens, history, user_turn, budget)
        if window is None:
            await send_text(channel, texts.MESSAGE_OVER_CONTEXT)
            return _Handled(Outcome.REFUSED, key)

        streamed: list[str] = []
        renderer = StreamRenderer(channel)
        timing = _ModelTiming()

        async def on_text(delta: str) -> None:
            timing.text_arrived()
            streamed.append(delta)
            await renderer.push(delta)

        try:
            async with typing_indicator(channel):
                reply, window = await self._call_model(window, history, user_turn, budget, on_text)
        except ModelError as error:
            timing.done()
            log.warning("model call failed for %s: %s: %s", key, type(error).__name__, error.detail)
            await self._record_usage(UsageDelta(day_of(now), message.user_id, message.chat_id, errors=1))
            notice = texts.MODEL_ERRORS[error.kind]
            partial = "".join(streamed)
            await renderer.finish(f"{partial}\n\n{notice}" if partial else notice)
            return _Handled(
                Outcome.FAILED,
                key,
                error=error.kind,
                model_s=timing.model_s,
                first_token_s=timing.first_token_s,
            )
        timing.done()

        if not reply.text.strip():
            await renderer.finish(texts.EMPTY_REPLY)
            return _Handled(
                Outcome.FAILED, key, error="empty_reply", model_s=timing.model_s, first_token_s=timing.first_token_s
            )
        shown = reply.text if reply.finish_reason != "length" else f"{reply.text}\n\n{texts.CUT_AT_LENGTH}"
        await renderer.finish(shown)

        assistant_turn = Turn("assistant", reply.text, self._tokens.count(reply.text), self._clock())
        prompt, completion = self._usage_figures(reply, window, assistant_turn)
        delta = UsageDelta(day_of(now), message.user_id, message.chat_id, len(waiting), prompt, completion)
        try:
            await self._store.finish_turn(
                key, [user_turn, assistant_turn], fence, self._settings.session.timeout_s, delta
            )
        except StaleLease:
            log.error("session %s was taken over while answering; this turn was not stored", key)
            return _Handled(
                Outcome.FAILED, key, error="stale_lease", model_s=timing.model_s, first_token_s=timing.first_token_s
            )
        self.totals.add(delta)
        return _Handled(
            Outcome.ANSWERED,
            key,
            prompt,
            completion,
            model_s=timing.model_s,
            first_token_s=timing.first_token_s,
            reply=reply.text,
        )

    async def _history(self, key: str, now: float, state: SessionState | None) -> list[Turn]:
        """The stored turns a window may use; an idle-expired session is cleared and starts fresh."""
        if state is None:
            return []
        if now - state.last_active > self._settings.session.timeout_s:
            await self._store.clear_session(key)
            return []
        return state.turns

    def _budget(self) -> Budget:
        context = self._settings.context
        return Budget(context.max_tokens, context.max_messages, self._tokens.message_overhead, self._tokens.scaled)

    async def _call_model(
        self, window: Window, history: list[Turn], user_turn: Turn, budget: Budget, on_text: TextSink
    ) -> tuple[ModelReply, Window]:
        """One call; a context-length refusal from the server halves the prompt and retries once."""
        try:
            return await self._model.reply(window.messages, on_text), window
        except ContextTooLong:
            tighter = budget.tighter_than(window)
            smaller = build_window(self._system_prompt, self._system_tokens, history, user_turn, tighter)
            if smaller is None:
                raise
            log.info(
                "server said the context is too long; retrying with %d of %d turns",
                smaller.history_turns,
                window.history_turns,
            )
            return await self._model.reply(smaller.messages, on_text), smaller

    def _usage_figures(self, reply: ModelReply, window: Window, assistant_turn: Turn) -> tuple[int, int]:
        """The server's figures when it sent them (they also calibrate our estimate), else ours."""
        if reply.usage is None:
            return self._tokens.scaled(window.raw_tokens), assistant_turn.tokens
        self._tokens.calibrate(window.raw_tokens, reply.usage.prompt_tokens)
        return reply.usage.prompt_tokens, reply.usage.completion_tokens

    async def _record_usage(self, delta: UsageDelta) -> None:
        self.totals.add(delta)
        await self._store.add_usage(delta)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    async def _reply_quietly(channel: ReplyChannel, text: str) -> None:
        """Best effort: when even the apology cannot be delivered there is nothing more to do."""
        try:
            await send_text(channel, text)
        except Exception as exc:  # noqa: BLE001 - the platform failing here must not mask the cause
            log.warning("could not deliver an error notice: %s", type(exc).__name__)

    def _report(self, message: IncomingMessage, handled: _Handled, elapsed_s: float) -> None:
        """The one log line per message (its fields also as ``extra``, for JSON logs), then the observer.

        Message and reply texts are in it only with ``log_content`` (``log.content: true``).
        """
        fields: dict[str, object] = {
            "platform": message.platform,
            "chat": message.chat_id,
            "session": handled.session,
            "outcome": str(handled.outcome),
            "latency_ms": round(elapsed_s * 1000),
            "tokens_in": handled.prompt_tokens,
            "tokens_out": handled.completion_tokens,
        }
        if handled.error is not None:
            fields["error"] = handled.error
        if self._settings.log_content:
            fields["text"] = message.text
            fields["reply"] = handled.reply
        line = " ".join(
            f"{name}={value!r}" if name in ("text", "reply") else f"{name}={value}" for name, value in fields.items()
        )
        # Chatter that is not for the bot, and the bot's own messages echoed back, are most of a
        # busy group's traffic; they stay countable in the metrics without flooding the log.
        level = logging.DEBUG if handled.outcome in _QUIET_OUTCOMES else logging.INFO
        log.log(level, "handled %s", line, extra=fields)
        try:
            self._observer.message_handled(
                MessageRecord(
                    platform=message.platform,
                    chat_id=message.chat_id,
                    session=handled.session,
                    outcome=str(handled.outcome),
                    latency_s=elapsed_s,
                    prompt_tokens=handled.prompt_tokens,
                    completion_tokens=handled.completion_tokens,
                    error=handled.error,
                    model_s=handled.model_s,
                    first_token_s=handled.first_token_s,
                )
            )
        except Exception:  # noqa: BLE001 - metrics must never break message handling
            log.exception("the observer failed")


class _ModelTiming:
    """How long the model call took, and until its first text was shown (time to first token)."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._first: float | None = None
        self._ended: float | None = None

    def text_arrived(self) -> None:
        if self._first is None:
            self._first = time.monotonic()

    def done(self) -> None:
        self._ended = time.monotonic()

    @property
    def model_s(self) -> float:
        return (self._ended if self._ended is not None else time.monotonic()) - self._started

    @property
    def first_token_s(self) -> float | None:
        return None if self._first is None else self._first - self._started
