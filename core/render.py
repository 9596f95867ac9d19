"""The one reply renderer every adapter shares: sending complete answers and pacing streamed edits.

Platforms differ only in data (``PlatformLimits``), so what each message shows and when it is sent or
edited is decided here, once, and behaves the same on Telegram, Discord, Slack and the console. Where
a long reply is cut into messages is ``core.splitter``'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core import texts
from core.channel import PlatformLimits, PlatformRateLimited, PlatformTooLong, PlatformTrouble, ReplyChannel
from core.splitter import START, Splitter, split_message

log = logging.getLogger("chatbridge.render")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
_T = TypeVar("_T")

DELIVERY_TIMEOUT_S = 120.0
"""How long one reply keeps trying a platform that answers 429, 5xx or nothing
(``server.delivery_timeout_s``)."""
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
WORTH_SHOWING_CHARS = 200
"""Streamed text this long is shown at once, first-show delay or not: a reader has enough to start on."""
SHRINK_WHEN_TOO_LONG = 0.75
"""A message the platform refused as too long is cut again to this share of the length tried."""
SMALLEST_MESSAGE = 64

# --- sending --------------------------------------------------------------------------------------


async def _patiently(call: Callable[[], Awaitable[_T]], sleep: Sleep, clock: Clock, deadline: float) -> _T:
    """Make one platform call, through 429s (as long as the platform asks) and 5xx, timeouts and
    cut connections (backing off), until ``deadline``: a wait that would end past it is not begun,
    so a Retry-After of ten minutes gives up at once instead of holding the session."""
    backoff = BACKOFF_FIRST_S
    while True:
        try:
            return await call()
        except PlatformTrouble as trouble:
            wait = trouble.retry_after_s if isinstance(trouble, PlatformRateLimited) else backoff
            if clock() + wait > deadline:
                raise
            log.info("platform call failed (%s); retrying in %.1fs", trouble, wait)
            await sleep(wait)
            if not isinstance(trouble, PlatformRateLimited):
                backoff = min(backoff * 2, BACKOFF_MAX_S)


def _shorter(max_chars: int) -> int:
    """The next length to try after the platform refused ``max_chars`` as too long."""
    if max_chars <= SMALLEST_MESSAGE:
        raise PlatformTooLong(f"the platform refuses even {max_chars} characters")
    return max(int(max_chars * SHRINK_WHEN_TOO_LONG), SMALLEST_MESSAGE)


def _split(text: str, limits: PlatformLimits, max_chars: int) -> list[str]:
    return split_message(text, max_chars, limits.length_unit)


async def send_text(
    channel: ReplyChannel,
    text: str,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    budget_s: float = DELIVERY_TIMEOUT_S,
) -> int:
    """Send a complete answer (command output, an error) as one or more messages; what the
    platform refuses as too long is cut smaller and sent again, from where it was refused.
    Returns how many messages went out.

    Raises ``PlatformTrouble`` only if the platform still fails when ``budget_s`` runs out.
    """
    deadline = clock() + budget_s
    limits = channel.limits
    max_chars = limits.max_message_chars
    pending = _split(text, limits, max_chars)
    sent = 0
    while pending:
        try:
            await _patiently(functools.partial(channel.send, pending[0]), sleep, clock, deadline)
        except PlatformTooLong:
            max_chars = _shorter(max_chars)
            pending[:1] = _split(pending[0], limits, max_chars)
            continue
        pending.pop(0)
        sent += 1
    return sent


class StreamRenderer:
    """Shows one streamed reply on one channel, within the platform's limits.

    ``push`` never waits: it updates the platform only when the edit interval has passed and
    otherwise just buffers, since the next push or ``finish`` catches up. It makes at most one
    platform call each time, so every send or edit of the reply is ``min_edit_interval_s`` apart.
    ``finish`` waits for its turn and insists, because the complete text must land; where the
    platform takes a short burst (``final_burst``), its first calls go at once.
    Both keep message *i* showing chunk *i* of the split text and skip edits that change nothing.
    A stream faster than the pace gets each message after the first once, complete, rather than
    half-full and then again; at most one call is then left when the model is done.
    """

    def __init__(
        self,
        channel: ReplyChannel,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        budget_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        """``budget_s`` is how long ``finish`` keeps trying a failing platform, from its start."""
        self._channel = channel
        self._budget_s = budget_s
        self._limits = channel.limits
        self._clock = clock
        self._sleep = sleep
        self._pending: list[str] = []
        self._settled: list[str] = []
        self._resume = START
        self._handles: list[object] = []
        self._shown: list[str] = []
        self._ready_at = float("-inf")
        self._first_text_at: float | None = None
        """When the first text came: the first-show delay counts from it, not from the question, so
        that a model slow to start (or a busy bridge) does not use it up before there is anything;
        and the stream's pace is measured from it."""
        self._held_until_chars = 0
        self._held_until = float("-inf")
        """A message about to fill is not shown half-full (``_held_until_full``) until this
        much text has streamed or this time has come, whichever is first; then it is looked at again."""
        self._streamed_chars = 0
        self._edits = 0
        self._sent_whole = 0
        self._max_chars = self._limits.max_message_chars

    @property
    def messages_sent(self) -> int:
        return len(self._handles) + self._sent_whole

    @property
    def edits_made(self) -> int:
        return self._edits

    async def push(self, delta: str) -> None:
        """Add streamed text. A failed intermediate update only postpones the next one: a 429 for as
        long as the platform asks, any other error (a network blip) for one edit interval, since
        ``finish`` brings the platform up to date anyway and is the call that must succeed."""
        self._pending.append(delta)
        self._streamed_chars += len(delta)
        if self._first_text_at is None:
            self._first_text_at = self._clock()
        if not self._limits.can_edit or self._clock() < self._ready_at or self._holding_first_show():
            return
        if self._streamed_chars < self._held_until_chars and self._clock() < self._held_until:
            return
        chunks = self._streamed_chunks()
        index = self._first_stale(chunks)
        if index is None or (index == len(chunks) - 1 and self._held_until_full(chunks[index])):
            return
        try:
            await self._show(index, chunks[index])
        except PlatformTooLong:
            self._cut_smaller()
        except PlatformRateLimited as limited:
            self._ready_at = self._clock() + max(limited.retry_after_s, self._limits.min_edit_interval_s)
        except PlatformTrouble as trouble:
            log.info("streamed update failed, will catch up: %s", trouble)
            self._ready_at = self._clock() + self._limits.min_edit_interval_s
        except Exception as exc:  # noqa: BLE001 - see the docstring: finish() is the one that must land
            log.warning("streamed update failed, will catch up: %s", type(exc).__name__)
            self._ready_at = self._clock() + self._limits.min_edit_interval_s

    async def finish(self, final_text: str) -> None:
        """Make the messages show exactly ``split_message(final_text)``.

        ``final_text`` may differ from what was streamed (a note appended, say). Raises
        ``PlatformTrouble`` only if the platform still fails when the delivery budget runs out.

        A channel that cannot edit has been shown nothing yet, and gets the text as ``send_text``
        sends it: a message refused as too long is cut again from there on, never by re-cutting
        (and so resending) the messages already out.
        """
        if not self._limits.can_edit:
            self._sent_whole += await send_text(
                self._channel, final_text, sleep=self._sleep, clock=self._clock, budget_s=self._budget_s
            )
            return
        deadline = self._clock() + self._budget_s
        chunks = self._final_chunks(final_text)
        spare_calls = self._limits.final_burst - 1
        while (index := self._first_stale(chunks)) is not None:
            early = spare_calls > 0 and self._clock() < self._ready_at
            if early:
                spare_calls -= 1
            try:
                show = functools.partial(self._show if early else self._show_in_turn, index, chunks[index])
                await _patiently(show, self._sleep, self._clock, deadline)
            except PlatformTooLong:
                self._cut_smaller()
                chunks = self._final_chunks(final_text)

    def _final_chunks(self, final_text: str) -> list[str]:
        chunks = _split(final_text, self._limits, self._max_chars)
        return chunks + [texts.SUPERSEDED_MESSAGE] * (len(self._shown) - len(chunks))

    def _cut_smaller(self) -> None:
        """The platform refused a message as too long: every message is cut again, smaller (those
        already shown are edited to their new text)."""
        self._max_chars = _shorter(self._max_chars)
        log.info("platform refused a message as too long; cutting at %d", self._max_chars)
        self._settled, self._resume = [], START

    def _holding_first_show(self) -> bool:
        """Nothing shown yet, the first-show delay not over, and too little text to be worth it."""
        return (
            not self._handles
            and self._streamed_chars < WORTH_SHOWING_CHARS
            and self._first_text_at is not None
            and self._clock() < self._first_text_at + self._limits.first_show_delay_s
        )

    def _held_until_full(self, growing: str) -> bool:
        """Holds the message still being streamed, and says so, when it will be full before another
        call is allowed, at the pace the text has come so far. Showing it half-full now would spend
        the call its complete text needs: a stream faster than the platform's pace would then fall
        one message behind for the rest of the reply, each message costing two calls, and the last
        one would land two intervals after the model is done instead of at most one. The first
        message is shown regardless (a reader wants to start), and so is every message once the
        stream slows."""
        if not self._handles or self._first_text_at is None:
            return False
        elapsed = self._clock() - self._first_text_at
        if elapsed <= 0:
            return False
        chars_per_s = self._streamed_chars / elapsed
        missing = self._max_chars - self._limits.length_unit.measure(growing)
        if missing >= chars_per_s * self._limits.min_edit_interval_s:
            return False
        self._held_until_chars = self._streamed_chars + missing
        self._held_until = self._clock() + self._limits.min_edit_interval_s
        return True

    def _streamed_chunks(self) -> list[str]:
        """The split of the text so far, re-cutting only from the first chunk that may still change."""
        text = "".join(self._pending)
        self._pending = [text]
        pieces = list(Splitter(text, self._max_chars, self._limits.length_unit).chunks(self._resume))
        if not pieces:
            return list(self._settled)
        self._settled += [chunk for _, chunk in pieces[:-1]]
        self._resume, growing = pieces[-1]
        return [*self._settled, growing]

    def _first_stale(self, chunks: list[str]) -> int | None:
        for index, chunk in enumerate(chunks):
            if index >= len(self._shown) or self._shown[index] != chunk:
                return index
        return None

    async def _show_in_turn(self, index: int, text: str) -> None:
        delay = self._ready_at - self._clock()
        if delay > 0:
            await self._sleep(delay)
        await self._show(index, text)

    async def _show(self, index: int, text: str) -> None:
        if index < len(self._handles):
            await self._channel.edit(self._handles[index], text)
            self._shown[index] = text
            self._edits += 1
        else:
            self._handles.append(await self._channel.send(text))
            self._shown.append(text)
        self._ready_at = self._clock() + self._limits.min_edit_interval_s


