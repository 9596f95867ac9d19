"""The memory store: plain dicts in this process, for tests and throwaway bridges.

Nothing here awaits between reading and writing a value, so every method is atomic with respect to
the other tasks of the event loop without a lock. Dedupe marks, rate windows and idle sessions expire
and are swept now and then, so a long-running throwaway bridge does not grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.store import (
    ALL_SUBJECTS,
    AccessDecision,
    SessionInfo,
    SessionState,
    Turn,
    UsageDelta,
    UsageTotals,
)
from core.stores import FixedWindow, PruneTimer, usage_subjects
from core.stores.local_ordering import InProcessOrdering
from core.usage import RunningTotals

PRUNE_INTERVAL_S = 60.0


@dataclass(slots=True)
class _Session:
    turns: list[Turn]
    last_active: float
    expires_at: float


@dataclass(slots=True)
class _Window:
    index: int
    count: int
    ends_at: float


class MemoryStore(InProcessOrdering):
    """A ``Store`` that forgets everything when the process ends."""

    def __init__(self, prune_interval_s: float = PRUNE_INTERVAL_S) -> None:
        super().__init__()
        self._sessions: dict[str, _Session] = {}
        self._seen: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}
        self._access: dict[str, AccessDecision] = {}
        self._usage: dict[str, dict[str, RunningTotals]] = {}
        self._prune = PruneTimer(prune_interval_s)

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data lives as long as the object."""

    async def ping(self) -> None:
        """Always reachable."""

    # --- dedupe ---------------------------------------------------------------------------------
    async def first_seen(self, key: str, ttl_s: float) -> bool:
        now = self._tick()
        expires_at = self._seen.get(key)
        if expires_at is not None and expires_at > now:
            return False
        self._seen[key] = now + ttl_s
        return True

    async def first_seen_with_access(self, key: str, ttl_s: float) -> tuple[bool, dict[str, AccessDecision]]:
        return await self.first_seen(key, ttl_s), await self.access_overrides()

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        session = self._sessions.get(session_key)
        if session is None:
            return None
        start = max(len(session.turns) - max(max_turns, 0), 0)
        return SessionState(session_key, session.turns[start:], session.last_active)

    async def commit_turns(self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float) -> None:
        """The session's ``last_active`` is its newest turn's ``created_at``: the engine stamps turns
        with its own clock and measures idle time with the same clock. Committing no turns only
        checks the fence."""
        self._ordering.check_fence(session_key, fence)
        if not turns:
            return
        expires_at = self._tick() + ttl_s
        session = self._sessions.get(session_key)
        if session is None:
            self._sessions[session_key] = _Session(list(turns), turns[-1].created_at, expires_at)
            return
        session.turns.extend(turns)
        session.last_active = turns[-1].created_at
        session.expires_at = expires_at

    async def clear_session(self, session_key: str) -> bool:
        return self._sessions.pop(session_key, None) is not None

    async def list_sessions(self) -> list[SessionInfo]:
        """Most recently active first."""
        infos = [SessionInfo(key, s.last_active, len(s.turns)) for key, s in self._sessions.items()]
        return sorted(infos, key=lambda info: info.last_active, reverse=True)

    # --- rate limits ----------------------------------------------------------------------------
    async def count_hit(self, key: str, window_s: float) -> int:
        current = FixedWindow.at(self._tick(), window_s)
        window = self._windows.get(key)
        if window is None or window.index != current.index:
            window = self._windows[key] = _Window(current.index, 0, current.ends_at)
        window.count += 1
        return window.count

    # --- runtime access lists -------------------------------------------------------------------
    async def access_overrides(self) -> dict[str, AccessDecision]:
        return dict(self._access)

    async def set_access(self, identity: str, decision: AccessDecision) -> None:
        self._access[identity] = decision

    # --- usage ----------------------------------------------------------------------------------
    async def add_usage(self, delta: UsageDelta) -> None:
        for subject in usage_subjects(delta):
            self._usage.setdefault(subject, {}).setdefault(delta.day, RunningTotals()).add(delta)

    async def usage_by_day(self, days: int, subject: str = ALL_SUBJECTS) -> list[UsageTotals]:
        by_day = self._usage.get(subject, {})
        newest = sorted(by_day, reverse=True)[: max(days, 0)]
        return [by_day[day].of_day(day) for day in newest]

    # --- housekeeping ---------------------------------------------------------------------------
    def _tick(self) -> float:
        """The current time, sweeping expired entries first when a sweep is due."""
        now = time.time()
        if self._prune.due(now):
            self._seen = {key: at for key, at in self._seen.items() if at > now}
            self._windows = {key: w for key, w in self._windows.items() if w.ends_at > now}
            self._sessions = {key: s for key, s in self._sessions.items() if s.expires_at > now}
        return now
