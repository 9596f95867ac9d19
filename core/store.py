"""The one storage contract the engine talks to, whichever backend is configured.

Everything a bridge must share between processes goes through here: sessions, the durable queue of
each session and the lease that orders it, dedupe marks, rate-limit counters, runtime access
decisions and budgets, each chat's model and persona, each user's custom instructions, and usage
(per day and month, and per model). A prompt is queued when it is admitted and leaves the queue only when the turn
that answers it is finished, so a process that dies between the two leaves it for another holder
(``orphans``). The embedded backends (``memory``, ``sqlite``) hold leases inside their one process;
the ``redis`` backend makes the same guarantees across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple, Protocol

from bots.model import ChatMessage

Role = Literal["user", "assistant"]


class StoredImage(NamedTuple):
    """A picture of a user turn as it was sent to the model (already scaled and re-encoded), so a
    follow-up question can show it again; ``tokens`` is its estimated cost in a window."""

    mime_type: str
    data: bytes
    tokens: int


class Turn(NamedTuple):
    """One stored message of a session; ``tokens`` is counted once, when the turn is created, and
    covers its text and tool ``steps`` but not its ``images`` (those count on their own, since a
    window sends them only for ``media.keep_images_turns`` later turns).

    A named tuple rather than a frozen dataclass: every answered message reads a whole window of
    turns back from the store, and a tuple is built in well under half the time.
    """

    role: Role
    content: str
    tokens: int
    created_at: float
    images: tuple[StoredImage, ...] = ()
    steps: tuple[ChatMessage, ...] = ()
    """Of an assistant turn that used tools: the tool calls and their results that came before
    ``content``, in request order (design section 2 step 10: they are part of the turn group, so
    they are stored, counted in ``tokens`` and trimmed with it)."""


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
class QueuedMessage:
    """A prompt in its session's durable queue, with everything answering it needs in another process
    or after a restart: who asked, in which chat, and where the answer goes (``route``, the adapter's
    own description of a reply channel, which only that adapter reads). ``attachments`` are the
    records (``Attachment.record``) of its files, which the adapter can fetch again by their source."""

    message_key: str
    platform: str
    chat_id: str
    user_id: str
    text: str
    received_at: float
    route: str = ""
    attachments: tuple[Mapping[str, str | int | bool | None], ...] = ()


class Verdict(StrEnum):
    """What ``Store.admit`` came to for one message."""

    QUEUED = "queued"
    """A prompt: checked and in its session's queue, durably where the backend is durable."""
    ACCEPTED = "accepted"
    """A command or a prompt refused on its own merits: checked, and to be answered directly."""
    DUPLICATE = "duplicate"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"
    OVER_USER_BUDGET = "over_user_budget"
    """The asker has used their tokens of the day (``BudgetCheck``)."""
    OVER_CHAT_BUDGET = "over_chat_budget"
    OVER_TOTAL_BUDGET = "over_total_budget"
    """The whole bridge has used its tokens of the day."""


OVER_BUDGET = frozenset({Verdict.OVER_USER_BUDGET, Verdict.OVER_CHAT_BUDGET, Verdict.OVER_TOTAL_BUDGET})


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """A prompt's token budgets for ``day``: the configured limits per day (0 = unlimited), which a
    runtime budget of the user or the chat (``Store.set_budget``) replaces for that identity.

    A limit is reached when the tokens counted for its subject on ``day`` (prompt and completion, as
    ``finish`` counted them) are at least the limit. Turns still being answered are not counted
    yet, so a budget is overshot by at most what the messages in flight use.
    """

    day: str
    user_id: str
    chat_id: str
    user_limit: int = 0
    chat_limit: int = 0
    total_limit: int = 0

    @property
    def any_limit(self) -> bool:
        return bool(self.user_limit or self.chat_limit or self.total_limit)


@dataclass(frozen=True, slots=True)
class Admission:
    """A new message, and everything to check before it may be answered.

    ``allowed`` is the engine's access decision given the runtime overrides (the store knows the
    overrides, the engine the rules). ``rate_limit`` 0 means no limit; otherwise ``rate_key`` counts
    hits in fixed windows of ``rate_window_s`` and the message is refused above the limit. With an
    ``item`` the message is queued in ``session_key``'s queue; without one it is only checked.
    """

    dedupe_key: str
    dedupe_ttl_s: float
    allowed: Callable[[Mapping[str, AccessDecision]], bool]
    session_key: str
    item: QueuedMessage | None = None
    rate_key: str = ""
    rate_window_s: float = 60.0
    rate_limit: int = 0
    budget: BudgetCheck | None = None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """What one handled message adds to the usage counters of its day, user and chat, and, with a
    ``model``, to that model's counters of the day and of its month (``day[:7]``)."""

    day: str
    user_id: str
    chat_id: str
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    model: str = ""


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What one turn leaves behind: the turns to append (none for a refusal or a model failure, which
    leave the session as it was), how many of the claim's queued messages it answered (the oldest
    ``answered``), the usage to count, and the idle time after which the session may be dropped."""

    turns: Sequence[Turn]
    answered: int
    usage: UsageDelta | None
    ttl_s: float


@dataclass(frozen=True, slots=True)
class UsageTotals:
    day: str
    messages: int
    prompt_tokens: int
    completion_tokens: int
    errors: int


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's usage by one subject in one period (a day ``YYYY-MM-DD`` or a month ``YYYY-MM``)."""

    model: str
    messages: int
    prompt_tokens: int
    completion_tokens: int
    errors: int


