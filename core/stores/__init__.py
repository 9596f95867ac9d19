"""The store backends: how one is chosen from the settings, and the few rules every backend computes
the same way (which usage rows a delta touches, when a budget is spent, where a rate window starts,
how often to sweep, how a queued message is written down).

Backends are imported only when chosen, so a bridge on the memory store never loads a database driver,
and the backend modules can import the shared rules from here without a cycle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import assert_never

from core.settings import StoreBackend, StoreSettings
from core.store import ALL_SUBJECTS, BudgetCheck, QueuedMessage, Store, UsageDelta, Verdict


def create_store(settings: StoreSettings) -> Store:
    """The configured backend, not yet opened (the caller owns ``open``/``close``)."""
    match settings.backend:
        case StoreBackend.MEMORY:
            from core.stores.memory import MemoryStore

            return MemoryStore()
        case StoreBackend.SQLITE:
            from core.stores.sqlite import SqliteStore

            return SqliteStore(settings.sqlite_path)
        case StoreBackend.REDIS:
            from core.stores.redis import RedisStore

            return RedisStore(settings.redis_url, settings.redis_key_prefix, settings.redis_max_connections)
    assert_never(settings.backend)


def usage_subjects(delta: UsageDelta) -> tuple[str, ...]:
    """The usage rows one delta adds to, each once.

    In a private chat the chat may carry the user's own identity (Telegram does this), and counting
    that row twice would double the user's figures.
    """
    return tuple(dict.fromkeys((ALL_SUBJECTS, delta.user_id, delta.chat_id)))


def usage_periods(delta: UsageDelta) -> tuple[str, str]:
    """The periods a model's usage is counted in: the day and its month."""
    return delta.day, delta.day[:7]


def budget_verdict(check: BudgetCheck, used: Mapping[str, int], runtime_budgets: Mapping[str, int]) -> Verdict | None:
    """Which budget of ``check`` is spent, given the tokens ``used`` today by each subject (the user,
    the chat, ``ALL_SUBJECTS``) and the runtime budgets of the user and chat; None when none is.
    The user's budget is named first, then the chat's, then the bridge's. (The redis store's admit
    script computes the same in Lua.)"""
    user_limit = runtime_budgets.get(check.user_id, check.user_limit)
    if user_limit > 0 and used.get(check.user_id, 0) >= user_limit:
        return Verdict.OVER_USER_BUDGET
    chat_limit = runtime_budgets.get(check.chat_id, check.chat_limit)
    if chat_limit > 0 and used.get(check.chat_id, 0) >= chat_limit:
        return Verdict.OVER_CHAT_BUDGET
    if check.total_limit > 0 and used.get(ALL_SUBJECTS, 0) >= check.total_limit:
        return Verdict.OVER_TOTAL_BUDGET
    return None


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """A rate-limit window aligned to ``floor(now / window_s)``, so every process counts into the same
    window for the same instant without agreeing on when it started."""

    index: int
    ends_at: float

    @classmethod
    def at(cls, now: float, window_s: float) -> FixedWindow:
        index = math.floor(now / window_s)
        return cls(index, (index + 1) * window_s)


@dataclass(slots=True)
class PruneTimer:
    """Expired dedupe marks, rate windows and sessions are swept at most once per ``interval_s``: often
    enough that an embedded store stays bounded, rarely enough that a message pays nothing for it."""

    interval_s: float
    next_at: float = 0.0

    def due(self, now: float) -> bool:
        if now < self.next_at:
            return False
        self.next_at = now + self.interval_s
        return True


def queued_to_json(item: QueuedMessage) -> str:
    """The stored form of a queued message in the backends that keep it as text."""
    fields = [item.message_key, item.platform, item.chat_id, item.user_id, item.text, item.received_at, item.route]
    if item.attachments:
        fields.append([dict(record) for record in item.attachments])
    return json.dumps(fields)


def queued_from_json(raw: str) -> QueuedMessage:
    key, platform, chat_id, user_id, text, received_at, route, *rest = json.loads(raw)
    records = tuple(rest[0]) if rest else ()
    return QueuedMessage(key, platform, chat_id, user_id, text, received_at, route, records)
