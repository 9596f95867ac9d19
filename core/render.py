"""The one reply renderer every adapter shares: splitting long replies and pacing streamed edits.

Platforms differ only in data (``PlatformLimits``), so what each message shows and when it is sent or
edited is decided here, once, and behaves the same on Telegram, Discord, Slack and the console.

Splitting is greedy and *prefix-stable*: a chunk is cut using only the ``max_chars + 1`` characters
from where it starts, so once a streamed reply has grown past a chunk, that chunk never changes
again. The stream renderer relies on this: message *i* always shows chunk *i* of
``split_message(text so far)``, and only the last message is ever still growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from core.channel import PlatformRateLimited, ReplyChannel

log = logging.getLogger("chatbridge.render")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
_T = TypeVar("_T")

# How often one platform call is tried when the platform keeps answering 429.
_ATTEMPTS = 5
# What a message shows when a final text needs fewer messages than were already streamed: platform
# messages cannot be taken back through ``ReplyChannel``, and repeating stale text would be worse.
_SUPERSEDED = "…"

# A line that opens or closes a fenced code block (any indentation, as models indent them in lists).
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.MULTILINE)
# Matched from a start position, this finds the *last* paragraph break before the end position.
_LAST_PARAGRAPH_BREAK = re.compile(r"(?s:.*)(\n)[ \t]*\n")
_NON_SPACE = re.compile(r"\S")


# --- splitting ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fence:
    """A code block open at a cut: how the next message reopens it and which run closes it."""

    opener: str
    marker: str

    def is_closed_by(self, line: str) -> bool:
        stripped = line.strip()
        return stripped.startswith(self.marker) and stripped == stripped[0] * len(stripped)


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where a chunk starts (before boundary whitespace is skipped) and the code block open there."""

    pos: int
    fence: _Fence | None


@dataclass(frozen=True, slots=True)
class _Region:
    """Positions ``[start, end)`` where a cut may land, all inside the same code block or none."""

    start: int
    end: int
    fence: _Fence | None


_START = _Cursor(0, None)


