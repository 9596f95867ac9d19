"""The redis store across processes: two real bridge processes share one real redis-server.

The store contract itself is in ``test_conformance.py`` (the ``redis`` parameter). Here: what only
a shared store promises (one answer per message and complete, ordered sessions across processes,
dedupe across processes, outages, a crashed lease holder), the round trips a message costs, and that
every key is bounded.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from bots.openai_client import OpenAIChatModel
from core import texts
from core.engine import Outcome
from core.store import (
    AccessDecision,
    Admission,
    QueuedMessage,
    SessionState,
    StoredImage,
    StoreUnavailable,
    Turn,
    TurnResult,
    Verdict,
)
from core.stores import redis as redis_store_module
from core.stores.redis import RedisStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.fakes.redis_server import RedisServer
from tests.kit.channel import RecordingChannel
from tests.kit.engine import make_engine, model_settings, private
from tests.kit.redis_processes import BridgeProcess
from tests.kit.stores import admission

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
async def bridges(redis_server: RedisServer, prefix: str, fake_model: FakeModel) -> AsyncIterator[list[BridgeProcess]]:
    started = await asyncio.gather(
        *(BridgeProcess.start(redis_server.url, prefix, fake_model.base_url) for _ in range(2))
    )
    try:
        yield list(started)
    finally:
        for bridge in started:
            await bridge.kill()


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    """The test's own view of the same keys."""
    store = RedisStore(redis_server.url, prefix)
    await store.open()
    yield store
    await store.close()


# --- across processes ---------------------------------------------------------------------------


async def test_two_processes_answer_every_message_once_and_keep_every_session_complete_and_in_order(
    bridges: list[BridgeProcess], store: RedisStore, fake_model: FakeModel
) -> None:
    """200 messages for 20 sessions, spread over both processes and sent concurrently.

    "Answered exactly once" precisely: every message ends as ``answered`` (its handler delivered a
    reply) or ``joined`` (its text went into a turn another handler answered, on that handler's
    channel or, for a message another process received, on a channel reopened from its route);
    every message's text is in exactly one stored user turn, in the order it was sent; every stored
    turn was sent to the model once and its answer delivered once; and nothing else was answered.
    """
    fake_model.default_delay_s = 0.02  # a turn takes a moment, so messages arrive while it runs
    sessions, per_session = 20, 10
    sent: dict[str, list[str]] = {f"telegram:{100 + s}": [] for s in range(sessions)}
    where: dict[str, BridgeProcess] = {}
    rng = random.Random(6)

    async def talk(s: int, user: str) -> None:
        """One session's messages, each to either process. The next one goes out as soon as the
        previous one is queued (its place in the order is then fixed), usually while it is still
        being answered, so later ones wait and are joined."""
        for n in range(per_session):
            text = f"s{s}-m{n}"
            bridge = rng.choice(bridges)
            where[text] = bridge
            sent[user].append(text)
            bridge.send(text, user, text)
            await bridge.queued(f"{user}/{text}")
            await asyncio.sleep(rng.uniform(0, 0.01))

    await asyncio.gather(*(talk(s, user) for s, user in enumerate(sent)))
    results = {text: await bridge.result(text) for text, bridge in where.items()}
    outcomes = Counter(r["outcome"] for r in results.values())
    assert outcomes.keys() <= {"answered", "joined"}
    assert outcomes["joined"] > 0, "no message waited for a busy session: the test lost its point"
    assert {r["pid"] for r in results.values()} == {b.process.pid for b in bridges}

    delivered = Counter(r["replies"][0] for r in results.values() if r["outcome"] == "answered")
    assert all(len(r["replies"]) == 1 for r in results.values() if r["outcome"] == "answered")
    assert all(r["replies"] == [] for r in results.values() if r["outcome"] == "joined")
    reopened = [replies for bridge in bridges for replies in bridge.reopened.values()]
    assert all(len(replies) == 1 for replies in reopened)
    delivered.update(replies[0] for replies in reopened)

    stored_answers: Counter[str] = Counter()
    total_turns = 0
    mixed_turns = 0
    for user, texts_sent in sent.items():
        state = await store.load_session(user, 10_000)
        assert state is not None
        roles = [turn.role for turn in state.turns]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        parts = [part for turn in state.turns[0::2] for part in turn.content.split("\n")]
        assert parts == texts_sent, f"{user}: history incomplete or out of order"
        mixed_turns += sum(len({where[part] for part in turn.content.split("\n")}) > 1 for turn in state.turns[0::2])
        for question, answer in zip(state.turns[0::2], state.turns[1::2], strict=True):
            assert answer.content == f"echo: {question.content}"
            stored_answers[answer.content] += 1
        total_turns += len(state.turns) // 2

    assert delivered == stored_answers
    assert mixed_turns > 0, "no turn joined messages that reached different processes"
    assert {r["pid"] for r in results.values() if r["outcome"] == "answered"} == {b.process.pid for b in bridges}
    assert len(fake_model.requests) == total_turns
    assert sorted(info.key for info in await store.list_sessions()) == sorted(sent)
    for bridge in bridges:
        assert await bridge.stop() == 0


