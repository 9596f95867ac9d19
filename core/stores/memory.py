"""The memory store: plain dicts in this process, for tests and throwaway bridges.

Nothing here awaits between reading and writing a value, so every method is atomic with respect to
the other tasks of the event loop without a lock. The queue is as durable as the process. Dedupe marks, rate windows and idle sessions expire
and are swept now and then, so a long-running throwaway bridge does not grow without bound.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from core.store import (
    ALL_SUBJECTS,
    AccessDecision,
    Admission,
    BudgetCheck,
    ChatSetting,
    Claim,
    ModelUsage,
    QueuedMessage,
    SessionInfo,
    SessionState,
    Turn,
    TurnResult,
    TurnSettings,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import FixedWindow, PruneTimer, budget_verdict, usage_periods, usage_subjects
from core.stores.local_leases import InProcessLeases
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


@dataclass(frozen=True, slots=True)
class _Queued:
    item: QueuedMessage
    queued_at: float


class MemoryStore:
    """A ``Store`` that forgets everything when the process ends."""

    def __init__(self, prune_interval_s: float = PRUNE_INTERVAL_S) -> None:
        self._leases = InProcessLeases()
        self._queues: dict[str, deque[_Queued]] = {}
        self._sessions: dict[str, _Session] = {}
        self._seen: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}
        self._access: dict[str, AccessDecision] = {}
        self._usage: dict[str, dict[str, RunningTotals]] = {}
        self._model_usage: dict[tuple[str, str], dict[str, RunningTotals]] = {}
        """By (subject, day or month), then by model."""
        self._chat_settings: dict[str, dict[ChatSetting, str]] = {}
        self._instructions: dict[str, str] = {}
        self._budgets: dict[str, int] = {}
        self._prune = PruneTimer(prune_interval_s)

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data lives as long as the object."""

    async def ping(self) -> None:
        """Always reachable."""

    # --- the durable queue ----------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        if not self._first_seen(admission.dedupe_key, admission.dedupe_ttl_s):
            return Verdict.DUPLICATE
        if not admission.allowed(self._access):
            return Verdict.DENIED
        if (
            admission.rate_limit > 0
            and self._count_hit(admission.rate_key, admission.rate_window_s) > admission.rate_limit
        ):
            return Verdict.RATE_LIMITED
        if admission.budget is not None:
            spent = self._spent(admission.budget)
            if spent is not None:
                return spent
        if admission.item is None:
            return Verdict.ACCEPTED
        queue = self._queues.setdefault(admission.session_key, deque())
        queue.append(_Queued(admission.item, time.time()))
        return Verdict.QUEUED

    async def claim(self, session_key: str, lease_s: float, max_turns: int) -> Claim | None:
        queue = self._queues.get(session_key)
        if not queue:
            return None
        fence = self._leases.take(session_key)
        if fence is None:
            return None
        newest = queue[-1].item
        settings = await self.turn_settings(newest.chat_id, newest.user_id)
        return Claim(
            fence, [queued.item for queued in queue], await self.load_session(session_key, max_turns), settings
        )

    async def renew(self, session_key: str, fence: int, lease_s: float) -> bool:
        return self._leases.holds(session_key, fence)

    async def finish(self, session_key: str, fence: int, result: TurnResult) -> int:
        """The session's ``last_active`` is its newest turn's ``created_at``: the engine stamps turns
        with its own clock and measures idle time with the same clock."""
        self._leases.check(session_key, fence)
        if result.turns:
            self._append(session_key, result.turns, result.ttl_s)
        queue = self._queues.get(session_key)
        if queue is not None:
            for _ in range(min(result.answered, len(queue))):
                queue.popleft()
            if not queue:
                del self._queues[session_key]
        if result.usage is not None:
            self._add_usage(result.usage)
        self._leases.release(session_key, fence)
        return len(self._queues.get(session_key, ()))

    async def release(self, session_key: str, fence: int) -> None:
        self._leases.release(session_key, fence)

    async def orphans(self, older_than_s: float, limit: int) -> list[str]:
        cutoff = time.time() - older_than_s
        found = [
            (queue[0].queued_at, key)
            for key, queue in self._queues.items()
            if queue[0].queued_at <= cutoff and not self._leases.held(key)
        ]
        return [key for _, key in sorted(found)[: max(limit, 0)]]

    # --- marks ----------------------------------------------------------------------------------
    async def mark_once(self, key: str, ttl_s: float) -> bool:
        return self._first_seen(key, ttl_s)

    def _first_seen(self, key: str, ttl_s: float) -> bool:
        now = self._tick()
        expires_at = self._seen.get(key)
        if expires_at is not None and expires_at > now:
            return False
        self._seen[key] = now + ttl_s
        return True

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        session = self._sessions.get(session_key)
        if session is None:
            return None
        start = max(len(session.turns) - max(max_turns, 0), 0)
        return SessionState(session_key, session.turns[start:], session.last_active)

    def _append(self, session_key: str, turns: Sequence[Turn], ttl_s: float) -> None:
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
    def _count_hit(self, key: str, window_s: float) -> int:
        current = FixedWindow.at(self._tick(), window_s)
        window = self._windows.get(key)
        if window is None or window.index != current.index:
            window = self._windows[key] = _Window(current.index, 0, current.ends_at)
        window.count += 1
        return window.count

    # --- runtime access lists -------------------------------------------------------------------
    async def set_access(self, identity: str, decision: AccessDecision) -> None:
        self._access[identity] = decision

    # --- budgets --------------------------------------------------------------------------------
    def _spent(self, check: BudgetCheck) -> Verdict | None:
        used = {}
        for subject in (check.user_id, check.chat_id, ALL_SUBJECTS):
            totals = self._usage.get(subject, {}).get(check.day)
            used[subject] = 0 if totals is None else totals.prompt_tokens + totals.completion_tokens
        return budget_verdict(check, used, self._budgets)

    async def set_budget(self, identity: str, tokens_per_day: int | None) -> None:
        if tokens_per_day is None:
            self._budgets.pop(identity, None)
        else:
            self._budgets[identity] = tokens_per_day

    async def budgets(self, identities: Sequence[str]) -> dict[str, int]:
        return {identity: self._budgets[identity] for identity in identities if identity in self._budgets}

    # --- per-chat and per-user settings -----------------------------------------------------------
    async def turn_settings(self, chat_id: str, user_id: str) -> TurnSettings:
        chosen = self._chat_settings.get(chat_id, {})
        return TurnSettings(
            chosen.get(ChatSetting.MODEL), chosen.get(ChatSetting.PERSONA), self._instructions.get(user_id, "")
        )

    async def set_chat_setting(self, chat_id: str, setting: ChatSetting, value: str) -> None:
        self._chat_settings.setdefault(chat_id, {})[setting] = value

    async def set_instructions(self, user_id: str, text: str) -> None:
        if text:
            self._instructions[user_id] = text
        else:
            self._instructions.pop(user_id, None)

    # --- usage ----------------------------------------------------------------------------------
    def _add_usage(self, delta: UsageDelta) -> None:
        for subject in usage_subjects(delta):
            self._usage.setdefault(subject, {}).setdefault(delta.day, RunningTotals()).add(delta)
            if delta.model:
                for period in usage_periods(delta):
                    by_model = self._model_usage.setdefault((subject, period), {})
                    by_model.setdefault(delta.model, RunningTotals()).add(delta)

    async def usage_by_model(self, period: str, subject: str = ALL_SUBJECTS) -> list[ModelUsage]:
        by_model = self._model_usage.get((subject, period), {})
        return [by_model[model].of_model(model) for model in sorted(by_model)]

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