def split_message(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into messages of at most ``max_chars`` characters, breaking where a reader would.

    Breaks are tried in this order, each time as late as possible: a paragraph break, a line break,
    a space, then anywhere. A break in the first half of a chunk is taken only when the second half
    offers none, so chunks stay full rather than chopped at every early blank line. Fenced code
    blocks are not split when a break before or after them exists; a block that cannot fit is
    closed at the end of a chunk and reopened, with its info string, at the start of the next (the
    added fence lines count against ``max_chars``). Whitespace at a break is dropped; nothing else is.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    return [chunk for _, chunk in _Splitter(text, max_chars).chunks(_START)]


class _Splitter:
    """One text and limit, cut chunk by chunk from a cursor (so a stream can resume mid-text)."""

    def __init__(self, text: str, max_chars: int) -> None:
        self._text = text
        self._max = max_chars
        self._content_end = len(text.rstrip())

    def chunks(self, cursor: _Cursor) -> Iterator[tuple[_Cursor, str]]:
        """Yield each chunk with the cursor it was cut from, so a caller can resume at any chunk."""
        while (pos := self._skip(cursor)) is not None:
            head = self._reopen_line(cursor.fence)
            if len(head) + self._content_end - pos <= self._max:
                yield cursor, head + self._text[pos : self._content_end]
                return
            cut, fence = self._cut(pos, cursor.fence, self._max - len(head))
            yield cursor, head + self._text[pos:cut].rstrip() + self._close_line(fence)
            cursor = _Cursor(cut, fence)

    def _skip(self, cursor: _Cursor) -> int | None:
        """Where the chunk's text starts: past boundary whitespace, but keeping a code line's indent
        (unless it would fill half the message and crowd out the code itself)."""
        match = _NON_SPACE.search(self._text, cursor.pos)
        if match is None:
            return None
        first = match.start()
        line_break = self._text.rfind("\n", cursor.pos, first)
        if cursor.fence is None or line_break == -1 or first - line_break > self._max // 2:
            return first
        return line_break + 1

    def _reopens(self, fence: _Fence) -> bool:
        """Whether re-fencing is worth it: never when the fence lines would eat half the message."""
        return len(fence.opener) + len(fence.marker) + 2 <= self._max // 2

    def _reopen_line(self, fence: _Fence | None) -> str:
        return f"{fence.opener}\n" if fence is not None and self._reopens(fence) else ""

    def _close_line(self, fence: _Fence | None) -> str:
        return f"\n{fence.marker}" if fence is not None and self._reopens(fence) else ""

    def _cut(self, pos: int, fence: _Fence | None, budget: int) -> tuple[int, _Fence | None]:
        """Where to end the chunk starting at ``pos``, and the code block open there.

        Reads nothing past ``pos + budget + 1``: the extra character tells whether a word ends
        exactly at the budget. That bound is what makes the split prefix-stable.
        """
        end = pos + budget + 1
        regions, open_at = _layout(self._text, pos, fence, end)
        if open_at is not None and open_at > pos:
            return open_at - 1, None
        return self._best_break(pos, budget, end, regions, fence)

    def _best_break(
        self, pos: int, budget: int, end: int, regions: list[_Region], fence: _Fence | None
    ) -> tuple[int, _Fence | None]:
        prose = [region for region in regions if region.fence is None]
        code = [region for region in regions if region.fence is not None]
        full = pos + budget // 2
        # A code chunk may start with indentation; a cut inside that would leave the chunk empty.
        some = _NON_SPACE.search(self._text, pos, end).start() + 1  # type: ignore[union-attr]
        searches: list[tuple[Callable[[int, int, int], int], list[_Region], int]] = [
            (self._paragraph_break, prose, full),
            (self._line_break, prose, full),
            (self._space, prose, full),
            (self._line_break, prose, some),
            (self._space, prose, some),
            (self._line_break, code, some),
            (self._space, code, some),
            (_latest, regions, some),
        ]
        for find, candidates, lowest in searches:
            for region in reversed(candidates):
                low = max(lowest, region.start + 1 if region.fence else region.start)
                high = min(region.end - 1, pos + budget - len(self._close_line(region.fence)))
                cut = find(low, high, end) if low <= high else -1
                if cut != -1:
                    return cut, region.fence
        # Only a fence line longer than a whole message gets here; cut it like a word.
        return pos + budget - len(self._close_line(fence)), fence

    def _paragraph_break(self, low: int, high: int, end: int) -> int:
        limit = end
        while (match := _LAST_PARAGRAPH_BREAK.match(self._text, low, limit)) is not None:
            if match.start(1) <= high:
                return match.start(1)
            limit = match.start(1) + 1
        return -1

    def _line_break(self, low: int, high: int, end: int) -> int:
        return self._text.rfind("\n", low, high + 1)

    def _space(self, low: int, high: int, end: int) -> int:
        return max(self._text.rfind(" ", low, high + 1), self._text.rfind("\t", low, high + 1))


def _latest(low: int, high: int, end: int) -> int:
    return high


def _layout(text: str, pos: int, fence: _Fence | None, end: int) -> tuple[list[_Region], int | None]:
    """The regions of ``text[pos:end]`` a cut may land in, and where a block still open at ``end``
    began if it began after ``pos``.

    Fence lines belong to no region, so no cut splits one. Left out too: the line break ending an
    opening fence and the one just before a closing fence, as cutting there leaves an empty block.
    A line running past ``end`` never counts as a closing fence, because the characters that would
    decide it are not visible yet and the cut must not depend on them.
    """
    regions: list[_Region] = []
    start, open_at = pos, None
    for match in _FENCE_LINE.finditer(text, pos, end):
        line_start = match.start()
        line_end = text.find("\n", line_start, end)
        if fence is None:
            _add_region(regions, start, line_start, None)
            open_at = line_start
            if line_end == -1:
                return regions, open_at
            fence = _Fence(text[line_start:line_end].strip(), match.group(1))
            start = line_end + 1
        elif line_end == -1:
            _add_region(regions, start, line_start - 1, fence)
            return regions, open_at
        elif fence.is_closed_by(text[line_start:line_end]):
            _add_region(regions, start, line_start - 1, fence)
            fence, open_at, start = None, None, line_end
    _add_region(regions, start, end, fence)
    return regions, open_at


def _add_region(regions: list[_Region], start: int, end: int, fence: _Fence | None) -> None:
    if end > start:
        regions.append(_Region(start, end, fence))


# --- sending --------------------------------------------------------------------------------------


async def _patiently(call: Callable[[], Awaitable[_T]], sleep: Sleep) -> _T:
    """Make one platform call, waiting out 429s as the platform asks, a bounded number of times."""
    for _ in range(_ATTEMPTS - 1):
        try:
            return await call()
        except PlatformRateLimited as limited:
            log.info("platform rate limit; retrying in %.1fs", limited.retry_after_s)
            await sleep(limited.retry_after_s)
    return await call()


async def send_text(channel: ReplyChannel, text: str, *, sleep: Sleep = asyncio.sleep) -> None:
    """Send a complete answer (command output, an error) as one or more messages.

    Raises ``PlatformRateLimited`` only if the platform still refuses after several waits.
    """
    for chunk in split_message(text, channel.limits.max_message_chars):
        await _patiently(functools.partial(channel.send, chunk), sleep)


class StreamRenderer:
    """Shows one streamed reply on one channel, within the platform's limits.

    ``push`` never waits: it updates the platform only when the edit interval has passed and
    otherwise just buffers, since the next push or ``finish`` catches up. It makes at most one
    platform call each time, so every send or edit of the reply is ``min_edit_interval_s`` apart.
    ``finish`` waits for its turn and insists, because the complete text must land.
    Both keep message *i* showing chunk *i* of the split text and skip edits that change nothing.
    """

    def __init__(self, channel: ReplyChannel, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._channel = channel
        self._limits = channel.limits
        self._clock = clock
        self._sleep = sleep
        self._pending: list[str] = []
        self._settled: list[str] = []
        self._resume = _START
        self._handles: list[object] = []
        self._shown: list[str] = []
        self._ready_at = float("-inf")
        self._edits = 0

    @property
    def messages_sent(self) -> int:
        return len(self._handles)

    @property
    def edits_made(self) -> int:
        return self._edits

    async def push(self, delta: str) -> None:
        """Add streamed text. A failed intermediate update only postpones the next one: a 429 for as
        long as the platform asks, any other error (a network blip) for one edit interval, since
        ``finish`` brings the platform up to date anyway and is the call that must succeed."""
        self._pending.append(delta)
        if not self._limits.can_edit or self._clock() < self._ready_at:
            return
        chunks = self._streamed_chunks()
        index = self._first_stale(chunks)
        if index is None:
            return
        try:
            await self._show(index, chunks[index])
        except PlatformRateLimited as limited:
            self._ready_at = self._clock() + max(limited.retry_after_s, self._limits.min_edit_interval_s)
        except Exception as exc:  # noqa: BLE001 - see the docstring: finish() is the one that must land
            log.warning("streamed update failed, will catch up: %s", type(exc).__name__)
            self._ready_at = self._clock() + self._limits.min_edit_interval_s

    async def finish(self, final_text: str) -> None:
        """Make the messages show exactly ``split_message(final_text)``.

        ``final_text`` may differ from what was streamed (a note appended, say). Raises
        ``PlatformRateLimited`` only if the platform still refuses one call after several waits.
        """
        chunks = split_message(final_text, self._limits.max_message_chars)
        chunks += [_SUPERSEDED] * (len(self._shown) - len(chunks))
        while (index := self._first_stale(chunks)) is not None:
            await _patiently(functools.partial(self._show_in_turn, index, chunks[index]), self._sleep)

    def _streamed_chunks(self) -> list[str]:
        """The split of the text so far, re-cutting only from the first chunk that may still change."""
        text = "".join(self._pending)
        self._pending = [text]
        pieces = list(_Splitter(text, self._limits.max_message_chars).chunks(self._resume))
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


@contextlib.asynccontextmanager
async def typing_indicator(channel: ReplyChannel, interval_s: float = 4.0) -> AsyncIterator[None]:
    """Keep the platform's "typing…" signal on while the body runs (platforms expire it after ~5 s).

    A failing signal is logged and ignored: it is cosmetic and must never break the reply.
    """
    task = asyncio.create_task(_keep_typing(channel, interval_s))
    try:
        await asyncio.sleep(0)  # let the first signal go out before the body starts its work
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})


async def _keep_typing(channel: ReplyChannel, interval_s: float) -> None:
    level = logging.WARNING
    while True:
        try:
            await channel.typing()
        except Exception as error:  # noqa: BLE001 - any adapter error; typing is best effort
            log.log(level, "typing indicator failed: %r", error)
            level = logging.DEBUG
        await asyncio.sleep(interval_s)