ALL_SUBJECTS = "*"
"""The ``subject`` of usage totals over every user and chat."""


class ChatSetting(StrEnum):
    """What ``/model`` and ``/persona`` choose for a chat."""

    MODEL = "model"
    PERSONA = "persona"


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """What a turn is answered with besides its session: the chat's choices (None: none made) and
    the asker's custom instructions ("" for none)."""

    model: str | None = None
    persona: str | None = None
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    """A session taken for one turn: ``fence`` is the lease's token that ``finish`` checks; ``queued``
    are all of its unanswered messages, oldest first; ``state`` is the session as stored (None when it
    has no turns yet); ``settings`` are the ``turn_settings`` of the newest queued message's chat and
    user, which the turn is answered with."""

    fence: int
    queued: list[QueuedMessage]
    state: SessionState | None
    settings: TurnSettings = TurnSettings()


class AccessDecision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class StoreUnavailable(Exception):
    """The backend cannot be reached; the engine answers "temporarily unavailable" and keeps running."""


class StaleLease(Exception):
    """A commit came from a lease holder that is no longer the current one (fencing)."""


class Store(Protocol):
    """The calls the engine makes, each by what it means. How a backend makes one fast (one round
    trip, one transaction) is its own business; every call is atomic."""

    async def open(self) -> None:
        """Connect and create what is missing (tables, scripts)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the backend answers and can write; raise ``StoreUnavailable`` otherwise."""
        ...

    # --- the durable queue ----------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        """Dedupe, access, rate limit and, for a prompt, the queue, stopping at the first that says no.

        The dedupe mark and the queue entry are written together: once this returns ``QUEUED`` the
        message is stored (where the backend is durable) and a redelivery of it is a duplicate; when
        it raises, neither was written and a redelivery is a new message.
        """
        ...

    async def claim(self, session_key: str, lease_s: float, max_turns: int) -> Claim | None:
        """Take the session's lease and its queued messages, without removing them, with the newest
        ``max_turns`` turns and the settings of the newest message's chat and user; None, at once, when it has nothing queued or someone holds it (whoever
        holds it looks at the queue again when they finish). The lease lapses after ``lease_s``
        unless renewed, so a holder that died frees the session."""
        ...

    async def renew(self, session_key: str, fence: int, lease_s: float) -> bool:
        """Keep holding for another ``lease_s``; False when the lease is no longer ``fence``'s."""
        ...

    async def finish(self, session_key: str, fence: int, result: TurnResult) -> int:
        """End the turn in one atomic write: append the turns, remove the answered messages from the
        queue, count the usage and release the lease; returns how many messages are still queued
        (arrived during the turn), for the holder to claim next. Raises ``StaleLease`` (and writes
        nothing) when ``fence`` no longer holds the lease."""
        ...

    async def release(self, session_key: str, fence: int) -> None:
        """Give the lease back without finishing; the queued messages stay queued."""
        ...

    async def orphans(self, older_than_s: float, limit: int) -> list[str]:
        """Sessions with messages queued for longer than ``older_than_s`` that nobody holds: those of
        a process that died, or whose answer stopped halfway. At most ``limit``, oldest first."""
        ...

    # --- marks, admin and usage reads -----------------------------------------------------------
    async def mark_once(self, key: str, ttl_s: float) -> bool:
        """Mark ``key`` for ``ttl_s`` seconds; True only for the first caller (atomic)."""
        ...

    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        """The newest ``max_turns`` turns (oldest first), or None when the session has none."""
        ...

    async def clear_session(self, session_key: str) -> bool:
        """Forget a session's history; True when there was one. Its queue is left alone."""
        ...

    async def list_sessions(self) -> list[SessionInfo]: ...

    async def set_access(self, identity: str, decision: AccessDecision) -> None: ...

    async def usage_by_day(self, days: int, subject: str = ALL_SUBJECTS) -> list[UsageTotals]:
        """Totals of the newest ``days`` days that have any usage, newest first."""
        ...

    async def usage_by_model(self, period: str, subject: str = ALL_SUBJECTS) -> list[ModelUsage]:
        """Each model's usage by ``subject`` in ``period`` (a day or a month), by model name."""
        ...

    # --- per-chat and per-user settings, runtime budgets ------------------------------------------
    async def turn_settings(self, chat_id: str, user_id: str) -> TurnSettings:
        """The chat's model and persona and the user's instructions, in one read."""
        ...

    async def set_chat_setting(self, chat_id: str, setting: ChatSetting, value: str) -> None:
        """Kept until changed: a session's reset or expiry does not touch it."""
        ...

    async def set_instructions(self, user_id: str, text: str) -> None:
        """Store the user's custom instructions; "" removes them."""
        ...

    async def set_budget(self, identity: str, tokens_per_day: int | None) -> None:
        """A runtime budget for a user or chat: tokens per day (0 = unlimited), or None to go back to
        the configured limit. ``admit`` uses it from then on, in every process."""
        ...

    async def budgets(self, identities: Sequence[str]) -> dict[str, int]:
        """The runtime budgets set for any of ``identities``."""
        ...
