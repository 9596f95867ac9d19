"""The engine: one incoming event in, at most one answer out, following design section 2.

The order of the checks differs from the design's list in two respects, on purpose. The pure checks
(bot authors, whether the message addresses the bot at all) run before anything touches the store:
group chatter that is not for the bot costs no store round trip, and a denied user is only ever told
so when they actually addressed the bot. And a prompt's dedupe, access, rate and token-budget
checks are one store call together with queueing it (``Store.admit``), so that processes sharing a
store cannot all let the last message of a budget through; commands and refused prompts are checked
the same way (without a budget) and without being queued, then answered.

Each turn is answered by the model and persona its chat chose (``core.choices``), with the asker's
custom instructions after the persona's prompt; in a session several people share, each user turn
carries who wrote it (``core.sessions.spoken_by``).

A queued prompt stays in the store until the turn that answers it is finished. Whoever holds the
session's lease answers everything queued for it, turn by turn, and a sweep answers queues that
nobody holds (a process that died, a turn that failed halfway), so a message taken is answered once
or its asker told why not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from bots.audio import AudioClient
from bots.audio_settings import Speak
from bots.errors import (
    ContextTooLong,
    ModelError,
)
from bots.model import ChatMessage, ChatModel, ModelCard, ModelCatalog, ModelReply, TextSink
from core import texts
from core.access import AccessPolicy
from core.albums import Albums
from core.arrivals import Arrivals, Ticket, TurnLine
from core.calendar import BudgetCalendar
from core.channel import PlatformTrouble, Receipt, Reopen, ReplyChannel
from core.choices import Choices, TurnChoice
from core.commands import CommandContext, Commands, CommandSpec, command_list
from core.events import Attachment, IncomingMessage, Refetch
from core.lease import LeaseKept
from core.media import Media
from core.media_settings import MediaSettings
from core.observe import NULL_OBSERVER, MessageRecord, Observer
from core.render import StreamRenderer, TypingIndicator, send_text
from core.sessions import session_key, spoken_by
from core.settings import (
    AccessSettings,
    BotSettings,
    ContextSettings,
    LimitsSettings,
    OnDenied,
    PersonaSettings,
    SessionScope,
    SessionSettings,
)
from core.store import (
    OVER_BUDGET,
    AccessDecision,
    Admission,
    BudgetCheck,
    Claim,
    QueuedMessage,
    SessionState,
    StaleLease,
    Store,
    StoreUnavailable,
    Turn,
    TurnResult,
    UsageDelta,
    Verdict,
)
from core.tokens import TokenCounter
from core.tool_loop import AppendOnly, ToolTurn, reply_with_tools, steps_tokens
from core.tools import NoTools, ToolBox
from core.triggers import Addressed, CommandName, address
from core.usage import RunningTotals
from core.window import Budget, SystemPart, Window, build_window

log = logging.getLogger("chatbridge.engine")
_V = TypeVar("_V")

DEDUPE_TTL_S = 6 * 3600.0
"""Platform redeliveries (Slack retries, webhook retries, gateway replays) come within minutes."""
DENIED_NOTICE_TTL_S = 24 * 3600.0
"""A denied user is told at most once a day, so the bot cannot be used to spam a chat."""
RATE_WINDOW_S = 60.0
RECOVERED_PER_SWEEP = 100
"""Orphaned sessions answered per sweep; the next sweep, one lease later, takes the rest."""
UNDELIVERED_KEPT = 10_000
"""Answers kept for a platform that was down when they were complete; the oldest go first."""
UNSTORED_REMEMBERED = 1024
"""Messages answered but not stored (the store was down) whose queue entries are only to be removed."""
KEPT_DELIVERY_BUDGET_S = 10.0
"""A kept answer is tried briefly each time: the platform has been failing, and a chat waits behind it."""
COMMIT_RETRY_FIRST_S = 0.25
COMMIT_RETRY_MAX_S = 5.0


class Outcome(StrEnum):
    ANSWERED = "answered"
    JOINED = "joined"
    COMMAND = "command"
    DUPLICATE = "duplicate"
    IGNORED_BOT = "ignored_bot"
    NOT_ADDRESSED = "not_addressed"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"
    OVER_BUDGET = "over_budget"
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
    lease_s: float = 15.0
    """How long a session stays held after its holder stopped renewing (``store.lease_s``)."""
    delivery_timeout_s: float = 120.0
    """How long delivering an answer, and storing its turn, is retried (``server.delivery_timeout_s``)."""
    max_concurrent: int = 1000
    """Turns answered at once by this process (``server.max_concurrent_messages``); more wait in order."""
    personas: Mapping[str, PersonaSettings] = dataclasses.field(default_factory=dict)
    """``personas`` of the configuration; ``bot.system_prompt`` is the persona ``default``."""
    extra_admins: tuple[str, ...] = ()
    log_content: bool = False
    """Put the message and reply texts into the per-message log line (``log.content``)."""
    media: MediaSettings = dataclasses.field(default_factory=MediaSettings)
    speak: Speak = Speak.NEVER
    """``audio.speak``: when answers are also sent as speech."""


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
    model: str | None = None
    cost_usd: float = 0.0
    limit: str | None = None
    """Which limit refused the message: ``rate``, or the ``user``, ``chat`` or ``total`` token budget."""


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        models: ModelCatalog,
        tokens: TokenCounter,
        settings: EngineSettings,
        clock: Callable[[], float] = time.time,
        observer: Observer = NULL_OBSERVER,
        audio: AudioClient | None = None,
        tools: ToolBox | None = None,
    ) -> None:
        self._store = store
        self._tools = tools if tools is not None else NoTools()
        self._observer = observer
        self._tokens = tokens
        self._settings = settings
        self._clock = clock
        self._access = AccessPolicy(settings.access, settings.extra_admins)
        self._choices = Choices(models, settings.bot, settings.personas, tokens)
        self._albums = Albums()
        self._media = Media(settings.media, tokens, models, audio, settings.speak)
        self.totals = RunningTotals()
        self._calendar = BudgetCalendar(settings.limits.zone)
        self._commands = Commands(
            store=store,
            access=self._access,
            bot=settings.bot,
            session=settings.session,
            limits=settings.limits,
            choices=self._choices,
            totals=self.totals,
            clear_session=self.clear_session,
            clock=clock,
        )
        self._command_list = command_list(settings.bot)
        self._arrivals = Arrivals()
        self._line = TurnLine()
        self._turns = asyncio.Semaphore(max(settings.max_concurrent, 1))
        self._reopeners: dict[str, Reopen] = {}
        self._unstored: _Bounded[None] = _Bounded(UNSTORED_REMEMBERED)
        """Messages answered while the store could not take the turn: only to be taken off the queue."""
        self._undelivered: _Bounded[_Undelivered] = _Bounded(UNDELIVERED_KEPT)
        """Answers complete when their platform failed, one per session. Kept in this process only:
        a restart loses them (their turns are stored)."""
        self._recovery: asyncio.Task[None] | None = None
        self._closing = False

    # --- public API -----------------------------------------------------------------------------

    async def handle(self, message: IncomingMessage, channel: ReplyChannel, receipt: Receipt | None = None) -> Outcome:
        """Process one incoming message to the end; never raises for a problem of this one message.

        ``receipt`` is settled as soon as the platform may be told that the message was taken.
        Cancelling this call withdraws the message when the engine is open (see ``_give_up_turn``)
        and leaves it queued for the next process after ``close``.
        """
        receipt = receipt if receipt is not None else Receipt()
        if self._closing:
            receipt.settle(False)
            return Outcome.SHUTTING_DOWN
        started = time.monotonic()
        handled = _Handled(Outcome.FAILED)
        try:
            handled = await self._handle(message, channel, receipt)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            handled = _Handled(Outcome.UNAVAILABLE, error="store_unavailable")
            if not receipt.settled:
                receipt.settle(False)
                if not receipt.redelivers:
                    await self._reply_quietly(channel, texts.TEMPORARILY_UNAVAILABLE)
            else:
                await self._reply_quietly(channel, texts.STORE_FAILED_WHILE_ANSWERING)
        except asyncio.CancelledError:
            handled = _Handled(Outcome.SHUTTING_DOWN)
            raise
        except Exception:
            log.exception("unexpected error while handling a %s message", message.platform)
            handled = _Handled(Outcome.FAILED, error="internal")
            await self._reply_quietly(channel, texts.INTERNAL_ERROR)
        finally:
            receipt.settle(True)
            self._report(message, handled, time.monotonic() - started)
        return handled.outcome

    def attach(self, platform: str, reopen: Reopen, refetch: Refetch | None = None) -> None:
        """A platform is connected: answers for its queued messages can go out again, and ``refetch``
        downloads their files by source. The first one starts the sweep that answers what a dead
        process or a failed turn left queued."""
        self._reopeners[platform] = reopen
        if refetch is not None:
            self._media.can_refetch(platform, refetch)
        if self._recovery is None and not self._closing:
            self._recovery = asyncio.create_task(self._recover_forever())

    async def clear_session(self, key: str) -> bool:
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
        if self._recovery is not None:
            self._recovery.cancel()

    async def _recover_forever(self) -> None:
        """Every ``lease_s``: the sessions whose queue has not moved for a whole lease and that
        nobody holds are answered here. The first sweep, at start-up, takes every such queue at
        once: what the process that ran before left behind."""
        older_than_s = 0.0
        while not self._closing:
            for key, kept in self._undelivered.items():
                reopen = self._reopeners.get(kept.platform)
                if reopen is not None:
                    await self._deliver_kept(key, reopen(kept.route))
            try:
                for key in await self._store.orphans(older_than_s, RECOVERED_PER_SWEEP):
                    if key in self._arrivals or key in self._line:
                        continue  # a handler of this process is on its way to it
                    log.info("answering the messages left queued in session %s", key)
                    await self._drain(key, None)
            except StoreUnavailable as exc:
                log.warning("could not look for unanswered messages: %s", exc)
            except Exception:
                log.exception("the sweep for unanswered messages failed")
            older_than_s = self._settings.lease_s
            await asyncio.sleep(self._settings.lease_s)

    # --- the pipeline ---------------------------------------------------------------------------

    async def _handle(self, message: IncomingMessage, channel: ReplyChannel, receipt: Receipt) -> _Handled:
        """Design section 2 in order; the numbers are the design's steps (see the module docstring
        for why the pure checks 2 and 4 come first)."""
        if message.from_bot:  # 2. ignore bots, the bridge itself included
            return _Handled(Outcome.IGNORED_BOT)
        album = await self._albums.gathered(message, receipt)  # an album's parts: one question
        if album is None:
            return _Handled(Outcome.JOINED)
        message = album
        addressed = address(message, self._settings.bot)  # 4. trigger
        if addressed is None:
            return _Handled(Outcome.NOT_ADDRESSED)
        key = session_key(message, self._settings.session.scope)  # 8. which session it belongs to
        ticket = self._arrivals.ticket(key)
        try:
            files = _files(message)
            refusal = self._refusal(addressed.text, files) if addressed.command is None else None
            if addressed.command is None and refusal is None:
                # 1, 3, 6, 7: dedupe, access, rate limit and the durable queue are one store step;
                # then 8, 10-12: the session's lease, window, model call, delivery and commit.
                return await self._take_turn(message, addressed, key, ticket, channel, receipt)
            # 1, 3: dedupe and access; then 5: the command, or the prompt's refusal.
            return await self._answer_directly(message, addressed, key, ticket, channel, refusal, receipt)
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
        receipt: Receipt,
    ) -> _Handled:
        """A command or a refused prompt: answered without the model, after the checks every message
        gets, in the session's arrival order."""
        verdict = await self._store.admit(self._admission(message, key))
        receipt.settle(True)
        if verdict is Verdict.DUPLICATE:
            return _Handled(Outcome.DUPLICATE)
        if verdict is Verdict.DENIED:
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

    def _admission(self, message: IncomingMessage, key: str, **queueing: Any) -> Admission:
        """The checks every message gets (dedupe, access); ``queueing`` adds a prompt's item and rate
        limit."""
        return Admission(
            dedupe_key=f"msg:{message.dedupe_key}",
            dedupe_ttl_s=DEDUPE_TTL_S,
            allowed=lambda overrides: self._allowed(message, overrides),
            session_key=key,
            **queueing,
        )

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
        elif await self._store.mark_once(f"denied-notice:{message.user_id}", DENIED_NOTICE_TTL_S):
            await send_text(channel, texts.DENIED)

    def _refusal(self, text: str, files: tuple[Attachment, ...]) -> str | None:
        if files:
            refused = self._media.refusal(files)
            if refused is not None:
                return refused
        elif not text:
            return texts.EMPTY_PROMPT
        limit = self._settings.bot.max_input_chars
        if len(text) > limit:
            return texts.MESSAGE_TOO_LONG.format(size=len(text), limit=limit)
        return None

    async def _take_turn(
        self,
        message: IncomingMessage,
        addressed: Addressed,
        key: str,
        ticket: Ticket,
        channel: ReplyChannel,
        receipt: Receipt,
    ) -> _Handled:
        """Check the prompt and queue it durably, then answer the session's queue unless another
        holder is at it already (who looks at the queue again when done).

        The checks (dedupe, access, rate limit) and the queueing are one store call, made once every
        earlier message of the session has been queued, so the queue keeps arrival order.
        """
        await ticket.wait_for_earlier()
        limits = self._settings.limits
        shared = not message.is_private and self._settings.session.scope is not SessionScope.USER
        item = QueuedMessage(
            message.dedupe_key,
            message.platform,
            message.chat_id,
            message.user_id,
            spoken_by(message, addressed.text) if shared else addressed.text,
            message.received_at,
            channel.route,
            tuple(file.record() for file in _files(message)),
        )
        now = self._clock()
        budget = BudgetCheck(
            self._calendar.day_of(now),
            message.user_id,
            message.chat_id,
            limits.user_tokens_per_day,
            limits.chat_tokens_per_day,
            limits.total_tokens_per_day,
        )
        verdict = await self._store.admit(
            self._admission(
                message,
                key,
                item=item,
                rate_key=f"rate:{message.user_id}",
                rate_window_s=RATE_WINDOW_S,
                rate_limit=max(limits.user_messages_per_minute, 0),
                budget=budget,
            )
        )
        ticket.give_back()
        receipt.settle(True)
        match verdict:
            case Verdict.QUEUED:
                self._media.remember(item.message_key, _files(message))
                return await self._drain(key, _Asker(message.dedupe_key, channel))
            case Verdict.DUPLICATE:
                return _Handled(Outcome.DUPLICATE)
            case Verdict.DENIED:
                await self._tell_denied(message, addressed, key, channel)
                return _Handled(Outcome.DENIED, key)
            case spent if spent in OVER_BUDGET:
                limit = _BUDGET_LIMITS[spent]
                await send_text(channel, await self._over_budget(limit, budget, now))
                return _Handled(Outcome.OVER_BUDGET, key, limit=limit)
            case _:
                await send_text(channel, texts.RATE_LIMITED.format(limit=limits.user_messages_per_minute))
                return _Handled(Outcome.RATE_LIMITED, key, limit="rate")

    async def _over_budget(self, limit: str, budget: BudgetCheck, now: float) -> str:
        """The refusal names the limit, its size and when it starts afresh."""
        identity = {"user": budget.user_id, "chat": budget.chat_id}.get(limit)
        configured = {"user": budget.user_limit, "chat": budget.chat_limit, "total": budget.total_limit}[limit]
        runtime = await self._store.budgets([identity]) if identity is not None else {}
        size = runtime.get(identity, configured) if identity is not None else configured
        return texts.OVER_BUDGET.format(
            whose=texts.OVER_BUDGET_WHOSE[limit],
            limit=texts.tokens(size),
            zone=self._settings.limits.timezone,
            wait=texts.wait_of(self._calendar.next_day_starts(now) - now),
            who_can=texts.OVER_BUDGET_WHO_CAN[limit],
        )

    async def _drain(self, key: str, asker: _Asker | None) -> _Handled:
        """Answer the session's queue, turn by turn, until it is empty, someone else holds it, or
        another handler of this process is next in line (who then takes over).

        ``asker`` is the message (and its live channel) that brought this handler here; None for a
        session found orphaned, whose answers go out on channels reopened from their routes, each
        with a note that says the answer comes after an interruption. What comes back is what
        happened to the asker's message: JOINED when an earlier turn answered it.
        """
        handled = _Handled(Outcome.JOINED, key)
        async with self._line.turn(key):
            while not self._closing:
                async with self._turns:
                    claim = await self._store.claim(key, self._settings.lease_s, self._settings.context.max_messages)
                    if claim is None:
                        return handled
                    try:
                        if await self._drop_shown_before(key, claim):
                            continue
                        channel, recovered = self._channel_for(claim.queued, asker)
                        if channel is None:
                            await self._store.release(key, claim.fence)
                            return handled  # its platform is not connected (yet); the queue waits for it
                        async with LeaseKept(self._store, key, claim.fence, self._settings.lease_s):
                            result, turn = await self._answer(key, claim, channel, recovered=recovered)
                            stored = await self._finish(key, claim, result, channel)
                        if stored.outcome is _Stored.NOT_STORED:
                            await self._store.release(key, claim.fence)
                        elif stored.outcome is _Stored.TAKEN_OVER:
                            turn = dataclasses.replace(turn, outcome=Outcome.FAILED, error="stale_lease")
                    except asyncio.CancelledError:
                        await self._give_up_turn(key, claim, asker)
                        raise
                    except BaseException:
                        await self._store.release(key, claim.fence)
                        raise
                if asker is not None and asker.asked_in(claim.queued):
                    handled = turn
                if stored.still_queued == 0 or self._line.waiting(key):
                    break
        return handled

    async def _give_up_turn(self, key: str, claim: Claim, asker: _Asker | None) -> None:
        """A turn cancelled while the engine is open was withdrawn by its asker (the terminal's
        Ctrl-C): nobody waits for that answer any more, so the message leaves the queue unanswered
        and nothing is stored. Cancelled at shutdown, or holding other people's messages too, the
        turn stays queued for whoever answers next."""
        withdrawn = (
            not self._closing
            and asker is not None
            and all(item.message_key == asker.message_key for item in claim.queued)
        )
        if withdrawn:
            await self._store.finish(
                key, claim.fence, TurnResult((), len(claim.queued), None, self._settings.session.timeout_s)
            )
        else:
            await self._store.release(key, claim.fence)

    def _channel_for(self, queued: list[QueuedMessage], asker: _Asker | None) -> tuple[ReplyChannel | None, bool]:
        """Where a turn's answer goes, and whether it answers after an interruption: the asker's own
        channel when its message is in the turn; otherwise the newest message's channel, reopened
        by its adapter (or the asker's, for a platform that cannot reopen one)."""
        newest = queued[-1]
        if asker is not None and asker.asked_in(queued):
            return asker.channel, False
        reopen = self._reopeners.get(newest.platform)
        if reopen is not None:
            return reopen(newest.route), asker is None
        return (asker.channel if asker is not None else None), False

    async def _finish(self, key: str, claim: Claim, result: TurnResult, channel: ReplyChannel) -> _Finished:
        """Store the turn; a store that is briefly down is retried (holding the session) for up to
        ``delivery_timeout_s``, after which the user is told that this exchange will not be remembered."""
        deadline = time.monotonic() + self._settings.delivery_timeout_s
        delay = COMMIT_RETRY_FIRST_S
        while True:
            try:
                still_queued = await self._store.finish(key, claim.fence, result)
            except StaleLease:
                log.error("session %s was taken over while answering; this turn was not stored", key)
                return _Finished(_Stored.TAKEN_OVER)
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("could not store the turn of %s: %s", key, exc)
                    for item in claim.queued:
                        self._unstored.keep(item.message_key, None)
                    if result.turns:
                        await self._reply_quietly(channel, texts.NOT_REMEMBERED)
                    return _Finished(_Stored.NOT_STORED)
                await asyncio.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX_S)
                continue
            if result.usage is not None:
                self.totals.add(result.usage)
            return _Finished(_Stored.STORED, still_queued)

    async def _drop_shown_before(self, key: str, claim: Claim) -> bool:
        """Messages at the head of the queue that were answered while the store could not take the
        turn (the user was told it will not be remembered) are only taken off the queue, never
        answered again. True when that was done and the session is to be claimed again."""
        shown = 0
        while shown < len(claim.queued) and claim.queued[shown].message_key in self._unstored:
            shown += 1
        if shown == 0:
            return False
        await self._store.finish(key, claim.fence, TurnResult((), shown, None, self._settings.session.timeout_s))
        for item in claim.queued[:shown]:
            self._unstored.take(item.message_key)
        return True

    @staticmethod
    async def _delivered(key: str, delivery: Awaitable[object]) -> bool:
        """Whether the platform took what a turn shows: False when it kept failing for the whole
        delivery budget. Its final word (the bot blocked, the chat gone) is logged and counts as
        taken, since trying again cannot change it; either way the turn is finished."""
        try:
            await delivery
        except PlatformTrouble as trouble:
            log.warning("could not deliver to %s within the delivery budget: %s", key, trouble)
            return False
        except Exception as refusal:  # noqa: BLE001 - any platform error; the turn must still end
            log.warning("the platform refused the answer in %s: %s", key, type(refusal).__name__)
        return True

    async def _deliver_kept(self, key: str, channel: ReplyChannel) -> None:
        """An answer the platform could not take earlier goes out before anything else in its chat."""
        kept = self._undelivered.take(key)
        if kept is None:
            return
        try:
            await send_text(channel, f"{texts.DELIVERED_LATE}\n\n{kept.text}", budget_s=KEPT_DELIVERY_BUDGET_S)
        except PlatformTrouble:
            self._undelivered.keep(key, kept)
        except Exception as exc:  # noqa: BLE001 - the platform's final word (the bot was blocked, say)
            log.warning("gave up delivering a kept answer in %s: %s", key, type(exc).__name__)

    async def _answer(
        self, key: str, claim: Claim, channel: ReplyChannel, *, recovered: bool
    ) -> tuple[TurnResult, _Handled]:
        """One turn for everything queued in the claim; what to store, and how it went."""
        newest = claim.queued[-1]
        answered = len(claim.queued)
        ttl_s = self._settings.session.timeout_s
        now = self._clock()
        day = self._calendar.day_of(now)
        await self._deliver_kept(key, channel)
        history = await self._history(key, now, claim.state)
        chosen = claim.settings
        choice = self._choices.of_turn(chosen)
        card = self._choices.models.card(choice.model)
        preamble = [choice.persona.system]
        if chosen.instructions:
            instructions = f"{texts.INSTRUCTIONS_HEADER}\n{chosen.instructions}"
            preamble.append(SystemPart(instructions, self._tokens.count(instructions)))
        # The media step (core.media): files downloaded and read; a message whose file cannot be used is
        # answered with its notice and left out of the turn, and the session stays as it was.
        media = await self._media.read(claim.queued, card)
        for refusal in media.refusals:
            await self._delivered(key, send_text(channel, refusal))
        if media.empty:
            return TurnResult((), answered, None, ttl_s), _Handled(Outcome.REFUSED, key)
        user_turn = Turn("user", media.text, self._tokens.count(media.text), now, media.images)
        budget = self._budget(card.prompt_budget(self._settings.context.max_tokens))
        window = build_window(preamble, history, user_turn, budget, keep_images_turns=self._media.keep_images_turns)
        if window is None:
            await self._delivered(key, send_text(channel, texts.MESSAGE_OVER_CONTEXT))
            return TurnResult((), answered, None, ttl_s), _Handled(Outcome.REFUSED, key)

        streamed: list[str] = []
        renderer = StreamRenderer(channel, budget_s=self._settings.delivery_timeout_s)
        timing = _ModelTiming()
        note = f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n" if recovered else ""

        async def on_text(delta: str) -> None:
            timing.text_arrived()
            if not streamed and note:
                await renderer.push(note)
            streamed.append(delta)
            await renderer.push(delta)

        tool_turn = self._tool_turn(card, newest, channel, renderer, recovered)
        try:
            async with TypingIndicator(channel):
                reply, window, steps = await self._call_model(
                    choice, window, preamble, history, user_turn, budget, on_text, tool_turn
                )
        except ModelError as error:
            timing.done()
            log.warning("model call failed for %s: %s: %s", key, type(error).__name__, error.detail)
            notice = texts.MODEL_ERRORS[error.kind]
            partial = "".join(streamed)
            await self._delivered(
                key, renderer.finish(f"{note}{partial}\n\n{notice}" if partial else f"{note}{notice}")
            )
            usage = UsageDelta(day, newest.user_id, newest.chat_id, errors=1, model=choice.model)
            failed = _Handled(
                Outcome.FAILED,
                key,
                error=error.kind,
                model_s=timing.model_s,
                first_token_s=timing.first_token_s,
                model=choice.model,
            )
            return TurnResult((), answered, usage, ttl_s), failed
        timing.done()

        if not reply.text.strip():
            await self._delivered(key, renderer.finish(f"{note}{texts.EMPTY_REPLY}"))
            failed = _Handled(
                Outcome.FAILED, key, error="empty_reply", model_s=timing.model_s, first_token_s=timing.first_token_s
            )
            return TurnResult((), answered, None, ttl_s), failed
        shown = reply.text if reply.finish_reason != "length" else f"{reply.text}\n\n{texts.CUT_AT_LENGTH}"
        shown = "\n\n".join([shown, *media.footnotes])
        if not await self._delivered(key, renderer.finish(f"{note}{shown}")):
            # Paid for and complete: stored like any answer, and shown once the platform is back.
            self._undelivered.keep(key, _Undelivered(newest.platform, newest.route, shown))
        else:
            await self._media.speak(channel, reply.text, spoken=media.spoken)

        tokens = self._tokens.count(reply.text) + steps_tokens(steps, self._tokens.count)
        assistant_turn = Turn("assistant", reply.text, tokens, self._clock(), steps=steps)
        prompt, completion = self._usage_figures(reply, window, assistant_turn)
        usage = UsageDelta(day, newest.user_id, newest.chat_id, answered, prompt, completion, model=choice.model)
        answered_turn = _Handled(
            Outcome.ANSWERED,
            key,
            prompt,
            completion,
            model_s=timing.model_s,
            first_token_s=timing.first_token_s,
            reply=reply.text,
            model=choice.model,
            cost_usd=card.cost(prompt, completion),
        )
        return TurnResult((user_turn, assistant_turn), answered, usage, ttl_s), answered_turn

    async def _history(self, key: str, now: float, state: SessionState | None) -> list[Turn]:
        """The stored turns a window may use; an idle-expired session is cleared and starts fresh."""
        if state is None:
            return []
        if now - state.last_active > self._settings.session.timeout_s:
            await self._store.clear_session(key)
            return []
        return state.turns

    def _budget(self, max_tokens: int) -> Budget:
        context = self._settings.context
        return Budget(max_tokens, context.max_messages, self._tokens.message_overhead, self._tokens.scaled)

    async def _call_model(
        self,
        choice: TurnChoice,
        window: Window,
        preamble: list[SystemPart],
        history: list[Turn],
        user_turn: Turn,
        budget: Budget,
        on_text: TextSink,
        tool_turn: ToolTurn | None,
    ) -> tuple[ModelReply, Window, tuple[ChatMessage, ...]]:
        """The chosen model's reply to ``window``; when it fails, the failure is the answer (no other
        model is tried behind the user's back). A context-length refusal from the server trims the
        prompt, first to half of it, then to the system parts (persona and instructions) and the new
        message alone; a refusal even of that is passed on, since then the message itself is too long.
        With tools, the reply comes through the tool loop, with the calls and results that led to it."""
        model: ChatModel = self._choices.models.client(choice.model)
        temperature = choice.persona.temperature
        while True:
            try:
                if tool_turn is not None:
                    done = await reply_with_tools(model, window.messages, on_text, tool_turn, temperature=temperature)
                    return done.reply, window, done.steps
                return await model.reply(window.messages, on_text, temperature=temperature), window, ()
            except ContextTooLong:
                if window.history_turns == 0:
                    raise
                keep = self._media.keep_images_turns
                smaller = build_window(
                    preamble, history, user_turn, budget.tighter_than(window), keep_images_turns=keep
                )
                if smaller is None or smaller.history_turns >= window.history_turns:
                    smaller = build_window(preamble, [], user_turn, budget)
                assert smaller is not None  # the window it was cut from held the same system parts and message
                log.info(
                    "server said the context is too long; retrying with %d of %d turns",
                    smaller.history_turns,
                    window.history_turns,
                )
                window = smaller

    def _tool_turn(
        self, card: ModelCard, asker: QueuedMessage, channel: ReplyChannel, renderer: StreamRenderer, recovered: bool
    ) -> ToolTurn | None:
        """The tools this turn may use (design section 10): None unless the chat's model takes tools
        and the asker is offered some in this chat."""
        if not card.tools:
            return None
        offered = self._tools.offered(asker.user_id, asker.chat_id)
        if not offered:
            return None

        async def show_status(line: str) -> None:
            if not isinstance(channel, AppendOnly):
                await renderer.push(f"\n\n{line}\n\n")

        return ToolTurn(
            self._tools, offered, asker.user_id, asker.chat_id, channel, show_status, self._tokens.count, recovered
        )

    def _usage_figures(self, reply: ModelReply, window: Window, assistant_turn: Turn) -> tuple[int, int]:
        """The server's figures when it sent them (they also calibrate our estimate), else ours. After
        tool rounds they are the sum over the rounds, which is no measure of the window."""
        if assistant_turn.steps and reply.usage is not None:
            return reply.usage.prompt_tokens, reply.usage.completion_tokens
        if reply.usage is None:
            return self._tokens.scaled(window.raw_tokens), assistant_turn.tokens
        self._tokens.calibrate(window.raw_tokens, reply.usage.prompt_tokens)
        return reply.usage.prompt_tokens, reply.usage.completion_tokens

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
        # Chatter that is not for the bot, and the bot's own messages echoed back, are most of a
        # busy group's traffic; they stay countable in the metrics without flooding the log.
        level = logging.DEBUG if handled.outcome in _QUIET_OUTCOMES else logging.INFO
        if log.isEnabledFor(level):
            line = " ".join(
                f"{name}={value!r}" if name in ("text", "reply") else f"{name}={value}"
                for name, value in fields.items()
            )
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
                    model=handled.model,
                    cost_usd=handled.cost_usd,
                    limit=handled.limit,
                )
            )
        except Exception:  # noqa: BLE001 - metrics must never break message handling
            log.exception("the observer failed")