# --- typing ---------------------------------------------------------------------------------------


class TypingIndicator:
    """Keeps the platform's "typing…" signal on while the body runs (platforms expire it after ~5 s).

    A failing signal is logged and ignored: it is cosmetic and must never break the reply.

    Each signal is a task of its own and the next one waits on a timer, rather than one task
    looping for the whole turn: a signal is over long before the model answers, so the turn ends
    with only a timer to cancel, and a burst of turns does not keep a sleeping task (and what it
    holds) alive for each of them while the models think.
    """

    __slots__ = ("_channel", "_interval_s", "_signal", "_next", "_level", "_stopped")

    def __init__(self, channel: ReplyChannel, interval_s: float = 4.0) -> None:
        self._channel = channel
        self._interval_s = interval_s
        self._signal: asyncio.Task[None] | None = None
        self._next: asyncio.TimerHandle | None = None
        self._level = logging.WARNING
        self._stopped = False

    async def __aenter__(self) -> None:
        self._signal_now()
        await asyncio.sleep(0)  # let the first signal go out before the body starts its work

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopped = True
        if self._next is not None:
            self._next.cancel()
        signal = self._signal
        if signal is not None and not signal.done():
            signal.cancel()  # a signal sent after the reply would show "typing…" under it
            await asyncio.wait({signal})

    def _signal_now(self) -> None:
        self._signal = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            await self._channel.typing()
        except Exception as error:  # noqa: BLE001 - any adapter error; typing is best effort
            log.log(self._level, "typing indicator failed: %r", error)
            self._level = logging.DEBUG
        self._signal = None  # a finished task holds its coroutine: let both go while the model thinks
        if not self._stopped:
            self._next = asyncio.get_running_loop().call_later(self._interval_s, self._signal_now)
