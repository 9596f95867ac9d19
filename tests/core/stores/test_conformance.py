"""Every store backend against the one ``Store`` contract, plus what only the embedded stores promise.

The ``store`` fixture builds each backend through ``create_store``; a new backend joins the whole
suite by adding its name to ``BACKENDS`` and a branch to ``store_settings``. Timing-based checks use
tiny TTLs and windows with real sleeps, because a shared backend expires keys by its own clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from core.settings import StoreBackend, StoreSettings
from core.store import (
    AccessDecision,
    Admission,
    PendingMessage,
    SessionInfo,
    StaleLease,
    Store,
    StoreUnavailable,
    Turn,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import create_store
from core.stores import sqlite as sqlite_module
from core.stores.local_ordering import LocalOrdering
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite", "redis", "redis-sentinel", "redis-cluster"]
REDIS_FIXTURES = {"redis": "redis_server", "redis-sentinel": "redis_sentinel", "redis-cluster": "redis_cluster"}
EMBEDDED = ["memory", "sqlite"]
LEASE_TTL_S = 30.0
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


def pending(n: int, user_id: str = "telegram:1") -> PendingMessage:
    return PendingMessage(f"telegram:1:{n}", user_id, f"part {n}", 1000.0 + n)


async def commit(store: Store, key: str, *turns: Turn, ttl_s: float = SESSION_TTL_S) -> None:
    async with store.lease(key, LEASE_TTL_S) as fence:
        await store.commit_turns(key, turns, fence, ttl_s)


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


async def test_first_seen_is_true_once_until_the_mark_expires(store: Store) -> None:
    assert await store.first_seen("msg:1", 0.05) is True
    assert await store.first_seen("msg:1", 0.05) is False
    assert await store.first_seen("msg:2", 0.05) is True
    await asyncio.sleep(0.1)
    assert await store.first_seen("msg:1", 0.05) is True
    assert await store.first_seen("msg:1", 0.05) is False


async def test_first_seen_has_one_winner_among_concurrent_callers(store: Store) -> None:
    results = await asyncio.gather(*(store.first_seen("msg:race", 60) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]


async def test_pending_messages_come_back_in_arrival_order_and_only_once(store: Store) -> None:
    for n in range(3):
        await store.enqueue("telegram:1", pending(n))
    await store.enqueue("telegram:2", pending(9, "telegram:2"))

    assert await store.take_pending("telegram:1") == [pending(0), pending(1), pending(2)]
    assert await store.take_pending("telegram:1") == []
    assert await store.take_pending("telegram:2") == [pending(9, "telegram:2")]
    assert await store.take_pending("telegram:3") == []


async def test_first_seen_with_access_answers_both_in_one_step(store: Store) -> None:
    assert await store.first_seen_with_access("msg:1", 60) == (True, {})
    await store.set_access("telegram:9", AccessDecision.DENY)
    assert await store.first_seen_with_access("msg:1", 60) == (False, {"telegram:9": AccessDecision.DENY})
    assert await store.first_seen("msg:1", 60) is False
    assert await store.first_seen_with_access("msg:2", 60) == (True, {"telegram:9": AccessDecision.DENY})


async def test_hold_for_turn_queues_the_message_before_waiting(store: Store) -> None:
    taken: list[list[PendingMessage]] = []
    release_first = asyncio.Event()

    async def hold(item: PendingMessage, gate: asyncio.Event | None = None) -> None:
        async with store.hold_for_turn("telegram:1", LEASE_TTL_S, item, 10) as held:
            if gate is not None:
                await gate.wait()
            taken.append(held.waiting + await store.take_pending("telegram:1"))

    first = asyncio.create_task(hold(pending(0), release_first))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(hold(pending(1)))
    third = asyncio.create_task(hold(pending(2)))
    await asyncio.sleep(0.05)
    release_first.set()
    await asyncio.gather(first, second, third)
    # The first holder finds the messages of both waiters already queued behind its own.
    assert taken == [[pending(0), pending(1), pending(2)], [], []]


async def test_hold_for_turn_takes_the_queue_and_reads_the_session(store: Store) -> None:
    queued: list[str] = []
    async with store.hold_for_turn(
        "telegram:1", LEASE_TTL_S, pending(0), 10, on_queued=lambda: queued.append("0")
    ) as held:
        assert (held.waiting, held.state, queued) == ([pending(0)], None, ["0"])
        await store.commit_turns("telegram:1", [user("q1", 10.0), assistant("a1", 11.0)], held.fence, SESSION_TTL_S)
    await commit(store, "telegram:1", user("q2", 20.0), assistant("a2", 21.0))

    await store.enqueue("telegram:1", pending(1))
    async with store.hold_for_turn("telegram:1", LEASE_TTL_S, pending(2), 2) as held:
        assert held.waiting == [pending(1), pending(2)]
        assert held.state is not None and held.state.key == "telegram:1" and held.state.last_active == 21.0
        assert held.state.turns == [user("q2", 20.0), assistant("a2", 21.0)]
        assert await store.take_pending("telegram:1") == []
    async with store.hold_for_turn("telegram:1", LEASE_TTL_S, pending(3), 0) as held:
        assert held.waiting == [pending(3)]
        assert held.state is not None and held.state.turns == [] and held.state.last_active == 21.0


async def test_hold_for_turn_finds_nothing_when_an_earlier_holder_took_its_message(store: Store) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first() -> list[PendingMessage]:
        async with store.hold_for_turn("telegram:1", LEASE_TTL_S, pending(0), 10) as held:
            inside.set()
            await release.wait()
            return held.waiting + await store.take_pending("telegram:1")

    holder = asyncio.create_task(first())
    await inside.wait()
    joined = asyncio.create_task(_waiting_of(store, pending(1)))
    await asyncio.sleep(0.05)
    release.set()
    assert await holder == [pending(0), pending(1)]
    # Nothing pending: nothing loaded either (a joined message's handler needs no history).
    assert await joined == ([], None)


async def _waiting_of(store: Store, item: PendingMessage) -> tuple[list[PendingMessage], Any]:
    async with store.hold_for_turn("telegram:1", LEASE_TTL_S, item, 10) as held:
        return held.waiting, held.state


def admission(
    n: int, *, allowed: Callable[[Mapping[str, AccessDecision]], bool] = lambda overrides: True, rate_limit: int = 0
) -> Admission:
    return Admission(
        dedupe_key=f"msg:telegram:1/{n}",
        dedupe_ttl_s=60,
        allowed=allowed,
        rate_key="rate:telegram:1",
        rate_window_s=60,
        rate_limit=rate_limit,
        session_key="telegram:1",
        lease_ttl_s=LEASE_TTL_S,
        item=pending(n),
        max_turns=10,
    )


async def verdict_of(store: Store, admitted: Admission) -> Verdict:
    async with store.admit(admitted) as result:
        return result.verdict


async def test_admit_holds_the_session_with_the_prompt_taken_and_the_session_loaded(store: Store) -> None:
    await commit(store, "telegram:1", user("q1", 10.0), assistant("a1", 11.0))
    await store.enqueue("telegram:1", pending(0))
    queued: list[int] = []
    async with store.admit(dataclasses.replace(admission(1), on_queued=lambda: queued.append(1))) as admitted:
        assert admitted.verdict is Verdict.HELD and admitted.held is not None and queued == [1]
        assert admitted.held.waiting == [pending(0), pending(1)]
        assert admitted.held.state is not None and admitted.held.state.turns == [
            user("q1", 10.0),
            assistant("a1", 11.0),
        ]
        await store.commit_turns("telegram:1", [user("q2", 20.0)], admitted.held.fence, SESSION_TTL_S)
    assert await stored(store, "telegram:1") == [user("q1", 10.0), assistant("a1", 11.0), user("q2", 20.0)]


async def test_admit_stops_at_a_duplicate_a_denial_or_the_rate_limit_and_queues_nothing(store: Store) -> None:
    assert await verdict_of(store, admission(1)) is Verdict.HELD
    assert await verdict_of(store, admission(1)) is Verdict.DUPLICATE
    assert await verdict_of(store, admission(2, allowed=lambda overrides: False)) is Verdict.DENIED
    assert await verdict_of(store, admission(3, rate_limit=2)) is Verdict.HELD
    assert await verdict_of(store, admission(4, rate_limit=2)) is Verdict.HELD
    assert await verdict_of(store, admission(5, rate_limit=2)) is Verdict.RATE_LIMITED
    assert await store.take_pending("telegram:1") == []
    # A denied or limited prompt was still seen: its redelivery is a duplicate.
    assert await verdict_of(store, admission(2)) is Verdict.DUPLICATE


async def test_admit_counts_the_rate_in_the_same_windows_as_count_hit(store: Store) -> None:
    def limited(n: int) -> Admission:
        return dataclasses.replace(admission(n, rate_limit=2), rate_window_s=0.3)

    await start_of_window(0.3)
    assert await store.count_hit("rate:telegram:1", 0.3) == 1
    assert await verdict_of(store, limited(1)) is Verdict.HELD
    assert await verdict_of(store, limited(2)) is Verdict.RATE_LIMITED
    assert await store.count_hit("rate:telegram:1", 0.3) == 4
    await start_of_window(0.3)
    assert await verdict_of(store, limited(3)) is Verdict.HELD


async def test_admit_decides_on_the_current_runtime_decisions(store: Store) -> None:
    def not_denied(overrides: Mapping[str, AccessDecision]) -> bool:
        return overrides.get("telegram:1") is not AccessDecision.DENY

    assert await verdict_of(store, admission(1, allowed=not_denied)) is Verdict.HELD
    await store.set_access("telegram:1", AccessDecision.DENY)
    assert await verdict_of(store, admission(2, allowed=not_denied)) is Verdict.DENIED
    await store.set_access("telegram:1", AccessDecision.ALLOW)
    assert await verdict_of(store, admission(3, allowed=not_denied)) is Verdict.HELD


async def test_lease_is_exclusive_and_granted_in_arrival_order(store: Store) -> None:
    events: list[str] = []
    release_first = asyncio.Event()

    async def hold(name: str, gate: asyncio.Event | None = None) -> None:
        async with store.lease("telegram:1", LEASE_TTL_S):
            events.append(f"{name} in")
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(0.01)
            events.append(f"{name} out")

    first = asyncio.create_task(hold("a", release_first))
    await until(lambda: events == ["a in"])
    waiters = []
    for name in "bcd":
        waiters.append(asyncio.create_task(hold(name)))
        await asyncio.sleep(0.02)
    assert events == ["a in"]

    release_first.set()
    await asyncio.gather(first, *waiters)
    assert events == ["a in", "a out", "b in", "b out", "c in", "c out", "d in", "d out"]


async def test_leases_of_different_sessions_do_not_wait_for_each_other(store: Store) -> None:
    async with store.lease("telegram:1", LEASE_TTL_S):
        async with asyncio.timeout(1):
            async with store.lease("telegram:2", LEASE_TTL_S):
                pass


async def test_lease_is_free_again_after_the_holder_fails(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.lease("telegram:1", LEASE_TTL_S):
            raise RuntimeError("handler crashed")
    async with asyncio.timeout(1):
        async with store.lease("telegram:1", LEASE_TTL_S) as fence:
            await store.commit_turns("telegram:1", [user("after the crash")], fence, SESSION_TTL_S)
    assert await stored(store, "telegram:1") == [user("after the crash")]


async def test_fencing_tokens_increase_with_every_lease(store: Store) -> None:
    tokens = []
    for _ in range(3):
        async with store.lease("telegram:1", LEASE_TTL_S) as fence:
            tokens.append(fence)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


async def test_a_commit_with_a_stale_fence_is_refused_and_stores_nothing(store: Store) -> None:
    async with store.lease("telegram:1", LEASE_TTL_S) as old:
        pass
    with pytest.raises(StaleLease):
        await store.commit_turns("telegram:1", [user("late")], old, SESSION_TTL_S)

    async with store.lease("telegram:1", LEASE_TTL_S) as current:
        with pytest.raises(StaleLease):
            await store.commit_turns("telegram:1", [user("late")], old, SESSION_TTL_S)
        await store.commit_turns("telegram:1", [user("current")], current, SESSION_TTL_S)

    assert await stored(store, "telegram:1") == [user("current")]


async def test_finishing_a_turn_stores_it_counts_its_usage_and_frees_the_session(store: Store) -> None:
    first = UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=1, prompt_tokens=10, completion_tokens=5)
    second = UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=2, prompt_tokens=20, completion_tokens=6)
    async with store.lease("telegram:1", LEASE_TTL_S) as fence:
        await store.finish_turn("telegram:1", [user("q1"), assistant("a1")], fence, SESSION_TTL_S, first)
    async with asyncio.timeout(1):  # nothing holds the session after the first turn
        async with store.lease("telegram:1", LEASE_TTL_S) as fence:
            await store.finish_turn("telegram:1", [user("q2"), assistant("a2")], fence, SESSION_TTL_S, second)

    assert await stored(store, "telegram:1") == [user("q1"), assistant("a1"), user("q2"), assistant("a2")]
    assert await store.usage_by_day(1) == [UsageTotals("2024-05-01", 3, 30, 11, 0)]


async def test_a_turn_finished_with_a_stale_fence_stores_and_counts_nothing(store: Store) -> None:
    delta = UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=1, prompt_tokens=10, completion_tokens=5)
    async with store.lease("telegram:1", LEASE_TTL_S) as old:
        pass
    async with store.lease("telegram:1", LEASE_TTL_S) as current:
        with pytest.raises(StaleLease):
            await store.finish_turn("telegram:1", [user("late"), assistant("late")], old, SESSION_TTL_S, delta)
        # The current holder still holds the session: its own write lands.
        await store.commit_turns("telegram:1", [user("current")], current, SESSION_TTL_S)

    assert await stored(store, "telegram:1") == [user("current")]
    assert await store.usage_by_day(1) == []


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
    await store.enqueue("discord:9", pending(1))

    assert await store.list_sessions() == [
        SessionInfo("telegram:1", 31.0, 4),
        SessionInfo("slack:C1", 20.0, 1),
    ]
    await store.clear_session("telegram:1")
    assert await store.list_sessions() == [SessionInfo("slack:C1", 20.0, 1)]


async def test_count_hit_counts_within_a_window_and_restarts_in_the_next(store: Store) -> None:
    window_s = 0.2
    await start_of_window(window_s)
    assert [await store.count_hit("rate:telegram:1", window_s) for _ in range(3)] == [1, 2, 3]
    assert await store.count_hit("rate:telegram:2", window_s) == 1

    await start_of_window(window_s)
    assert await store.count_hit("rate:telegram:1", window_s) == 1
    assert await store.count_hit("rate:telegram:1", window_s) == 2


async def test_access_overrides_are_set_and_replaced(store: Store) -> None:
    assert await store.access_overrides() == {}
    await store.set_access("telegram:1", AccessDecision.ALLOW)
    await store.set_access("slack:U2", AccessDecision.DENY)
    await store.set_access("telegram:1", AccessDecision.DENY)

    assert await store.access_overrides() == {
        "telegram:1": AccessDecision.DENY,
        "slack:U2": AccessDecision.DENY,
    }
    await store.set_access("slack:U2", AccessDecision.ALLOW)
    assert (await store.access_overrides())["slack:U2"] is AccessDecision.ALLOW


async def test_usage_is_totalled_per_day_for_all_the_user_and_the_chat(store: Store) -> None:
    group = "telegram:-100"
    await store.add_usage(
        UsageDelta("2024-05-01", "telegram:1", group, messages=1, prompt_tokens=10, completion_tokens=5)
    )
    await store.add_usage(
        UsageDelta("2024-05-01", "telegram:2", group, messages=2, prompt_tokens=20, completion_tokens=7)
    )
    await store.add_usage(UsageDelta("2024-05-01", "telegram:2", group, errors=1))
    # A private chat whose id is the user's own: counted once for that identity.
    await store.add_usage(
        UsageDelta("2024-05-02", "telegram:1", "telegram:1", messages=1, prompt_tokens=3, completion_tokens=1)
    )
    await store.add_usage(
        UsageDelta("2024-04-30", "slack:U1", "slack:C1", messages=4, prompt_tokens=40, completion_tokens=8)
    )

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


# --- embedded stores: in-process ordering and sweeping ------------------------------------------


async def test_local_ordering_forgets_idle_sessions() -> None:
    ordering = LocalOrdering()
    ordering.enqueue("telegram:1", pending(1))
    assert len(ordering) == 1
    async with ordering.lease("telegram:1") as fence:
        assert ordering.take_pending("telegram:1") == [pending(1)]
        ordering.check_fence("telegram:1", fence)
        assert len(ordering) == 1
    assert len(ordering) == 0

    for n in range(1000):
        async with ordering.lease(f"telegram:{n}"):
            pass
    assert len(ordering) == 0


async def test_local_ordering_survives_a_cancelled_waiter() -> None:
    ordering = LocalOrdering()
    release = asyncio.Event()

    async def hold() -> None:
        async with ordering.lease("telegram:1"):
            await release.wait()

    async def wait_for_lease() -> None:
        async with ordering.lease("telegram:1"):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(wait_for_lease())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert len(ordering) == 0
    with pytest.raises(StaleLease):
        ordering.check_fence("telegram:1", 1)


async def test_expired_entries_are_swept_and_live_ones_kept(sweeping_store: MemoryStore | SqliteStore) -> None:
    store = sweeping_store
    await store.first_seen("msg:old", 0.05)
    await store.count_hit("rate:telegram:1", 0.05)
    await commit(store, "telegram:old", user("old"), ttl_s=0.05)
    await commit(store, "telegram:live", user("live"), ttl_s=SESSION_TTL_S)
    await asyncio.sleep(0.1)

    # Reading an expired session does not delete it; the engine decides when a session is idle.
    assert await stored(store, "telegram:old") == [user("old")]
    await store.first_seen("msg:new", 60)  # any write may sweep

    assert await store.load_session("telegram:old", 10) is None
    assert await stored(store, "telegram:live") == [user("live")]
    assert [info.key for info in await store.list_sessions()] == ["telegram:live"]
    if isinstance(store, SqliteStore):
        assert raw_count(store._path, "seen") == 1
        assert raw_count(store._path, "rate_windows") == 0
        assert raw_count(store._path, "turns") == 1
    else:
        assert list(store._seen) == ["msg:new"]
        assert store._windows == {}


# --- sqlite only ------------------------------------------------------------------------------


async def test_sqlite_keeps_sessions_access_usage_and_dedupe_across_a_restart(sqlite_path: str) -> None:
    first = SqliteStore(sqlite_path)
    await first.open()
    await commit(first, "telegram:1", user("q", 10.0), assistant("a", 11.0))
    await first.set_access("telegram:7", AccessDecision.DENY)
    await first.add_usage(UsageDelta("2024-05-01", "telegram:1", "telegram:1", messages=1, prompt_tokens=9))
    await first.first_seen("msg:1", 60)
    await first.close()

    second = SqliteStore(sqlite_path)
    await second.open()
    try:
        assert await stored(second, "telegram:1") == [user("q", 10.0), assistant("a", 11.0)]
        assert await second.list_sessions() == [SessionInfo("telegram:1", 11.0, 2)]
        assert await second.access_overrides() == {"telegram:7": AccessDecision.DENY}
        assert await second.usage_by_day(7) == [UsageTotals("2024-05-01", 1, 9, 0, 0)]
        assert await second.first_seen("msg:1", 60) is False
        await commit(second, "telegram:1", user("q2", 20.0))
        assert [turn.content for turn in await stored(second, "telegram:1")] == ["q", "a", "q2"]
    finally:
        await second.close()


async def test_sqlite_runs_in_wal_mode(sqlite_store: SqliteStore, sqlite_path: str) -> None:
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_failed_commit_leaves_the_session_as_it_was(sqlite_store: SqliteStore) -> None:
    await commit(sqlite_store, "telegram:1", user("q", 10.0), assistant("a", 11.0))
    broken = Turn("assistant", cast(Any, None), 1, 21.0)

    async with sqlite_store.lease("telegram:1", LEASE_TTL_S) as fence:
        with pytest.raises(StoreUnavailable):
            await sqlite_store.commit_turns("telegram:1", [user("q2", 20.0), broken], fence, SESSION_TTL_S)
        # The store is still usable within the same lease.
        await sqlite_store.commit_turns("telegram:1", [user("q3", 30.0)], fence, SESSION_TTL_S)

    assert await stored(sqlite_store, "telegram:1") == [user("q", 10.0), assistant("a", 11.0), user("q3", 30.0)]
    assert await sqlite_store.list_sessions() == [SessionInfo("telegram:1", 30.0, 3)]


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
    write = asyncio.create_task(sqlite_store.first_seen("msg:1", 60))
    read = asyncio.create_task(sqlite_store.access_overrides())
    await asyncio.sleep(0.3)
    assert not write.done() and not read.done()
    assert ticks >= 10, "the event loop was blocked while the file was locked"
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(write, 5) is True
    assert await asyncio.wait_for(read, 5) == {}
    ticker.cancel()
    assert await sqlite_store.first_seen("msg:1", 60) is False


async def test_sqlite_checkpoints_the_wal_into_the_file(
    sqlite_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY_WRITES", 10)
    store = SqliteStore(sqlite_path)
    await store.open()
    for n in range(12):
        await store.first_seen(f"msg:{n}", 60)
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
        await store.first_seen("msg:1", 60)