async def test_the_same_message_delivered_to_both_processes_is_answered_once(
    bridges: list[BridgeProcess], store: RedisStore, fake_model: FakeModel
) -> None:
    for n in range(5):
        for bridge in bridges:
            bridge.send(f"{n}@{bridge.process.pid}", "telegram:7", f"hello {n}", message_id=f"m{n}")
    outcomes = [(await bridge.result(f"{n}@{bridge.process.pid}"))["outcome"] for n in range(5) for bridge in bridges]
    # One delivery of each id is dropped; the other is answered, or joined into a turn with the
    # messages sent right before it (they are one session).
    assert Counter(outcomes)["duplicate"] == 5
    assert set(outcomes) <= {"answered", "joined", "duplicate"}
    state = await store.load_session("telegram:7", 100)
    assert state is not None
    parts = sorted(part for turn in state.turns[0::2] for part in turn.content.split("\n"))
    assert parts == [f"hello {n}" for n in range(5)]
    asked = sorted(part for text in fake_model.user_texts() for part in text.split("\n"))
    assert asked == parts


async def test_redis_outage_is_reported_the_processes_stay_up_and_service_resumes(
    private_redis_server: RedisServer, prefix: str, fake_model: FakeModel
) -> None:
    server = private_redis_server
    bridges = await asyncio.gather(*(BridgeProcess.start(server.url, prefix, fake_model.base_url) for _ in range(2)))
    try:
        for i, bridge in enumerate(bridges):
            bridge.send(f"before{i}", f"telegram:{i}", "before")
        assert [(await b.result(f"before{i}"))["outcome"] for i, b in enumerate(bridges)] == ["answered"] * 2

        server.stop()
        started = time.monotonic()
        for i, bridge in enumerate(bridges):
            for n in range(3):
                bridge.send(f"during{i}.{n}", f"telegram:{i}", f"during {n}")
        for i, bridge in enumerate(bridges):
            for n in range(3):
                result = await bridge.result(f"during{i}.{n}")
                assert result["outcome"] == "unavailable"
                assert result["replies"] == [texts.TEMPORARILY_UNAVAILABLE]
        assert time.monotonic() - started < 5
        assert all(bridge.alive for bridge in bridges)

        server.start()
        for i, bridge in enumerate(bridges):
            bridge.send(f"after{i}", f"telegram:{i}", "after")
        assert [(await b.result(f"after{i}"))["outcome"] for i, b in enumerate(bridges)] == ["answered"] * 2
        assert fake_model.user_texts().count("after") == 2
        assert not any(text.startswith("during") for text in fake_model.user_texts())
        for bridge in bridges:
            assert await bridge.stop() == 0
    finally:
        for bridge in bridges:
            await bridge.kill()


