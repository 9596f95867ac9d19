"""Keep one session's messages in the order they reached this process.

Between a message's arrival and its place in the session's queue lie a few awaits (dedupe, access,
rate limit) whose durations vary, so a message could overtake one that arrived just before it. Each
message takes a ticket at arrival, before its first await, and a message only runs its command or
joins the queue once every earlier ticket of its session has been given back: when that message is
queued, or when its handling ended without queueing. The checks themselves still run concurrently.
"""

from __future__ import annotations

import asyncio


class Arrivals:
    def __init__(self) -> None:
        self._lines: dict[str, list[asyncio.Event]] = {}

    def ticket(self, session_key: str) -> Ticket:
        """Take a place in line; synchronous, so arrival order is the order of these calls."""
        line = self._lines.setdefault(session_key, [])
        ticket = Ticket(self, session_key, earlier=list(line))
        line.append(ticket.given_back)
        return ticket

    def _forget(self, session_key: str, done: asyncio.Event) -> None:
        line = self._lines.get(session_key)
        if line is None:
            return
        line.remove(done)
        if not line:
            del self._lines[session_key]

    def __len__(self) -> int:
        """Sessions with a message between arrival and queue (bounded by messages in flight)."""
        return len(self._lines)

    def __contains__(self, session_key: str) -> bool:
        """Whether a message of the session is between arrival and queue right now."""
        return session_key in self._lines


class Ticket:
    def __init__(self, arrivals: Arrivals, session_key: str, earlier: list[asyncio.Event]) -> None:
        self._arrivals = arrivals
        self._session_key = session_key
        self._earlier = earlier
        self.given_back = asyncio.Event()

    async def wait_for_earlier(self) -> None:
        for done in self._earlier:
            await done.wait()
        self._earlier = []

    def give_back(self) -> None:
        """Idempotent: called when the message is queued and again when its handling ends."""
        if not self.given_back.is_set():
            self.given_back.set()
            self._arrivals._forget(self._session_key, self.given_back)


class TurnLine:
    """One turn at a time per session in this process, in the order handlers come for it.

    The store's lease orders turns across processes but never waits; within the process, a handler
    whose session is busy waits here for the turn before it, then claims what is still queued, so
    the messages that arrived meanwhile are answered together on the first of their channels. A
    session's entry exists only while someone holds or waits.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def __contains__(self, session_key: str) -> bool:
        """Whether a handler of this process holds or waits for the session's turn."""
        return session_key in self._locks

    def waiting(self, session_key: str) -> bool:
        """Whether another handler of this process waits for the session's next turn."""
        entry = self._locks.get(session_key)
        return entry is not None and entry[1][0] > 1

    def turn(self, session_key: str) -> _Turn:
        """``async with line.turn(key):`` holds the session's turn in this process."""
        return _Turn(self._locks, session_key)


class _Turn:
    """A class rather than a generator-based context manager: every message takes one, and while a
    burst waits for the model its objects are walked by the garbage collector (``bench/``)."""

    __slots__ = ("_locks", "_session_key", "_entry")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], session_key: str) -> None:
        self._locks = locks
        self._session_key = session_key
        self._entry: tuple[asyncio.Lock, list[int]] | None = None

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._session_key)
        if entry is None:
            entry = self._locks[self._session_key] = (asyncio.Lock(), [0])
        self._entry = entry
        entry[1][0] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._entry is not None
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        assert self._entry is not None
        users = self._entry[1]
        users[0] -= 1
        if users[0] == 0:
            del self._locks[self._session_key]
