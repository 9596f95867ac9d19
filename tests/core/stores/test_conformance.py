"""Every store backend against the one ``Store`` contract, plus what only the embedded stores promise.

The ``store`` fixture builds each backend through ``create_store``; a new backend joins the whole
suite by adding its name to ``BACKENDS`` and a branch to ``store_settings``. Timing-based checks use
tiny TTLs and windows with real sleeps, because a shared backend expires keys by its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from bots.model import ChatMessage
from core.settings import StoreBackend, StoreSettings
from core.store import (
    AccessDecision,
    BudgetCheck,
    ChatSetting,
    ModelUsage,
    QueuedMessage,
    SessionInfo,
    StaleLease,
    Store,
    StoredImage,
    StoreUnavailable,
    Turn,
    TurnResult,
    TurnSettings,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import create_store
from core.stores import sqlite as sqlite_module
from core.stores.local_leases import InProcessLeases
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore, StoreInUse
from tests.kit.stores import admission, claimed, queued, store_turns

BACKENDS = ["memory", "sqlite", "redis", "redis-sentinel", "redis-cluster"]
REDIS_FIXTURES = {"redis": "redis_server", "redis-sentinel": "redis_sentinel", "redis-cluster": "redis_cluster"}
EMBEDDED = ["memory", "sqlite"]
LEASE_S = 30.0
SESSION_TTL_S = 3600.0


def store_settings(backend: str, tmp_path: Path, redis_url: str = "") -> StoreSettings:
    if backend == "memory":
        return StoreSettings(backend=StoreBackend.MEMORY)
    if backend == "sqlite":
        return StoreSettings(backend=StoreBackend.SQLITE, sqlite_path=str(tmp_path / "chatbridge.db"))
    if backend in REDIS_FIXTURES:
        # One server for the run; each test its own key prefix, so nothing leaks between tests.
        return StoreSettings(
            backend=StoreBackend.REDIS, redis_url=redis_url, redis_key_prefix=f"test:{uuid.uuid4().hex}:"
        )
    raise ValueError(f"no test settings for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    fixture = REDIS_FIXTURES.get(request.param)
    redis_url = request.getfixturevalue(fixture).url if fixture else ""
    store = create_store(store_settings(request.param, tmp_path, redis_url))
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=EMBEDDED)
async def sweeping_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryStore | SqliteStore]:
    """An embedded store that sweeps expired entries on every write."""
    store: MemoryStore | SqliteStore
    if request.param == "memory":
        store = MemoryStore(prune_interval_s=0)
    else:
        store = SqliteStore(str(tmp_path / "chatbridge.db"), prune_interval_s=0)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "chatbridge.db")


@pytest.fixture
async def sqlite_store(sqlite_path: str) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(sqlite_path)
    await store.open()
    yield store
    await store.close()


# --- helpers ------------------------------------------------------------------------------------


def user(content: str, at: float = 1000.0, tokens: int = 3) -> Turn:
    return Turn("user", content, tokens, at)


def assistant(content: str, at: float = 1001.0, tokens: int = 5) -> Turn:
    return Turn("assistant", content, tokens, at)


async def commit(store: Store, key: str, *turns: Turn, ttl_s: float = SESSION_TTL_S) -> None:
    await store_turns(store, key, turns, ttl_s)


async def stored(store: Store, key: str) -> list[Turn]:
    state = await store.load_session(key, 1_000_000)
    return [] if state is None else state.turns


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def start_of_window(window_s: float) -> None:
    """Sleep until just after a window boundary, so the hits that follow share one window."""
    await asyncio.sleep(window_s - time.time() % window_s + 0.01)


def raw_count(path: str, table: str) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count


# --- the contract, for every backend ------------------------------------------------------------


async def test_ping_answers(store: Store) -> None:
    await store.ping()


async def test_mark_once_is_true_once_until_the_mark_expires(store: Store) -> None:
    assert await store.mark_once("denied-notice:telegram:1", 0.3) is True
    assert await store.mark_once("denied-notice:telegram:1", 0.3) is False
    assert await store.mark_once("denied-notice:telegram:2", 0.3) is True
    await asyncio.sleep(0.4)
    assert await store.mark_once("denied-notice:telegram:1", 0.3) is True


async def test_admit_has_one_winner_among_concurrent_deliveries(store: Store) -> None:
    item = queued("hello", key="telegram:1/7")
    verdicts = await asyncio.gather(*(store.admit(admission("telegram:1", item)) for _ in range(20)))
    assert sorted(verdicts) == sorted([Verdict.QUEUED] + [Verdict.DUPLICATE] * 19)
    claim = await store.claim("telegram:1", LEASE_S, 10)
    assert claim is not None and claim.queued == [item]


async def test_admit_stops_at_a_duplicate_a_denial_or_the_rate_limit_and_queues_nothing(store: Store) -> None:
    first = queued("first")
    assert await store.admit(admission("telegram:1", first)) is Verdict.QUEUED
    assert await store.admit(admission("telegram:1", first)) is Verdict.DUPLICATE
    denied = admission("telegram:1", queued("denied"), allowed=lambda overrides: False)
    assert await store.admit(denied) is Verdict.DENIED
    limited = {"rate_key": "rate:telegram:1", "rate_window_s": 60.0, "rate_limit": 1}
    assert await store.admit(admission("telegram:1", queued("hit 1"), **limited)) is Verdict.QUEUED
    assert await store.admit(admission("telegram:1", queued("hit 2"), **limited)) is Verdict.RATE_LIMITED

    claim = await store.claim("telegram:1", LEASE_S, 10)
    assert claim is not None and [item.text for item in claim.queued] == ["first", "hit 1"]


async def test_admit_without_an_item_only_checks(store: Store) -> None:
    assert await store.admit(admission("telegram:1", None, dedupe_key="msg:c1")) is Verdict.ACCEPTED
    assert await store.admit(admission("telegram:1", None, dedupe_key="msg:c1")) is Verdict.DUPLICATE
    assert await store.claim("telegram:1", LEASE_S, 10) is None


async def test_admit_decides_on_the_current_runtime_decisions(store: Store) -> None:
    def allowed(overrides: Mapping[str, AccessDecision]) -> bool:
        return overrides.get("telegram:1") is not AccessDecision.DENY

    assert await store.admit(admission("telegram:1", queued(), allowed=allowed)) is Verdict.QUEUED
    await store.set_access("telegram:1", AccessDecision.DENY)
    assert await store.admit(admission("telegram:1", queued(), allowed=allowed)) is Verdict.DENIED
    await store.set_access("telegram:1", AccessDecision.ALLOW)
    assert await store.admit(admission("telegram:1", queued(), allowed=allowed)) is Verdict.QUEUED


async def test_the_rate_limit_counts_in_fixed_windows(store: Store) -> None:
    window_s = 0.3
    limited = {"rate_key": "rate:telegram:1", "rate_window_s": window_s, "rate_limit": 2}
    await start_of_window(window_s)
    verdicts = [await store.admit(admission("telegram:1", queued(), **limited)) for _ in range(3)]
    assert verdicts == [Verdict.QUEUED, Verdict.QUEUED, Verdict.RATE_LIMITED]
    await start_of_window(window_s)
    assert await store.admit(admission("telegram:1", queued(), **limited)) is Verdict.QUEUED


async def test_a_claim_takes_the_queue_in_arrival_order_with_the_session(store: Store) -> None:
    await store_turns(store, "telegram:1", [user("q1", 10.0), assistant("a1", 11.0)])
    claim = await claimed(store, "telegram:1", "part 1", "part 2", "part 3")

    assert [item.text for item in claim.queued] == ["part 1", "part 2", "part 3"]
    assert claim.queued[0].platform == "telegram" and claim.queued[0].user_id == "telegram:1"
    assert claim.state is not None
    assert claim.state.turns == [user("q1", 10.0), assistant("a1", 11.0)] and claim.state.last_active == 11.0


async def test_a_claim_is_exclusive_and_never_waits(store: Store) -> None:
    claim = await claimed(store, "telegram:1", "hello")
    assert await store.claim("telegram:1", LEASE_S, 10) is None, "a held session was claimed twice"
    assert await store.claim("telegram:404", LEASE_S, 10) is None, "a session with nothing queued was claimed"
    await claimed(store, "telegram:2", "other")  # another session is not held by the first's lease
    await store.release("telegram:1", claim.fence)
    again = await store.claim("telegram:1", LEASE_S, 10)
    assert again is not None and [item.text for item in again.queued] == ["hello"], "released messages were lost"
    assert again.fence > claim.fence


async def test_finishing_stores_the_turn_removes_what_it_answered_and_frees_the_session(store: Store) -> None:
    claim = await claimed(store, "telegram:1", "one", "two")
    assert await store.admit(admission("telegram:1", queued("three"))) is Verdict.QUEUED  # arrives meanwhile
    usage = UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=2, prompt_tokens=10, completion_tokens=4)
    turns = [user("one\ntwo", 10.0), assistant("answer", 11.0)]
    await store.finish("telegram:1", claim.fence, TurnResult(turns, len(claim.queued), usage, SESSION_TTL_S))

    assert await stored(store, "telegram:1") == turns
    assert await store.usage_by_day(1) == [UsageTotals("2024-05-01", 2, 10, 4, 0)]
    after = await store.claim("telegram:1", LEASE_S, 10)
    assert after is not None and [item.text for item in after.queued] == ["three"]
    assert after.state is not None and after.state.turns == turns
    await store.finish("telegram:1", after.fence, TurnResult((), 1, None, SESSION_TTL_S))
    assert await store.claim("telegram:1", LEASE_S, 10) is None
    assert await stored(store, "telegram:1") == turns, "a turn without turns changed the session"


async def test_a_stale_fence_stores_and_removes_nothing(store: Store) -> None:
    stale = await claimed(store, "telegram:1", "question")
    await store.release("telegram:1", stale.fence)
    current = await store.claim("telegram:1", LEASE_S, 10)
    assert current is not None
    usage = UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=1)
    with pytest.raises(StaleLease):
        await store.finish("telegram:1", stale.fence, TurnResult([user("stale")], 1, usage, SESSION_TTL_S))
    assert await stored(store, "telegram:1") == []
    assert await store.usage_by_day(1) == []
    assert not await store.renew("telegram:1", stale.fence, LEASE_S)
    assert await store.renew("telegram:1", current.fence, LEASE_S)
    await store.finish("telegram:1", current.fence, TurnResult([user("current")], 1, None, SESSION_TTL_S))
    assert await stored(store, "telegram:1") == [user("current")]


async def test_orphans_are_queues_nobody_holds_that_did_not_move(store: Store) -> None:
    await claimed(store, "telegram:1", "held")
    assert await store.admit(admission("telegram:2", queued("left behind"))) is Verdict.QUEUED
    assert await store.orphans(60.0, 10) == [], "a queue younger than the age asked for is no orphan"
    assert await store.orphans(0.0, 10) == ["telegram:2"]
    answered = await claimed(store, "telegram:3", "answered")
    await store.finish("telegram:3", answered.fence, TurnResult((), 1, None, SESSION_TTL_S))
    assert await store.orphans(0.0, 10) == ["telegram:2"]
    assert await store.orphans(0.0, 0) == []


async def test_a_released_session_is_an_orphan_again(store: Store) -> None:
    claim = await claimed(store, "telegram:1", "cut short")
    assert await store.orphans(0.0, 10) == []
    await store.release("telegram:1", claim.fence)
    assert await store.orphans(0.0, 10) == ["telegram:1"]


async def test_commit_appends_and_load_returns_the_newest_turns_oldest_first(store: Store) -> None:
    await commit(store, "telegram:1", user("q1", 10.0, 4), assistant("a1", 11.0, 7))
    await commit(store, "telegram:1", user("q2", 20.0, 2), assistant("a2", 21.0, 9))
    await commit(store, "telegram:1", user("q3", 30.0, 1), assistant("a3", 31.0, 3))

    state = await store.load_session("telegram:1", 4)
    assert state is not None
    assert state.key == "telegram:1"
    assert state.turns == [
        user("q2", 20.0, 2),
        assistant("a2", 21.0, 9),
        user("q3", 30.0, 1),
        assistant("a3", 31.0, 3),
    ]
    assert state.last_active == 31.0
    assert len(await stored(store, "telegram:1")) == 6


async def test_an_assistant_turn_keeps_its_tool_calls_and_results(store: Store) -> None:
    """Design section 2 step 10: the calls and results between a question and its answer are part of
    the turn group and come back with it, in order, whatever their keys."""
    steps = (
        ChatMessage(
            role="assistant",
            content="",
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "π"}'}}],
        ),
        ChatMessage(role="tool", content="result: 3.14159 ✓", tool_call_id="c1"),
    )
    answer = Turn("assistant", "π is about 3.14", 40, 11.0, steps=steps)
    await commit(store, "telegram:1", user("what is pi?", 10.0), answer)
    await commit(store, "telegram:1", user("thanks", 20.0), assistant("you're welcome", 21.0))

    assert await stored(store, "telegram:1") == [
        user("what is pi?", 10.0),
        answer,
        user("thanks", 20.0),
        assistant("you're welcome", 21.0),
    ]


async def test_a_pictured_question_and_an_answer_with_tool_steps_come_back_together(store: Store) -> None:
    """Pictures (of user turns) and tool steps (of assistant turns) are stored side by side: each
    turn gets back its own, and neither is lost when the other is there."""
    picture = StoredImage("image/jpeg", bytes(range(256)), 85)
    asked = Turn("user", "what animal is this?", 5, 10.0, images=(picture,))
    steps = (
        ChatMessage(
            role="assistant",
            content="",
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        ),
        ChatMessage(role="tool", content="otters are mustelids", tool_call_id="c1"),
    )
    answer = Turn("assistant", "an otter", 20, 11.0, steps=steps)
    await commit(store, "telegram:1", asked, answer, user("thanks", 12.0))
    assert await stored(store, "telegram:1") == [asked, answer, user("thanks", 12.0)]


async def test_load_session_edges(store: Store) -> None:
    assert await store.load_session("telegram:404", 10) is None
    await commit(store, "telegram:1", user("q", 10.0), assistant("a", 11.0))

    none_wanted = await store.load_session("telegram:1", 0)
    assert none_wanted is not None and none_wanted.turns == [] and none_wanted.last_active == 11.0
    everything = await store.load_session("telegram:1", 100)
    assert everything is not None and everything.turns == [user("q", 10.0), assistant("a", 11.0)]


async def test_sessions_are_kept_apart(store: Store) -> None:
    await commit(store, "telegram:1", user("mine"))
    await commit(store, "telegram:2", user("yours"))
    assert await stored(store, "telegram:1") == [user("mine")]
    assert await stored(store, "telegram:2") == [user("yours")]


async def test_clear_session_forgets_the_history(store: Store) -> None:
    await commit(store, "telegram:1", user("q"), assistant("a"))
    await commit(store, "telegram:2", user("other"))

    assert await store.clear_session("telegram:1") is True
    assert await store.load_session("telegram:1", 10) is None
    assert await store.clear_session("telegram:1") is False
    assert await stored(store, "telegram:2") == [user("other")]

    await commit(store, "telegram:1", user("fresh", 50.0))
    assert await stored(store, "telegram:1") == [user("fresh", 50.0)]


async def test_list_sessions_shows_sessions_with_turns_newest_first(store: Store) -> None:
    assert await store.list_sessions() == []
    await commit(store, "telegram:1", user("q", 10.0), assistant("a", 11.0))
    await commit(store, "slack:C1", user("q", 20.0))
    await commit(store, "telegram:1", user("q", 30.0), assistant("a", 31.0))
    assert await store.admit(admission("discord:9", queued())) is Verdict.QUEUED

    assert await store.list_sessions() == [
        SessionInfo("telegram:1", 31.0, 4),
        SessionInfo("slack:C1", 20.0, 1),
    ]
    await store.clear_session("telegram:1")
    assert await store.list_sessions() == [SessionInfo("slack:C1", 20.0, 1)]


async def test_access_decisions_are_set_and_replaced(store: Store) -> None:
    async def decisions() -> dict[str, AccessDecision]:
        seen: dict[str, AccessDecision] = {}

        def record(overrides: Mapping[str, AccessDecision]) -> bool:
            seen.clear()
            seen.update(overrides)
            return True

        await store.admit(admission("telegram:1", None, allowed=record))
        return seen

    assert await decisions() == {}
    await store.set_access("telegram:1", AccessDecision.ALLOW)
    await store.set_access("slack:U2", AccessDecision.DENY)
    await store.set_access("telegram:1", AccessDecision.DENY)
    assert await decisions() == {"telegram:1": AccessDecision.DENY, "slack:U2": AccessDecision.DENY}
    await store.set_access("slack:U2", AccessDecision.ALLOW)
    assert (await decisions())["slack:U2"] is AccessDecision.ALLOW


async def test_usage_is_totalled_per_day_for_all_the_user_and_the_chat(store: Store) -> None:
    group = "telegram:-100"

    async def add_usage(delta: UsageDelta) -> None:
        await store_turns(store, delta.chat_id, (), usage=delta)

    await add_usage(UsageDelta("2024-05-01", "telegram:1", group, messages=1, prompt_tokens=10, completion_tokens=5))
    await add_usage(UsageDelta("2024-05-01", "telegram:2", group, messages=2, prompt_tokens=20, completion_tokens=7))
    await add_usage(UsageDelta("2024-05-01", "telegram:2", group, errors=1))
    # A private chat whose id is the user's own: counted once for that identity.
    await add_usage(
        UsageDelta("2024-05-02", "telegram:1", "telegram:1", messages=1, prompt_tokens=3, completion_tokens=1)
    )
    await add_usage(UsageDelta("2024-04-30", "slack:U1", "slack:C1", messages=4, prompt_tokens=40, completion_tokens=8))

    assert await store.usage_by_day(2) == [
        UsageTotals("2024-05-02", 1, 3, 1, 0),
        UsageTotals("2024-05-01", 3, 30, 12, 1),
    ]
    assert await store.usage_by_day(10) == [
        UsageTotals("2024-05-02", 1, 3, 1, 0),
        UsageTotals("2024-05-01", 3, 30, 12, 1),
        UsageTotals("2024-04-30", 4, 40, 8, 0),
    ]
    assert await store.usage_by_day(10, "telegram:1") == [
        UsageTotals("2024-05-02", 1, 3, 1, 0),
        UsageTotals("2024-05-01", 1, 10, 5, 0),
    ]
    assert await store.usage_by_day(10, "telegram:2") == [UsageTotals("2024-05-01", 2, 20, 7, 1)]
    assert await store.usage_by_day(10, group) == [UsageTotals("2024-05-01", 3, 30, 12, 1)]
    assert await store.usage_by_day(10, "slack:C1") == [UsageTotals("2024-04-30", 4, 40, 8, 0)]
    assert await store.usage_by_day(10, "telegram:404") == []


async def test_usage_is_totalled_per_model_by_day_and_by_month(store: Store) -> None:
    async def add_usage(delta: UsageDelta) -> None:
        await store_turns(store, delta.chat_id, (), usage=delta)

    group = "telegram:-100"
    await add_usage(UsageDelta("2024-05-01", "telegram:1", group, 1, 100, 10, model="default"))
    await add_usage(UsageDelta("2024-05-01", "telegram:1", group, 1, 200, 20, model="vision"))
    await add_usage(UsageDelta("2024-05-02", "telegram:1", group, 1, 300, 30, model="default"))
    await add_usage(UsageDelta("2024-05-02", "telegram:2", group, 0, 0, 0, errors=1, model="default"))
    await add_usage(UsageDelta("2024-06-01", "telegram:1", group, 1, 400, 40, model="default"))
    await add_usage(UsageDelta("2024-05-02", "telegram:1", group, 1, 7, 7))  # no model: only the day's totals

    assert await store.usage_by_model("2024-05-01", "telegram:1") == [
        ModelUsage("default", 1, 100, 10, 0),
        ModelUsage("vision", 1, 200, 20, 0),
    ]
    assert await store.usage_by_model("2024-05", "telegram:1") == [
        ModelUsage("default", 2, 400, 40, 0),
        ModelUsage("vision", 1, 200, 20, 0),
    ]
    assert await store.usage_by_model("2024-05") == [
        ModelUsage("default", 2, 400, 40, 1),
        ModelUsage("vision", 1, 200, 20, 0),
    ]
    assert await store.usage_by_model("2024-05", group) == await store.usage_by_model("2024-05")
    assert await store.usage_by_model("2024-05", "telegram:2") == [ModelUsage("default", 0, 0, 0, 1)]
    assert await store.usage_by_model("2024-06-01", "telegram:1") == [ModelUsage("default", 1, 400, 40, 0)]
    assert await store.usage_by_model("2024-07", "telegram:1") == []
    assert (await store.usage_by_day(1, "telegram:1"))[0].prompt_tokens == 400


def budget(
    day: str = "2024-05-01", user: str = "telegram:1", chat: str = "telegram:-100", **limits: int
) -> BudgetCheck:
    return BudgetCheck(day, user, chat, **limits)


async def spend(store: Store, user: str, chat: str, tokens: int, day: str = "2024-05-01") -> None:
    await store_turns(store, chat, (), usage=UsageDelta(day, user, chat, 1, tokens - tokens // 4, tokens // 4))


async def test_a_prompt_is_refused_once_a_budget_is_spent_and_nothing_is_queued(store: Store) -> None:
    group = "telegram:-100"

    async def verdict(check: BudgetCheck) -> Verdict:
        return await store.admit(admission(group, queued(user_id=check.user_id), budget=check))

    assert await verdict(budget(user_limit=100, chat_limit=1000, total_limit=10_000)) is Verdict.QUEUED
    await spend(store, "telegram:1", group, 99)
    assert await verdict(budget(user_limit=100)) is Verdict.QUEUED  # 99 of 100: not spent yet
    await spend(store, "telegram:1", group, 1)
    assert await verdict(budget(user_limit=100, chat_limit=100, total_limit=100)) is Verdict.OVER_USER_BUDGET
    assert await verdict(budget(user="telegram:2", user_limit=100, chat_limit=100)) is Verdict.OVER_CHAT_BUDGET
    assert await verdict(budget(user="telegram:2", chat="telegram:-200", total_limit=100)) is Verdict.OVER_TOTAL_BUDGET
    assert await verdict(budget(day="2024-05-02", user_limit=100, chat_limit=100, total_limit=100)) is Verdict.QUEUED
    assert await verdict(budget()) is Verdict.QUEUED  # no limits: unlimited
    # Commands are checked without a budget.
    assert await store.admit(admission(group, None)) is Verdict.ACCEPTED

    claim = await store.claim(group, LEASE_S, 10)  # the last ``spend`` answered what was queued before
    assert claim is not None and len(claim.queued) == 2


async def test_runtime_budgets_replace_the_configured_limit_of_their_identity(store: Store) -> None:
    group = "telegram:-100"
    await spend(store, "telegram:1", group, 500)

    async def verdict(user_limit: int = 0, chat_limit: int = 0) -> Verdict:
        check = budget(user_limit=user_limit, chat_limit=chat_limit)
        return await store.admit(admission(group, queued(), budget=check))

    await store.set_budget("telegram:1", 400)
    assert await verdict() is Verdict.OVER_USER_BUDGET
    await store.set_budget("telegram:1", 0)  # unlimited, whatever the configuration says
    assert await verdict(user_limit=100) is Verdict.QUEUED
    await store.set_budget("telegram:1", None)  # back to the configured limit
    assert await verdict(user_limit=100) is Verdict.OVER_USER_BUDGET
    await store.set_budget(group, 600)
    assert await verdict(chat_limit=100) is Verdict.QUEUED
    assert await store.budgets(["telegram:1", group, "telegram:9"]) == {group: 600}
    assert await store.budgets([]) == {}


async def test_chat_settings_and_instructions_are_kept_apart_and_survive_a_reset(store: Store) -> None:
    assert await store.turn_settings("telegram:-100", "telegram:1") == TurnSettings()
    await store.set_chat_setting("telegram:-100", ChatSetting.MODEL, "vision")
    await store.set_chat_setting("telegram:-100", ChatSetting.PERSONA, "translator")
    await store.set_chat_setting("telegram:-100", ChatSetting.MODEL, "local")
    await store.set_instructions("telegram:1", "Answer in French.")
    await commit(store, "telegram:-100", user("q"), assistant("a"))
    await store.clear_session("telegram:-100")

    assert await store.turn_settings("telegram:-100", "telegram:1") == TurnSettings(
        "local", "translator", "Answer in French."
    )
    assert await store.turn_settings("telegram:-200", "telegram:1") == TurnSettings(instructions="Answer in French.")
    assert await store.turn_settings("telegram:-100", "telegram:2") == TurnSettings("local", "translator")
    await store.set_instructions("telegram:1", "")
    assert (await store.turn_settings("telegram:-100", "telegram:1")).instructions == ""


async def test_a_claim_brings_the_settings_of_its_newest_messages_chat_and_user(store: Store) -> None:
    group = "telegram:-100"
    await store.set_chat_setting(group, ChatSetting.PERSONA, "translator")
    await store.set_instructions("telegram:2", "Be brief.")
    first = QueuedMessage("telegram:-100/1", "telegram", group, "telegram:1", "one", 1.0)
    second = QueuedMessage("telegram:-100/2", "telegram", group, "telegram:2", "two", 2.0)
    for item in (first, second):
        assert await store.admit(admission(group, item)) is Verdict.QUEUED
    claim = await store.claim(group, LEASE_S, 10)
    assert claim is not None and claim.settings == TurnSettings(None, "translator", "Be brief.")
    await store.finish(group, claim.fence, TurnResult((user("q"), assistant("a")), 2, None, SESSION_TTL_S))
    await store.set_chat_setting(group, ChatSetting.MODEL, "local")
    third = QueuedMessage("telegram:-100/3", "telegram", group, "telegram:1", "three", 3.0)
    assert await store.admit(admission(group, third)) is Verdict.QUEUED
    claim = await store.claim(group, LEASE_S, 10)
    assert claim is not None and claim.settings == TurnSettings("local", "translator")


# --- embedded stores: in-process ordering and sweeping ------------------------------------------


async def test_in_process_leases_forget_released_sessions() -> None:
    leases = InProcessLeases()
    fence = leases.take("telegram:1")
    assert fence is not None and leases.take("telegram:1") is None
    leases.check("telegram:1", fence)
    leases.release("telegram:1", fence)
    assert len(leases) == 0
    with pytest.raises(StaleLease):
        leases.check("telegram:1", fence)
    for n in range(1000):
        token = leases.take(f"telegram:{n}")
        assert token is not None and token > fence
        leases.release(f"telegram:{n}", token)
    assert len(leases) == 0


async def test_a_claim_cancelled_halfway_leaves_the_session_free(sqlite_store: SqliteStore) -> None:
    assert await sqlite_store.admit(admission("telegram:1", queued("hello"))) is Verdict.QUEUED
    claiming = asyncio.create_task(sqlite_store.claim("telegram:1", LEASE_S, 10))
    await asyncio.sleep(0)
    claiming.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        claim = await claiming
        await sqlite_store.release("telegram:1", claim.fence if claim else 0)
    assert await sqlite_store.orphans(0.0, 10) == ["telegram:1"]


async def test_expired_entries_are_swept_and_live_ones_kept(sweeping_store: MemoryStore | SqliteStore) -> None:
    store = sweeping_store
    await store.admit(admission("telegram:x", None, dedupe_key="msg:old", dedupe_ttl_s=0.05))
    await store.admit(
        admission(
            "telegram:x",
            None,
            dedupe_key="msg:old2",
            dedupe_ttl_s=0.05,
            rate_key="rate:telegram:1",
            rate_window_s=0.05,
            rate_limit=5,
        )
    )
    await commit(store, "telegram:old", user("old"), ttl_s=0.05)
    await commit(store, "telegram:live", user("live"), ttl_s=SESSION_TTL_S)
    await asyncio.sleep(0.1)

    # Reading an expired session does not delete it; the engine decides when a session is idle.
    assert await stored(store, "telegram:old") == [user("old")]
    await store.mark_once("msg:new", 60)  # any write may sweep

    assert await store.load_session("telegram:old", 10) is None
    assert await stored(store, "telegram:live") == [user("live")]
    assert [info.key for info in await store.list_sessions()] == ["telegram:live"]
    # The marks of the messages that put the turns there expire with their own ttl.
    if isinstance(store, SqliteStore):
        assert raw_count(store._path, "rate_windows") == 0
        assert raw_count(store._path, "turns") == 1
        with sqlite3.connect(store._path) as db:
            marks = {key for (key,) in db.execute("SELECT key FROM seen")}
    else:
        assert store._windows == {}
        marks = set(store._seen)
    assert "msg:old" not in marks and "msg:old2" not in marks and "msg:new" in marks


# --- sqlite only ------------------------------------------------------------------------------


async def test_sqlite_keeps_sessions_access_usage_and_dedupe_across_a_restart(sqlite_path: str) -> None:
    first = SqliteStore(sqlite_path)
    await first.open()
    await commit(first, "telegram:1", user("q", 10.0), assistant("a", 11.0))
    await first.set_access("telegram:7", AccessDecision.DENY)
    await store_turns(first, "telegram:1", (), usage=UsageDelta("2024-05-01", "telegram:1", "telegram:1", 1, 9))
    await store_turns(
        first, "telegram:1", (), usage=UsageDelta("2024-05-01", "telegram:1", "telegram:1", 1, 5, 1, 0, "x")
    )
    await first.set_chat_setting("telegram:-100", ChatSetting.MODEL, "vision")
    await first.set_instructions("telegram:1", "Be brief.")
    await first.set_budget("telegram:1", 5)
    assert await first.admit(admission("telegram:1", None, dedupe_key="msg:1")) is Verdict.ACCEPTED
    assert await first.admit(admission("telegram:2", queued("unanswered"))) is Verdict.QUEUED
    await first.close()

    second = SqliteStore(sqlite_path)
    await second.open()
    try:
        assert await stored(second, "telegram:1") == [user("q", 10.0), assistant("a", 11.0)]
        assert await second.list_sessions() == [SessionInfo("telegram:1", 11.0, 2)]
        denied = admission("telegram:7", None, allowed=lambda overrides: "telegram:7" not in overrides)
        assert await second.admit(denied) is Verdict.DENIED
        assert await second.usage_by_day(7) == [UsageTotals("2024-05-01", 2, 14, 1, 0)]
        assert await second.usage_by_model("2024-05") == [ModelUsage("x", 1, 5, 1, 0)]
        assert await second.turn_settings("telegram:-100", "telegram:1") == TurnSettings("vision", None, "Be brief.")
        over = admission("telegram:1", queued(), budget=budget(day="2024-05-01", chat="telegram:1"))
        assert await second.admit(over) is Verdict.OVER_USER_BUDGET
        assert await second.admit(admission("telegram:1", None, dedupe_key="msg:1")) is Verdict.DUPLICATE
        assert await second.orphans(0.0, 10) == ["telegram:2"]
        left = await second.claim("telegram:2", LEASE_S, 10)
        assert left is not None and [item.text for item in left.queued] == ["unanswered"]
        await second.release("telegram:2", left.fence)
        await commit(second, "telegram:1", user("q2", 20.0))
        assert [turn.content for turn in await stored(second, "telegram:1")] == ["q", "a", "q2"]
    finally:
        await second.close()


async def test_sqlite_opens_a_file_made_before_tool_steps_and_pictures_were_stored(sqlite_path: str) -> None:
    with sqlite3.connect(sqlite_path) as db:
        db.execute(
            "CREATE TABLE turns (session_key TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, "
            "content TEXT NOT NULL, tokens INTEGER NOT NULL, created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO turns VALUES ('telegram:1', 0, 'user', 'old question', 3, 10.0)")
        db.execute(
            "CREATE TABLE sessions (key TEXT PRIMARY KEY, last_active REAL NOT NULL, "
            "expires_at REAL NOT NULL, turn_count INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO sessions VALUES ('telegram:1', 10.0, 1e12, 1)")
    store = SqliteStore(sqlite_path)
    await store.open()
    try:
        answer = Turn("assistant", "a", 5, 11.0, steps=(ChatMessage(role="tool", content="r", tool_call_id="c"),))
        pictured = Turn("user", "and this?", 3, 12.0, images=(StoredImage("image/png", b"\x89PNG", 85),))
        await commit(store, "telegram:1", answer, pictured)
        assert await stored(store, "telegram:1") == [user("old question", 10.0), answer, pictured]
    finally:
        await store.close()


async def test_sqlite_runs_in_wal_mode(sqlite_store: SqliteStore, sqlite_path: str) -> None:
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_failed_commit_leaves_the_session_as_it_was(sqlite_store: SqliteStore) -> None:
    await commit(sqlite_store, "telegram:1", user("q", 10.0), assistant("a", 11.0))
    broken = Turn("assistant", cast(Any, None), 1, 21.0)

    claim = await claimed(sqlite_store, "telegram:1", "q2")
    with pytest.raises(StoreUnavailable):
        await sqlite_store.finish("telegram:1", claim.fence, TurnResult([user("q2", 20.0), broken], 1, None, 60.0))
    # Nothing of the turn landed, the question is still queued, and the lease is still held.
    assert await stored(sqlite_store, "telegram:1") == [user("q", 10.0), assistant("a", 11.0)]
    await sqlite_store.finish("telegram:1", claim.fence, TurnResult([user("q3", 30.0)], 1, None, 60.0))

    assert await stored(sqlite_store, "telegram:1") == [user("q", 10.0), assistant("a", 11.0), user("q3", 30.0)]
    assert await sqlite_store.list_sessions() == [SessionInfo("telegram:1", 30.0, 3)]
    assert await sqlite_store.claim("telegram:1", LEASE_S, 10) is None


async def test_sqlite_loads_the_newest_turns_of_a_long_session_by_index(
    sqlite_store: SqliteStore, sqlite_path: str
) -> None:
    turns = [Turn("user" if i % 2 == 0 else "assistant", f"turn {i}", i, float(i)) for i in range(10_000)]
    await commit(sqlite_store, "telegram:1", *turns)

    started = time.monotonic()
    state = await sqlite_store.load_session("telegram:1", 40)
    elapsed = time.monotonic() - started
    assert state is not None and state.turns == turns[-40:]
    assert elapsed < 1.0
    with sqlite3.connect(sqlite_path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT role, content, tokens, created_at FROM turns"
            " WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
            ("telegram:1", 40),
        ).fetchall()
    assert "turns_by_session" in str(plan) and "TEMP B-TREE" not in str(plan)


async def test_sqlite_waits_for_another_writer_without_blocking_the_event_loop(
    sqlite_store: SqliteStore, sqlite_path: str
) -> None:
    """Calls run on the event loop's thread, but one that meets a file locked by someone else (a
    backup tool, a manual fix) waits on the worker thread; calls after it queue behind it."""
    other = sqlite3.connect(sqlite_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    write = asyncio.create_task(sqlite_store.mark_once("msg:1", 60))
    read = asyncio.create_task(sqlite_store.list_sessions())
    await asyncio.sleep(0.3)
    assert not write.done() and not read.done()
    assert ticks >= 10, "the event loop was blocked while the file was locked"
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(write, 5) is True
    assert await asyncio.wait_for(read, 5) == []
    ticker.cancel()
    assert await sqlite_store.mark_once("msg:1", 60) is False


async def test_sqlite_checkpoints_the_wal_into_the_file(
    sqlite_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY_WRITES", 10)
    store = SqliteStore(sqlite_path)
    await store.open()
    for n in range(12):
        await store.mark_once(f"msg:{n}", 60)
    await until(lambda: store._checkpoint is None)
    # The database file alone, without its WAL, holds what was written before the checkpoint.
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(sqlite_path).read_bytes())
    assert raw_count(str(copy), "seen") >= 9
    await store.close()


async def test_sqlite_errors_surface_as_store_unavailable(tmp_path: Path) -> None:
    missing_dir = SqliteStore(str(tmp_path / "no-such-dir" / "chatbridge.db"))
    with pytest.raises(StoreUnavailable):
        await missing_dir.open()

    store = SqliteStore(str(tmp_path / "chatbridge.db"))
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.mark_once("msg:1", 60)


async def test_sqlite_serves_one_process_and_check_may_look_alongside(
    sqlite_store: SqliteStore, sqlite_path: str
) -> None:
    second = SqliteStore(sqlite_path)
    with pytest.raises(StoreInUse) as refused:
        await second.open()
    message = str(refused.value)
    assert message.startswith(f"store.sqlite_path: {sqlite_path} is in use by chatbridge process {os.getpid()};")
    assert "store.backend: redis" in message
    looking = SqliteStore(sqlite_path, exclusive=False)
    await looking.open()
    await looking.ping()
    await looking.close()
    await sqlite_store.close()
    await second.open()  # free once the first one is gone
    await second.close()


async def test_sqlite_sweeps_and_shrinks_on_a_timer_without_any_write(tmp_path: Path) -> None:
    path = str(tmp_path / "chatbridge.db")
    store = SqliteStore(path, housekeeping_interval_s=0.2)
    await store.open()
    try:
        for n in range(300):
            await store.mark_once(f"msg:{n}:" + "x" * 200, 0.05)
        assert Path(f"{path}-wal").stat().st_size > 0
        await asyncio.sleep(0.6)  # no write meanwhile: only the timer can sweep
        assert raw_count(path, "seen") <= 1  # the ping's mark may be the one left
        assert Path(f"{path}-wal").stat().st_size == 0
    finally:
        await store.close()


# --- media: attachments in the queue, pictures with the session -----------------------------------


async def test_a_queued_message_keeps_its_attachment_records(store: Store) -> None:
    record: dict[str, str | int | bool | None] = {
        "kind": "image",
        "mime_type": "image/jpeg",
        "name": "p.jpg",
        "size": 12,
        "source": "f1",
        "voice": False,
    }
    item = dataclasses.replace(queued("what is this?"), attachments=(record,))
    assert await store.admit(admission("telegram:1", item)) is Verdict.QUEUED
    claim = await store.claim("telegram:1", LEASE_S, 10)
    assert claim is not None and [dict(r) for r in claim.queued[0].attachments] == [record]


async def test_a_turns_pictures_are_stored_with_it_and_cleared_with_the_session(store: Store) -> None:
    picture = StoredImage("image/jpeg", bytes(range(256)) * 4, 85)
    asked = Turn("user", "what is this?", 4, 10.0, (picture, StoredImage("image/png", b"\x89PNG", 85)))
    await commit(store, "telegram:1", asked, assistant("a cat", 11.0), user("and its colour?", 12.0))
    assert await stored(store, "telegram:1") == [asked, assistant("a cat", 11.0), user("and its colour?", 12.0)]
    state = await store.load_session("telegram:1", 2)
    assert state is not None and [t.images for t in state.turns] == [(), ()]
    assert await store.clear_session("telegram:1")
    await commit(store, "telegram:1", user("fresh", 50.0))
    assert await stored(store, "telegram:1") == [user("fresh", 50.0)], "a cleared session's pictures came back"
