"""The one storage contract the engine talks to, whichever backend is configured.

Everything a bridge must share between processes goes through here: sessions, per-session ordering
(the pending queue and the lease), dedupe marks, rate-limit counters, runtime access decisions and
usage. The embedded backends (``memory``, ``sqlite``) keep ordering inside their one process; the
``redis`` backend makes the same guarantees across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple, Protocol

Role = Literal["user", "assistant"]


class Turn(NamedTuple):
    """One stored message of a session; ``tokens`` is counted once, when the turn is created.

    A named tuple rather than a frozen dataclass: every answered message reads a whole window of
    turns back from the store, and a tuple is built in well under half the time.
    """

    role: Role
    content: str
    tokens: int
    created_at: float


@dataclass(frozen=True, slots=True)
class SessionState:
    """The newest turns of a session (oldest first) and when it was last used."""

    key: str
    turns: list[Turn]
    last_active: float


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A line of ``/admin sessions``."""

    key: str
    last_active: float
    turn_count: int


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message waiting for its session to become free; waiting ones are joined into one turn."""

    message_key: str
    user_id: str
    text: str
    received_at: float


@dataclass(frozen=True, slots=True)
class HeldSession:
    """What the holder of a session works with once it has the lease.

    ``fence`` is the token ``commit_turns`` checks; ``waiting`` are the messages taken from the queue,
    oldest first (empty when an earlier holder already answered them together with its own); ``state``
    is the session as stored, loaded only when something was taken (None also when there is none).
    """

    fence: int
    waiting: list[PendingMessage]
    state: SessionState | None


class Verdict(StrEnum):
    """What ``Store.admit`` came to for one prompt."""

    DUPLICATE = "duplicate"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class Admission:
    """A new prompt, and everything to check before it may join its session's queue.

    ``allowed`` is the engine's access decision given the runtime overrides (the store knows the
    overrides, the engine the rules). ``rate_limit`` 0 means no limit; otherwise ``rate_key`` counts
    hits in fixed windows of ``rate_window_s`` and the prompt is refused above the limit. The rest is
    what ``Store.hold_for_turn`` takes.
    """

    dedupe_key: str
    dedupe_ttl_s: float
    allowed: Callable[[Mapping[str, AccessDecision]], bool]
    rate_key: str
    rate_window_s: float
    rate_limit: int
    session_key: str
    lease_ttl_s: float
    item: PendingMessage
    max_turns: int
    on_queued: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """``held`` is set for ``Verdict.HELD`` only; the lease is held while ``Store.admit`` is open."""

    verdict: Verdict
    held: HeldSession | None = None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """What one handled message adds to the usage counters of its day, user and chat."""

    day: str
    user_id: str
    chat_id: str
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class UsageTotals:
    day: str
    messages: int
    prompt_tokens: int
    completion_tokens: int
    errors: int


ALL_SUBJECTS = "*"
"""The ``subject`` of usage totals over every user and chat."""


class AccessDecision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class StoreUnavailable(Exception):
    """The backend cannot be reached; the engine answers "temporarily unavailable" and keeps running."""


class StaleLease(Exception):
    """A commit came from a lease holder that is no longer the current one (fencing)."""


class Store(Protocol):
    async def open(self) -> None:
        """Connect and create what is missing (tables, scripts)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the backend answers; raise ``StoreUnavailable`` otherwise."""
        ...

    # --- dedupe ---------------------------------------------------------------------------------
    async def first_seen(self, key: str, ttl_s: float) -> bool:
        """Mark ``key`` as seen for ``ttl_s`` seconds; True only for the first caller (atomic)."""
        ...

    async def first_seen_with_access(self, key: str, ttl_s: float) -> tuple[bool, dict[str, AccessDecision]]:
        """``first_seen`` and ``access_overrides`` in one step: one round trip in a shared store, where
        every incoming message needs both. The overrides come back whatever the first answer is."""
        ...

    # --- per-session ordering -------------------------------------------------------------------
    async def enqueue(self, session_key: str, item: PendingMessage) -> None:
        """Append a message to the session's pending queue (arrival order is queue order)."""
        ...

    def lease(self, session_key: str, ttl_s: float) -> AbstractAsyncContextManager[int]:
        """Hold the session exclusively; yields a fencing token that ``commit_turns`` checks.

        Waits while another holder has it; holders get it in the order they asked. ``ttl_s`` bounds
        how long a crashed holder can block the session in a shared backend.
        """
        ...

    def hold_for_turn(
        self,
        session_key: str,
        ttl_s: float,
        item: PendingMessage,
        max_turns: int,
        on_queued: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[HeldSession]:
        """Everything the engine needs before it calls the model, in as few steps as the backend can.

        Appends ``item`` to the pending queue (before any waiting, so the current holder can take
        it), holds the lease like ``lease``, then takes every pending message and, when it took
        some, loads the newest ``max_turns`` turns. ``on_queued`` is called as soon as ``item`` is in
        the queue, which is how the engine keeps a session's messages in arrival order without
        waiting for the lease itself. A shared backend queues, takes the lease, takes the queue and
        loads the session in one round trip when the session is free.
        """
        ...

    def admit(self, admission: Admission) -> AbstractAsyncContextManager[Admitted]:
        """The whole way from a new prompt to the model call: ``first_seen_with_access``, the access
        decision, ``count_hit`` and ``hold_for_turn``, in that order, stopping at the first that says
        no. A shared backend does all of it in one round trip when the session is free and the
        runtime access decisions it last saw are still current.
        """
        ...

    async def take_pending(self, session_key: str) -> list[PendingMessage]:
        """Remove and return every pending message of the session, oldest first."""
        ...

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        """The newest ``max_turns`` turns (oldest first), or None when the session has none."""
        ...

    async def commit_turns(self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float) -> None:
        """Append ``turns`` in one atomic write and mark the session active.

        Raises ``StaleLease`` when ``fence`` is not the session's current lease. ``ttl_s`` is the idle
        time after which a backend may drop the session.
        """
        ...

    async def finish_turn(
        self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float, usage: UsageDelta
    ) -> None:
        """The holder's last write of a turn: ``commit_turns``, then ``add_usage`` once the turns are
        stored. A shared backend does both in one round trip and releases its lease with them, so
        that leaving ``lease``/``admit`` afterwards costs none."""
        ...

    async def clear_session(self, session_key: str) -> bool:
        """Forget a session's history; True when there was one."""
        ...

    async def list_sessions(self) -> list[SessionInfo]: ...

    # --- rate limits ----------------------------------------------------------------------------
    async def count_hit(self, key: str, window_s: float) -> int:
        """Count one hit in the current fixed window of ``window_s`` seconds; return the window's count."""
        ...

    # --- runtime access lists -------------------------------------------------------------------
    async def access_overrides(self) -> dict[str, AccessDecision]: ...

    async def set_access(self, identity: str, decision: AccessDecision) -> None: ...

    # --- usage ----------------------------------------------------------------------------------
    async def add_usage(self, delta: UsageDelta) -> None:
        """Add to the totals of the day for every subject: all (``*``), the user and the chat."""
        ...

    async def usage_by_day(self, days: int, subject: str = ALL_SUBJECTS) -> list[UsageTotals]:
        """Totals of the newest ``days`` days that have any usage, newest first."""
        ...