async def test_a_holder_killed_mid_reply_frees_its_session_within_a_lease_and_its_question_is_answered_once(
    redis_server: RedisServer, prefix: str, fake_model: FakeModel, store: RedisStore
) -> None:
    """kill -9 of the process answering: the other process takes the session once the lease lapses
    (renewal stopped with the process), answers the cut question together with the one that came
    meanwhile, on a reopened channel with the note, and stores it once."""
    lease_s = 1.0
    holder, other = await asyncio.gather(
        *(BridgeProcess.start(redis_server.url, prefix, fake_model.base_url, lease_s) for _ in range(2))
    )
    try:
        fake_model.script(Reply(text="never delivered", delay_s=60))
        holder.send("stuck", "telegram:1", "first")
        async with asyncio.timeout(10):
            while not fake_model.requests:
                await asyncio.sleep(0.01)
        await asyncio.sleep(lease_s)  # renewed meanwhile: a live holder keeps its session
        await holder.kill()
        killed_at = time.monotonic()

        other.send("next", "telegram:1", "second")
        other.send("elsewhere", "telegram:2", "unaffected")
        assert (await other.result("elsewhere"))["outcome"] == "answered"
        assert time.monotonic() - killed_at < lease_s, "another session waited for the dead holder"
        assert (await other.result("next"))["outcome"] == "joined"

        answer = f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\necho: first\nsecond"
        assert await other.reopened_reply("telegram:1/next", answer) == [answer]
        assert time.monotonic() - killed_at < 3 * lease_s + 2.0
        state = await _stored_soon(store, "telegram:1")
        assert [turn.content for turn in state.turns] == ["first\nsecond", "echo: first\nsecond"]
        assert [text for text in fake_model.user_texts() if text != "unaffected"] == ["first", "first\nsecond"]
        assert await other.stop() == 0
    finally:
        await holder.kill()
        await other.kill()


async def _stored_soon(store: RedisStore, session_key: str) -> SessionState:
    """The session once a turn is stored in it: an answer shows a moment before its turn is stored."""
    async with asyncio.timeout(5):
        while (state := await store.load_session(session_key, 10)) is None:
            await asyncio.sleep(0.02)
    return state


async def test_a_holder_paused_past_its_lease_cannot_overwrite_the_newer_turn(
    redis_server: RedisServer, prefix: str, fake_model: FakeModel, store: RedisStore
) -> None:
    """Fencing across processes: the slow holder is paused (SIGSTOP) until its lease lapses, the
    other process takes the session and finishes the turn; the paused one's late finish is refused
    and stores nothing."""
    lease_s = 0.6
    slow, fast = await asyncio.gather(
        *(BridgeProcess.start(redis_server.url, prefix, fake_model.base_url, lease_s) for _ in range(2))
    )
    try:
        fake_model.script(Reply(text="late answer", delay_s=1.0))
        slow.send("slow", "telegram:1", "first")
        async with asyncio.timeout(10):
            while not fake_model.requests:
                await asyncio.sleep(0.01)
        slow.process.send_signal(signal.SIGSTOP)
        try:
            fast.send("fast", "telegram:1", "second")
            answer = f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\necho: first\nsecond"
            assert await fast.reopened_reply("telegram:1/fast", answer) == [answer]
        finally:
            slow.process.send_signal(signal.SIGCONT)

        late = await slow.result("slow")
        assert late["outcome"] == "failed"  # the user saw the answer; it was not stored
        state = await _stored_soon(store, "telegram:1")
        assert [turn.content for turn in state.turns] == ["first\nsecond", "echo: first\nsecond"]
        for bridge in (slow, fast):
            assert await bridge.stop() == 0
    finally:
        await slow.kill()
        await fast.kill()


# --- round trips, bounds, connections -------------------------------------------------------------


