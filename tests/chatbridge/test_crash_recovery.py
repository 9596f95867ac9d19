"""kill -9 of a real ``chatbridge run`` while it streams a reply, then a restart on the same SQLite
file: the question is answered once, in full, as a new message with a note, and stored once.

The bridge runs python-telegram-bot for real against the fake Bot API (polling and webhook), and
the fake model streams slowly enough that the user has seen half an answer when the process dies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core import texts
from core.stores.redis import RedisStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.fakes.redis_server import RedisServer
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.kit.bridge_process import BridgeProcess, base_env

ANSWER = " ".join(f"word{n}" for n in range(60))
USER = 7
WEBHOOK_SECRET = "crash-test-secret"


@pytest.fixture
async def telegram() -> Any:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


def configure(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel, mode: str, store: dict[str, Any] | None = None
) -> dict[str, str]:
    section: dict[str, Any] = {"enabled": True, "token": TOKEN, "base_url": telegram.base_url, "mode": mode}
    if mode == "webhook":
        section |= {"webhook_url": "https://bot.example.com/telegram/webhook", "webhook_secret": WEBHOOK_SECRET}
    config = {"adapters": {"telegram": section}, "store": store or {"backend": "sqlite", "sqlite_path": "bridge.db"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return base_env(CHATBRIDGE_MODEL__BASE_URL=fake_model.base_url, CHATBRIDGE_MODEL__MAX_RETRIES="0")


def bridge(folder: Path, env: dict[str, str], command: str = "run") -> BridgeProcess:
    return BridgeProcess([sys.executable, "-m", "chatbridge.cli", command, "--config", "config.yaml"], folder, env)


async def kill(process: BridgeProcess) -> None:
    assert process.process is not None
    process.process.send_signal(signal.SIGKILL)
    await process.process.wait()


def stored(tmp_path: Path) -> tuple[list[tuple[str, str]], int]:
    """The session's turns and the queue's length, read from the file the way an operator would."""
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        turns = db.execute(
            "SELECT role, content FROM turns WHERE session_key = ? ORDER BY seq", (f"telegram:{USER}",)
        ).fetchall()
        queued = db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    return turns, queued


async def interrupted_then_recovered(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel, env: dict[str, str], deliver: Any
) -> list[str]:
    """Deliver one question, kill the bridge once half an answer shows, start it again; what the
    user's chat shows in the end."""
    fake_model.script(Reply(text=ANSWER, chunk_delay_s=0.05, chunk_chars=6), Reply(text=ANSWER))
    first = bridge(tmp_path, env)
    await first.start()
    try:
        port = await first.port()
        await deliver(port)
        await telegram.wait_for(lambda: any("word" in text for text in telegram.texts(USER)), timeout=15)
        assert ANSWER not in telegram.texts(USER), "the answer was complete before the kill: no crash mid-reply"
    finally:
        await kill(first)
    assert stored(tmp_path) == ([], 1), "the question was not queued durably before the model was called"

    second = bridge(tmp_path, env)
    await second.start()
    try:
        port = await second.port()
        recovered = f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n{ANSWER}"
        await telegram.wait_for(lambda: recovered in telegram.texts(USER), timeout=15)
        await deliver(port)  # a redelivery of the same update after the restart: a duplicate
        await asyncio.sleep(0.5)
    finally:
        assert await second.stop() == 0, second.stderr
    assert fake_model.user_texts() == ["hello there", "hello there"]
    assert stored(tmp_path) == ([("user", "hello there"), ("assistant", ANSWER)], 0)
    return telegram.texts(USER)


async def test_polling_a_kill_mid_reply_is_answered_in_full_after_the_restart(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    env = configure(tmp_path, telegram, fake_model, "polling")
    update = telegram.update("hello there", user=USER)
    delivered = 0

    async def deliver(port: int) -> None:
        nonlocal delivered
        delivered += 1
        if delivered == 1:  # polling confirmed it: Telegram does not deliver it again
            telegram.queue_update(update)

    shown = await interrupted_then_recovered(tmp_path, telegram, fake_model, env, deliver)
    assert len(shown) == 2
    assert shown[0] != ANSWER and shown[0].startswith("word0")  # the half answer stays as it was cut
    assert shown[1] == f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n{ANSWER}"


async def post_update(port: int, update: dict[str, Any]) -> int:
    """What Telegram does with an update in webhook mode; retried while the bridge is starting (503)."""
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(100):
            response = await http.post(
                f"http://127.0.0.1:{port}/telegram/webhook",
                content=json.dumps(update),
                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET, "Content-Type": "application/json"},
            )
            if response.status_code != 503:
                break
            await asyncio.sleep(0.05)
    return response.status_code


