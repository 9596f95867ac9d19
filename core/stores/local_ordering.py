"""Per-session ordering for the embedded stores, whose whole bridge is one process and one event loop.

Each busy session has a pending queue and an exclusive lease. ``asyncio.Lock`` already hands itself
to waiters first come, first served, which is exactly the arrival order the engine promises. A
session's entry exists only while someone queues, holds or waits; the last one out removes it, so a
bridge that has seen a million chats keeps entries only for the handful that are busy right now.
"""

from __future__ import annotations

import asyncio
import itertools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

from core.store import (
    Admission,
    Admitted,
    HeldSession,
    PendingMessage,
    SessionState,
    StaleLease,
    Store,
    Turn,
    UsageDelta,
)
from core.stores import admit_in_steps, finish_turn_in_steps


@dataclass(slots=True)
class _Slot:
    pending: deque[PendingMessage] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    """Tasks holding or waiting for the lease; the lock's own waiter list is private to asyncio."""
    holder: int | None = None
    """The fencing token of the current holder, None between holders."""


class LocalOrdering:
    """Pending queues and leases of sessions, kept in this process.

    Fencing tokens come from one counter for all sessions, so they keep increasing per session even
    after an idle session's entry was removed and later created again: a token from a finished lease
    can never match a later holder's.
    """

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        """How many sessions currently have a queue, a holder or a waiter (boundedness checks)."""
        return len(self._slots)

    def busy(self, session_key: str) -> bool:
        """Whether a task of this process holds or waits for the session's lease."""
        slot = self._slots.get(session_key)
        return slot is not None and slot.users > 0

    def enqueue(self, session_key: str, item: PendingMessage) -> None:
        self._slot(session_key).pending.append(item)

    def take_pending(self, session_key: str) -> list[PendingMessage]:
        slot = self._slots.get(session_key)
        if slot is None:
            return []
        items = list(slot.pending)
        slot.pending.clear()
        self._forget_if_idle(session_key, slot)
        return items

    @asynccontextmanager
    async def lease(self, session_key: str) -> AsyncIterator[int]:
        """Hold the session exclusively. There is no expiry: a holder that fails leaves the ``async
        with`` and thereby releases, and nothing outlives this process to be blocked by it."""
        slot = self._slot(session_key)
        slot.users += 1
        try:
            async with slot.lock:
                slot.holder = next(self._tokens)
                try:
                    yield slot.holder
                finally:
                    slot.holder = None
        finally:
            slot.users -= 1
            self._forget_if_idle(session_key, slot)

    def check_fence(self, session_key: str, fence: int) -> None:
        """Raise ``StaleLease`` unless ``fence`` belongs to the session's current holder."""
        slot = self._slots.get(session_key)
        if slot is None or slot.holder != fence:
            raise StaleLease(f"lease {fence} on {session_key!r} is no longer held")

    def _slot(self, session_key: str) -> _Slot:
        slot = self._slots.get(session_key)
        if slot is None:
            slot = self._slots[session_key] = _Slot()
        return slot

    def _forget_if_idle(self, session_key: str, slot: _Slot) -> None:
        if slot.users == 0 and not slot.pending:
            del self._slots[session_key]


class InProcessOrdering(ABC):
    """The ordering part of the ``Store`` protocol for the embedded stores, written once.

    Their whole bridge is one process, so the queue and the lease live in ``LocalOrdering``;
    ``ttl_s`` does not apply, since a holder in this process releases when it fails.
    """

    def __init__(self) -> None:
        self._ordering = LocalOrdering()

    @abstractmethod
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None: ...

    async def enqueue(self, session_key: str, item: PendingMessage) -> None:
        self._ordering.enqueue(session_key, item)

    def lease(self, session_key: str, ttl_s: float) -> AbstractAsyncContextManager[int]:
        return self._ordering.lease(session_key)

    @asynccontextmanager
    async def hold_for_turn(
        self,
        session_key: str,
        ttl_s: float,
        item: PendingMessage,
        max_turns: int,
        on_queued: Callable[[], None] | None = None,
    ) -> AsyncIterator[HeldSession]:
        self._ordering.enqueue(session_key, item)
        if on_queued is not None:
            on_queued()
        async with self._ordering.lease(session_key) as fence:
            waiting = self._ordering.take_pending(session_key)
            state = await self.load_session(session_key, max_turns) if waiting else None
            yield HeldSession(fence, waiting, state)

    def admit(self, admission: Admission) -> AbstractAsyncContextManager[Admitted]:
        return admit_in_steps(cast(Store, self), admission)

    async def finish_turn(
        self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float, usage: UsageDelta
    ) -> None:
        await finish_turn_in_steps(cast(Store, self), session_key, turns, fence, ttl_s, usage)

    async def take_pending(self, session_key: str) -> list[PendingMessage]:
        return self._ordering.take_pending(session_key)
