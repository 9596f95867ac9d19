"""Splitting a long reply into messages that fit a platform's limit.

Splitting is greedy and *prefix-stable*: a chunk is cut using only the ``max_chars + 1`` characters
from where it starts, so once a streamed reply has grown past a chunk, that chunk never changes
again. The stream renderer (``core.render``) relies on this: message *i* always shows chunk *i* of
``split_message(text so far)``, and only the last message is ever still growing. A fenced code block
cut in two is closed at the end of one message and reopened at the start of the next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.channel import LengthUnit

# A line that opens or closes a fenced code block (any indentation, as models indent them in lists).
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.MULTILINE)
# Matched from a start position, this finds the *last* paragraph break before the end position.
_LAST_PARAGRAPH_BREAK = re.compile(r"(?s:.*)(\n)[ \t]*\n")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True, slots=True)
class _Fence:
    """A code block open at a cut: how the next message reopens it and which run closes it."""

    opener: str
    marker: str

    def is_closed_by(self, line: str) -> bool:
        stripped = line.strip()
        return stripped.startswith(self.marker) and stripped == stripped[0] * len(stripped)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a chunk starts (before boundary whitespace is skipped) and the code block open there."""

    pos: int
    fence: _Fence | None


@dataclass(frozen=True, slots=True)
class _Region:
    """Positions ``[start, end)`` where a cut may land, all inside the same code block or none."""

    start: int
    end: int
    fence: _Fence | None


START = Cursor(0, None)


def split_message(text: str, max_chars: int, unit: LengthUnit = LengthUnit.CHARACTERS) -> list[str]:
    """Split ``text`` into messages of at most ``max_chars`` characters, breaking where a reader would.

    Breaks are tried in this order, each time as late as possible: a paragraph break, a line break,
    a space, then anywhere. A break in the first half of a chunk is taken only when the second half
    offers none, so chunks stay full rather than chopped at every early blank line. Fenced code
    blocks are not split when a break before or after them exists; a block that cannot fit is
    closed at the end of a chunk and reopened, with its info string, at the start of the next (the
    added fence lines count against ``max_chars``). Whitespace at a break is dropped; nothing else is.
    Lengths are counted in ``unit``, the platform's own way.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    return [chunk for _, chunk in Splitter(text, max_chars, unit).chunks(START)]


class Splitter:
    """One text and limit, cut chunk by chunk from a cursor (so a stream can resume mid-text).

    Positions are characters; only the budget of each chunk is counted in ``unit``, turned into
    the number of characters from the chunk's start that fit it, which keeps the split
    prefix-stable whatever the unit.
    """

    def __init__(self, text: str, max_chars: int, unit: LengthUnit = LengthUnit.CHARACTERS) -> None:
        self._text = text
        self._max = max_chars
        self._unit = unit
        self._content_end = len(text.rstrip())

    def chunks(self, cursor: Cursor) -> Iterator[tuple[Cursor, str]]:
        """Yield each chunk with the cursor it was cut from, so a caller can resume at any chunk."""
        while (pos := self._skip(cursor)) is not None:
            head = self._reopen_line(cursor.fence)
            budget = self._characters_within(pos, self._max - len(head))
            if self._content_end - pos <= budget:
                yield cursor, head + self._text[pos : self._content_end]
                return
            cut, fence = self._cut(pos, cursor.fence, budget)
            yield cursor, head + self._text[pos:cut].rstrip() + self._close_line(fence)
            cursor = Cursor(cut, fence)

    def _characters_within(self, pos: int, units: int) -> int:
        """How many characters from ``pos`` fit in ``units``; reads at most ``units + 1`` of them."""
        if self._unit is LengthUnit.CHARACTERS:
            return units
        count = 0
        for index in range(pos, min(pos + units + 1, len(self._text))):
            count += self._unit.measure(self._text[index])
            if count > units:
                return index - pos
        return units

    def _skip(self, cursor: Cursor) -> int | None:
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