class _Monitor:
    """``MONITOR`` on a plain socket: every command the server receives, script internals included
    (those are tagged ``lua`` and left out of ``client_commands``)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._lines: list[str] = []
        self._buffer = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._safe_recv():
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\r\n")
            self._lines.extend(line.decode(errors="replace") for line in lines)

    def _safe_recv(self) -> bytes:
        try:
            return self._sock.recv(65536)
        except OSError:
            return b""

    def client_commands(self, marker: str) -> list[str]:
        """The commands of clients (not of scripts) that mention ``marker`` (the test's key prefix)."""
        return [line for line in self._lines if marker in line and "[0 lua]" not in line]

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every request write of redis-py (one per command or per pipeline): round trips."""
    counter = [0]
    original = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    yield counter


ROUND_TRIPS_PER_MESSAGE = 3
"""The figure in the README: an answered message in a session nobody else is using (admit, claim,
finish); the claim brings the chat's model and persona and the asker's instructions along."""


async def test_an_answered_message_costs_a_fixed_number_of_round_trips(
    redis_server: RedisServer, store: RedisStore, prefix: str, fake_model: FakeModel, round_trips: list[int]
) -> None:
    model_client = OpenAIChatModel(model_settings(fake_model.base_url))
    engine = make_engine(store, model_client)
    monitor = _Monitor(redis_server.port)
    try:
        await store.ping()  # the pool's connection exists; health checks are not due
        counts = []
        for n in range(4):
            before = round_trips[0]
            channel = RecordingChannel()
            assert await engine.handle(private(f"question {n}", "telegram:42"), channel) is Outcome.ANSWERED
            assert channel.messages == [f"echo: question {n}"]
            counts.append(round_trips[0] - before)
        await asyncio.sleep(0.2)  # let MONITOR catch up
        commands = [line for line in monitor.client_commands(prefix) if f"{prefix}ping" not in line]
    finally:
        monitor.close()
        await model_client.aclose()

    # The first prompt a process admits also learns the runtime access decisions: one more.
    assert counts == [ROUND_TRIPS_PER_MESSAGE + 1] + [ROUND_TRIPS_PER_MESSAGE] * 3, counts
    # What the server received: one command (a Lua script, mostly) per round trip, except the
    # finish, a pipeline with the session index update (EVALSHA, ZADD, ZREMRANGEBYSCORE); and the
    # first admission's learning of the access decisions (the ping before them is left out: MONITOR
    # may not be listening yet when it is sent).
    assert len(commands) == 4 * (ROUND_TRIPS_PER_MESSAGE + 2) + 1, "\n".join(commands)


async def test_every_key_carries_an_expiry_or_is_bounded(
    redis_server: RedisServer, store: RedisStore, prefix: str, fake_model: FakeModel
) -> None:
    model_client = OpenAIChatModel(model_settings(fake_model.base_url))
    engine = make_engine(store, model_client, access={"admins": ["telegram:1"]})
    try:
        for n in range(3):
            await engine.handle(private(f"q{n}", "telegram:1"), RecordingChannel())
        await engine.handle(private("/admin deny telegram:9", "telegram:1"), RecordingChannel())
        for command in ("/model default", "/persona default", "/instructions Be brief.", "/admin budget telegram:2 9"):
            await engine.handle(private(command, "telegram:1"), RecordingChannel())
    finally:
        await model_client.aclose()

    client = store._redis
    keys = sorted(await client.keys(f"{prefix}*"))
    without_expiry = {key.removeprefix(prefix) for key in keys if await client.ttl(key) == -1}
    # The session index is trimmed of expired sessions on every commit, the queued index holds only
    # sessions with a queue (none now: everything was answered); access holds one field per identity
    # an admin decided about; settings one field per chat's choice and user's instructions, budgets
    # one per identity given a runtime budget: these are kept until changed, as a user expects.
    assert without_expiry == {"sessions", "access", "settings", "usage:{usage}:budgets"}
    assert {key.removeprefix(prefix).split(":")[0] for key in keys} == {
        "session",
        "sessions",
        "seen",
        "rate",
        "access",
        "usage",
        "settings",
    }
    assert await client.zcard(f"{prefix}queued") == 0


def _admission(n: int, allowed: Callable[[Mapping[str, AccessDecision]], bool] = lambda overrides: True) -> Admission:
    item = QueuedMessage(f"telegram:1/{n}", "telegram", "telegram:1", "telegram:1", f"part {n}", float(n))
    return admission("telegram:1", item, allowed=allowed)


async def test_a_decision_made_by_another_process_applies_to_the_next_prompt(
    redis_server: RedisServer, store: RedisStore, prefix: str
) -> None:
    """Each process decides on the access decisions it last read, and Redis refuses to admit on
    stale ones: a deny made through one process stops the very next prompt in every other."""
    other = RedisStore(redis_server.url, prefix)
    await other.open()

    def not_denied(overrides: Mapping[str, AccessDecision]) -> bool:
        return overrides.get("telegram:1") is not AccessDecision.DENY

    try:
        assert await store.admit(_admission(1, not_denied)) is Verdict.QUEUED
        await other.set_access("telegram:1", AccessDecision.DENY)
        assert await store.admit(_admission(2, not_denied)) is Verdict.DENIED
        claim = await store.claim("telegram:1", 30, 10)
        assert claim is not None and [item.text for item in claim.queued] == ["part 1"]
    finally:
        await other.close()


async def test_a_finished_turn_lets_another_process_in_at_once(
    redis_server: RedisServer, store: RedisStore, prefix: str
) -> None:
    """``finish`` releases the lease in its own round trip, and a release afterwards (a holder's
    clean-up) leaves alone whoever took the session in between."""
    other = RedisStore(redis_server.url, prefix)
    await other.open()
    try:
        assert await store.admit(_admission(1)) is Verdict.QUEUED
        claim = await store.claim("telegram:1", 30, 10)
        assert claim is not None
        assert await store.admit(_admission(2)) is Verdict.QUEUED
        turns = [Turn("user", "q1", 1, 1.0), Turn("assistant", "a1", 1, 1.0)]
        await store.finish("telegram:1", claim.fence, TurnResult(turns, 1, None, 3600))
        taken = await other.claim("telegram:1", 30, 10)
        assert taken is not None and [item.text for item in taken.queued] == ["part 2"]
        await store.release("telegram:1", claim.fence)
        await other.finish("telegram:1", taken.fence, TurnResult([Turn("user", "q2", 1, 2.0)], 1, None, 3600))
        state = await store.load_session("telegram:1", 10)
        assert state is not None and [turn.content for turn in state.turns] == ["q1", "a1", "q2"]
    finally:
        await other.close()


async def _exchange(store: RedisStore, n: int) -> list[str]:
    """One answered prompt through ``store``: what its window held, then its two turns stored."""
    assert await store.admit(_admission(n)) is Verdict.QUEUED
    claim = await store.claim("telegram:1", 30, 10)
    assert claim is not None and claim.queued
    window = [] if claim.state is None else [turn.content for turn in claim.state.turns]
    turns = [Turn("user", f"q{n}", 1, n), Turn("assistant", f"a{n}", 1, n)]
    await store.finish("telegram:1", claim.fence, TurnResult(turns, len(claim.queued), None, 3600))
    return window


async def test_windows_stay_exact_when_another_process_writes_clears_and_restarts_the_session(
    redis_server: RedisServer, store: RedisStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process keeps the windows it used and reads only the turns stored after them; turns
    written by another process, a cleared session and a session started again all show."""
    other = RedisStore(redis_server.url, prefix)
    await other.open()
    decoded: list[int] = []
    parse = redis_store_module._turns_from_json

    def counted(joined: str) -> list[Turn]:
        turns = parse(joined)
        decoded.append(len(turns))
        return turns

    monkeypatch.setattr(redis_store_module, "_turns_from_json", counted)
    try:
        assert await _exchange(store, 1) == []
        assert await _exchange(store, 2) == ["q1", "a1"]
        assert await _exchange(other, 3) == ["q1", "a1", "q2", "a2"]
        assert await _exchange(store, 4) == ["q1", "a1", "q2", "a2", "q3", "a3"]
        for n in range(5, 8):
            await _exchange(store, n)
        # The window holds the newest 10 turns (max_turns), from both processes.
        assert await _exchange(store, 8) == [f"{role}{n}" for n in range(3, 8) for role in "qa"]
        assert await other.clear_session("telegram:1")
        assert await _exchange(other, 9) == []
        assert await _exchange(store, 10) == ["q9", "a9"]
        # Cleared and started again until it holds more turns than before: still another session.
        assert await other.clear_session("telegram:1")
        for n in range(11, 14):
            await _exchange(other, n)
        assert await _exchange(store, 14) == [f"{role}{n}" for n in range(11, 14) for role in "qa"]
    finally:
        await other.close()
    # The turns that came over the wire for each window read (none for a session that did not
    # exist): nothing while this process wrote the newest turns itself, only the other process's
    # exchange after it wrote one, the whole window for a process without one (3) and after the
    # session was cleared and started again (10, 14).
    assert decoded == [0, 4, 2, 0, 0, 0, 0, 2, 0, 0, 6], decoded


async def test_an_unreachable_redis_is_store_unavailable_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "test:")
    await store.open()  # does not fail: the bridge starts and serves once Redis answers
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.admit(_admission(1))
    with pytest.raises(StoreUnavailable):
        await store.claim("telegram:1", 30, 10)
    assert time.monotonic() - started < 2
    await store.close()