def _files(message: IncomingMessage) -> tuple[Attachment, ...]:
    """The files a prompt is about: its own, and those of the message it replies to (someone else's
    photo under which the bot was asked). Only prompts that address the bot come this far."""
    return message.attachments + message.replied_attachments


_BUDGET_LIMITS = {
    Verdict.OVER_USER_BUDGET: "user",
    Verdict.OVER_CHAT_BUDGET: "chat",
    Verdict.OVER_TOTAL_BUDGET: "total",
}


class _Stored(StrEnum):
    STORED = "stored"
    TAKEN_OVER = "taken_over"
    """Another holder has the session: its lease lapsed while this one was paused or cut off."""
    NOT_STORED = "not_stored"
    """The store stayed down; the lease is still to be given back."""


@dataclass(frozen=True, slots=True)
class _Finished:
    outcome: _Stored
    still_queued: int = 0
    """Messages that arrived during the turn; only known when it was stored."""


@dataclass(frozen=True, slots=True)
class _Asker:
    """The message a handler came with, and the live channel it answers on."""

    message_key: str
    channel: ReplyChannel

    def asked_in(self, queued: list[QueuedMessage]) -> bool:
        return any(item.message_key == self.message_key for item in queued)


@dataclass(frozen=True, slots=True)
class _Undelivered:
    platform: str
    route: str
    text: str


class _Bounded(Generic[_V]):
    """A dict by session or message key that keeps at most ``size`` entries, dropping the oldest
    first, so that nothing kept in the process grows with traffic."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[str, _V] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keep(self, key: str, value: _V) -> None:
        self._entries[key] = value
        while len(self._entries) > self._size:
            del self._entries[next(iter(self._entries))]

    def take(self, key: str) -> _V | None:
        return self._entries.pop(key, None)

    def items(self) -> list[tuple[str, _V]]:
        return list(self._entries.items())


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