async def test_webhook_a_kill_mid_reply_is_answered_once_even_when_telegram_delivers_it_again(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    env = configure(tmp_path, telegram, fake_model, "webhook")
    update = telegram.update("hello there", user=USER)
    statuses: list[int] = []

    async def deliver(port: int) -> None:
        statuses.append(await post_update(port, update))

    shown = await interrupted_then_recovered(tmp_path, telegram, fake_model, env, deliver)
    assert statuses == [200, 200]
    assert shown[-1] == f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n{ANSWER}"
    assert shown.count(f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n{ANSWER}") == 1


async def test_a_token_revoked_at_run_time_ends_the_process_with_status_1_and_the_key_to_fix(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    env = configure(tmp_path, telegram, fake_model, "polling")
    process = bridge(tmp_path, env)
    await process.start()
    await process.port()
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")), timeout=15)
    telegram.token = "123456:REVOKED"
    telegram.user_message("hello?", user=USER)  # ends the long poll in progress
    assert process.process is not None
    assert await asyncio.wait_for(process.process.wait(), 20) == 1
    assert "adapters.telegram.token" in process.stderr
    assert TOKEN not in process.stderr


async def test_a_second_bridge_on_the_same_sqlite_file_refuses_to_start_and_check_still_looks(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    env = configure(tmp_path, telegram, fake_model, "polling")
    first = bridge(tmp_path, env)
    await first.start()
    try:
        await first.port()
        second = bridge(tmp_path / "second", env)
        (tmp_path / "second").mkdir()
        (tmp_path / "second" / "config.yaml").write_text(
            (tmp_path / "config.yaml").read_text().replace("bridge.db", str(tmp_path / "bridge.db"))
        )
        await second.start()
        assert second.process is not None
        assert await asyncio.wait_for(second.process.wait(), 20) == 1
        refusal = [line for line in second.stderr.splitlines() if "in use" in line]
        assert len(refusal) == 1 and "store.backend: redis" in refusal[0], second.stderr
        check = bridge(tmp_path / "second", env, "check")
        await check.start()
        await check.finish()
        store = next(line for line in check.stdout.splitlines() if line.startswith("store "))
        assert store.split()[1] == "warn"
        assert "sqlite store reachable (" in store and "in use by chatbridge process" in store
    finally:
        assert await first.stop() == 0, first.stderr


async def test_redis_two_webhook_processes_the_one_answering_is_killed_and_the_other_answers_once(
    tmp_path: Path, telegram: FakeTelegram, fake_model: FakeModel, redis_server: RedisServer
) -> None:
    """Two chatbridge run processes behind one webhook URL, sharing Redis; the one streaming the
    reply is killed. The other frees the session within a lease, answers the question in full on
    its own Bot API connection, and the turn is stored once."""
    prefix = f"crash:{uuid.uuid4().hex}:"
    store = {"backend": "redis", "redis_url": redis_server.url, "redis_key_prefix": prefix, "lease_s": 1}
    processes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = configure(tmp_path / name, telegram, fake_model, "webhook", store)
        processes.append(bridge(tmp_path / name, env))
    fake_model.script(Reply(text=ANSWER, chunk_delay_s=0.05, chunk_chars=6), Reply(text=ANSWER))
    update = telegram.update("hello there", user=USER)
    for process in processes:
        await process.start()
    try:
        ports = [await process.port() for process in processes]
        assert await post_update(ports[0], update) == 200
        await telegram.wait_for(lambda: any("word" in text for text in telegram.texts(USER)), timeout=15)
        await kill(processes[0])
        assert await post_update(ports[1], update) == 200  # Telegram's retry lands on the other: a duplicate
        recovered = f"{texts.ANSWERED_AFTER_INTERRUPTION}\n\n{ANSWER}"
        await telegram.wait_for(lambda: recovered in telegram.texts(USER), timeout=15)
        await asyncio.sleep(0.5)
    finally:
        for process in processes:
            if process.process is not None and process.process.returncode is None:
                assert await process.stop() == 0, process.stderr
    assert fake_model.user_texts() == ["hello there", "hello there"]
    assert telegram.texts(USER).count(recovered) == 1
    redis = RedisStore(redis_server.url, prefix)
    await redis.open()
    try:
        state = await redis.load_session(f"telegram:{USER}", 10)
        assert state is not None and [turn.content for turn in state.turns] == ["hello there", ANSWER]
        assert await redis.orphans(0.0, 10) == []
    finally:
        await redis.close()