async def test_urls_with_username_and_password(private_redis_server: RedisServer) -> None:
    server = private_redis_server
    assert server.command("ACL", "SETUSER", "bridge", "on", ">s3cret", "~*", "+@all").startswith("+OK")
    good = RedisStore(f"redis://bridge:s3cret@127.0.0.1:{server.port}/0", "test:")
    bad = RedisStore(f"redis://bridge:wrong@127.0.0.1:{server.port}/0", "test:")
    await good.open()
    await bad.open()
    try:
        assert await good.mark_once("msg:1", 60) is True
        with pytest.raises(StoreUnavailable):
            await bad.mark_once("msg:2", 60)
    finally:
        await good.close()
        await bad.close()


async def test_a_redis_out_of_memory_fails_the_ping_that_readiness_uses(private_redis_server: RedisServer) -> None:
    """A Redis at maxmemory with noeviction still answers PING but refuses every write; readiness
    must see the refusal, not the PING."""
    server = private_redis_server
    store = RedisStore(server.url, "test:oom:")
    await store.open()
    try:
        await store.ping()
        assert server.command("CONFIG", "SET", "maxmemory", "1").startswith("+OK")
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.admit(_admission(1))
    finally:
        server.command("CONFIG", "SET", "maxmemory", "0")
        await store.close()


def test_turn_entries_stored_before_pictures_and_before_tools_still_read() -> None:
    """A turn entry had four fields, then tools added the steps as a fifth; pictures came sixth, so
    the entries a running bridge already holds read the same after an upgrade."""
    old = '["user","q",1,1.0]'
    with_steps = '["assistant","a",2,2.0,[{"role":"tool","content":"r","tool_call_id":"c"}]]'
    with_picture = '["user","look",3,3.0,[],[["image/png","iVBORw==",85]]]'
    assert redis_store_module._turns_from_json(",".join([old, with_steps, with_picture])) == [
        Turn("user", "q", 1, 1.0),
        Turn("assistant", "a", 2, 2.0, steps=({"role": "tool", "content": "r", "tool_call_id": "c"},)),
        Turn("user", "look", 3, 3.0, images=(StoredImage("image/png", b"\x89PNG", 85),)),
    ]
