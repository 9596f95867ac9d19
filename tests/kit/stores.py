"""Putting a store into a known state through its own protocol, for tests and the bench."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

from core.store import Admission, Claim, QueuedMessage, Store, Turn, TurnResult, UsageDelta, Verdict

_ids = itertools.count(1)


def queued(text: str = "hello", user_id: str = "telegram:1", key: str = "") -> QueuedMessage:
    n = next(_ids)
    return QueuedMessage(key or f"{user_id}/{n}", "telegram", user_id, user_id, text, time.time())


def admission(session_key: str, item: QueuedMessage | None = None, **overrides: object) -> Admission:
    """A message to ``session_key`` that passes every check unless ``overrides`` say otherwise."""
    values: dict[str, object] = {
        "dedupe_key": f"msg:{item.message_key if item is not None else next(_ids)}",
        "dedupe_ttl_s": 60.0,
        "allowed": lambda overrides: True,
        "session_key": session_key,
        "item": item,
    }
    values.update(overrides)
    return Admission(**values)  # type: ignore[arg-type]


async def claimed(store: Store, session_key: str, *texts: str, max_turns: int = 1000) -> Claim:
    """Queue ``texts`` in the session and claim it; fails when the session cannot be claimed."""
    for text in texts or ("hello",):
        assert await store.admit(admission(session_key, queued(text))) is Verdict.QUEUED
    claim = await store.claim(session_key, 30.0, max_turns)
    assert claim is not None, f"{session_key} could not be claimed"
    return claim


async def store_turns(
    store: Store, session_key: str, turns: Sequence[Turn], ttl_s: float = 3600.0, usage: UsageDelta | None = None
) -> None:
    """Append ``turns`` to the session the way the engine does: a message queued, claimed, answered."""
    claim = await claimed(store, session_key)
    await store.finish(session_key, claim.fence, TurnResult(turns, len(claim.queued), usage, ttl_s))


async def stored_pairs(store: Store, key: str, *, at_least: int = 0, timeout_s: float = 5.0) -> list[tuple[str, str]]:
    """A session's turns as (role, content). With ``at_least``, waits until that many are stored: a
    turn is stored just after its reply is delivered, so a test that has just seen the reply may
    look a moment too early."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await store.load_session(key, 100)
        pairs: list[tuple[str, str]] = [(turn.role, turn.content) for turn in state.turns] if state else []
        if len(pairs) >= at_least or time.monotonic() > deadline:
            return pairs
        await asyncio.sleep(0.02)
