"""Bursts of private chats through the real Telegram adapter, against their floor (bench section 9).

New private chats write one message each at the same moment (200, 1,000 and 5,000 of them), to a
bridge on its default settings (SQLite store, polling), with the fake model and the fake Bot API
each in a process of their own. The floor, measured in the same run, is a bare bot doing the same
platform calls: what the hardware allows for the same work without a bridge. Both sides are timed
by the fake Bot API, from the queueing of a burst to the last answer it receives.

Each side runs in a process of its own (``bench/burst_side.py``), started afresh for each of a few
rounds. In a round the two take turns: a burst each on new connections (cold), then a few more each,
to new chats, on the connections the first left open (warm, what a running bridge has). The rows
compare the medians of each kind, like with like; the range shows the ratio of each round. Until
2026-12-03 the bridge ran in the driver's process and the floor after it, once each: a single cold
burst varied by a third here and the machine's speed drifted between the two sides' turns.

Memory is read from ``/proc/self/statm`` (RSS) of the first round's bridge: at start-up, every 50 ms
during its bursts (the peak), after them, and after every session has expired and been swept, which
is what issue 14 asks to come back within 1.5x of start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from adapters.telegram.adapter import TelegramAdapter
from bench.process import module_process
from bots.http_client import model_http_client
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from chatbridge.config import Config
from chatbridge.http_server import HttpServer
from chatbridge.runtime import engine_settings
from core.engine import Engine
from core.stores.sqlite import SqliteStore
from core.tokens import TokenCounter
from tests.fakes.telegram_api import TOKEN

SESSION_TIMEOUT_S = 5.0
"""Shorter than the default hour, so that a full expiry fits in the run; nothing else is changed."""
SWEEP_EVERY_S = 1.0
CONTROL_TIMEOUT_S = 310.0
"""Longer than the fake's 300 s wait for a burst's last answer."""
ROUNDS = 3
WARM_PER_ROUND = 2


@dataclass(frozen=True, slots=True)
class Timing:
    wall_s: float
    cpu_s: float


@dataclass(frozen=True, slots=True)
class Judged:
    """The medians of one kind of burst (cold or warm) on each side, and each round's own ratio."""

    floor: Timing
    bridge: Timing
    round_ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return self.bridge.wall_s / self.floor.wall_s


@dataclass(frozen=True, slots=True)
class BurstFigures:
    chats: int
    answered: int
    cold: Judged
    warm: Judged
    rss_start: int
    rss_peak: int
    rss_after: int
    rss_expired: int


@contextlib.asynccontextmanager
async def fake_telegram_process() -> AsyncIterator[tuple[str, str]]:
    """The fake Bot API in a process of its own: its base URL and its control URL."""
    async with module_process("tests.fakes.telegram_api") as (_, ready):
        urls = json.loads(ready)
        yield urls["base_url"], urls["control"]


@dataclass
class _Side:
    """One side's process, and what its bursts measured: a command on its stdin, one JSON line back."""

    name: str
    process: asyncio.subprocess.Process
    rss_start: int
    bursts: list[dict[str, float]] = field(default_factory=list)

    async def ask(self, command: str) -> dict[str, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} side of the burst ended (exit {await self.process.wait()})")
        figures: dict[str, float] = json.loads(line)
        return figures

    async def burst(self) -> None:
        self.bursts.append(await self.ask("burst"))

    def timing(self, warm: bool) -> Timing:
        """The median of the cold burst (the first) or of the warm ones (the rest)."""
        bursts = self.bursts[1:] if warm else self.bursts[:1]
        return Timing(statistics.median(b["wall_s"] for b in bursts), statistics.median(b["cpu_s"] for b in bursts))


@contextlib.asynccontextmanager
async def _side_process(
    name: str, model_url: str, folder: Path, chats: int, until_expired: bool
) -> AsyncIterator[_Side]:
    extra = ["--until-expired"] if until_expired else []
    async with module_process("bench.burst_side", name, model_url, str(folder), str(chats), *extra) as (process, ready):
        if not ready:
            raise RuntimeError(f"the {name} side of the burst did not start (exit {await process.wait()})")
        yield _Side(name, process, rss_start=int(json.loads(ready)["rss_start"]))


def _judged(rounds: list[tuple[_Side, _Side]], warm: bool) -> Judged:
    floors = [floor.timing(warm) for floor, _ in rounds]
    bridges = [bridge.timing(warm) for _, bridge in rounds]
    return Judged(
        _median(floors),
        _median(bridges),
        tuple(bridge.wall_s / floor.wall_s for floor, bridge in zip(floors, bridges, strict=True)),
    )


def _median(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall_s for t in timings), statistics.median(t.cpu_s for t in timings))


async def burst(
    folder: Path,
    model_url: str,
    chats: int,
    *,
    rounds: int = ROUNDS,
    warm_per_round: int = WARM_PER_ROUND,
    until_expired: bool = False,
) -> BurstFigures:
    """``rounds`` fresh pairs of processes, each side taking ``1 + warm_per_round`` bursts in turn
    with the other, the order swapped every round. ``until_expired`` makes the first round's bridge
    wait for every session to expire and be swept before its last RSS reading; only then are the
    session timeout and the sweeps shortened, to fit into the run."""
    done: list[tuple[_Side, _Side]] = []
    memory: dict[str, float] = {}
    for n in range(rounds):
        async with (
            _side_process("floor", model_url, folder, chats, until_expired=False) as floor,
            _side_process("bridge", model_url, folder, chats, until_expired=until_expired and n == 0) as bridge,
        ):
            for _ in range(1 + warm_per_round):
                for side in (floor, bridge) if n % 2 == 0 else (bridge, floor):
                    await side.burst()
            if n == 0:
                memory = await bridge.ask("memory")
        done.append((floor, bridge))
    bridges = [bridge for _, bridge in done]
    return BurstFigures(
        chats,
        answered=int(min(b["answered"] for side in bridges for b in side.bursts)),
        cold=_judged(done, warm=False),
        warm=_judged(done, warm=True),
        rss_start=bridges[0].rss_start,
        rss_peak=int(max(b["peak"] for b in bridges[0].bursts)),
        rss_after=int(memory["rss_after"]),
        rss_expired=int(memory["rss_expired"]),
    )


async def streamed_text(http: httpx.AsyncClient, url: str, body: dict[str, object]) -> str:
    """The text of a streamed completion: the content of each SSE data line up to ``[DONE]``."""
    parts = []
    async with http.stream("POST", url, json=body) as reply:
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            choices = json.loads(line[len("data: ") :])["choices"]
            if choices:
                parts.append(choices[0]["delta"].get("content") or "")
    return "".join(parts)


def bridge_config(model_url: str, telegram_url: str, **sections: object) -> Config:
    """The defaults, pointed at the fakes."""
    return Config.model_validate(
        {
            "model": {"base_url": model_url, "name": "fake-model"},
            "context": {"tokenizer": "estimate"},
            "adapters": {"telegram": {"enabled": True, "token": TOKEN, "base_url": telegram_url}},
            **sections,
        }
    )


@contextlib.asynccontextmanager
async def running_bridge(config: Config, store: SqliteStore) -> AsyncIterator[None]:
    """The Telegram adapter and the engine on ``store``, running and taking updates until the end."""
    await store.open()
    model = OpenAIChatModel(config.model)
    engine = Engine(
        store=store,
        models=ModelRegistry.single(model),
        tokens=TokenCounter.estimate(),
        settings=engine_settings(config),
    )
    adapter = TelegramAdapter(config.adapters.telegram, HttpServer("127.0.0.1", 0))
    running = asyncio.create_task(adapter.run(engine))
    try:
        while not adapter.ready:
            await asyncio.sleep(0.05)
        yield
    finally:
        await adapter.stop()
        await running
        engine.close()
        await model.aclose()
        await store.close()


@dataclass(frozen=True, slots=True)
class _Answered:
    chats: int
    wall_s: float
    """From the queueing of the burst to its last answer, as the fake saw them (300 s if some chat
    never got one)."""


async def all_answered(http: httpx.AsyncClient, control: str) -> _Answered:
    """Once every chat of the fake's burst has an answer (or 300 s have passed)."""
    figures = (await http.get(f"{control}/all_answered")).json()
    return _Answered(int(figures["answered"]), figures["elapsed_s"] or 300.0)


async def sequential(folder: Path, model_url: str, questions: int) -> tuple[list[float], list[float]]:
    """One private chat asking ``questions`` short questions one after the other: the time from
    each message to its complete answer on the fake Bot API, through the bridge (measured by the
    fake, from the moment it queues the update), and for the floor (measured here: the same fake
    model's completion, then one sendMessage with its text)."""
    async with fake_telegram_process() as (telegram_url, control):
        config = bridge_config(model_url, telegram_url)
        floors = []
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "question"}], "stream": False}
        async with model_http_client(timeout_s=60, max_connections=4) as http:
            for _ in range(questions):
                started = time.perf_counter()
                reply = await http.post(f"{model_url}/chat/completions", json=body)
                text = reply.json()["choices"][0]["message"]["content"]
                await http.post(f"{telegram_url}{TOKEN}/sendMessage", data={"chat_id": 42, "text": text})
                floors.append(time.perf_counter() - started)
        bridged = []
        async with running_bridge(config, SqliteStore(str(folder / "sequential.db"))):
            async with httpx.AsyncClient(timeout=60) as client:
                for n in range(questions):
                    asked: dict[str, str | int] = {"chat": 7, "text": f"question {n}", "expect": f"echo: question {n}"}
                    answer = await client.post(f"{control}/ask", params=asked)
                    bridged.append(float(answer.json()["elapsed_s"]))
    return floors, bridged


@dataclass(frozen=True, slots=True)
class LongAnswer:
    floor_s: float
    added_s: float
    calls: int


async def long_answer(
    folder: Path, chars: int = 2_000, chars_per_chunk: int = 4, chunk_delay_s: float = 0.001
) -> LongAnswer:
    """One private chat's answer of ``chars`` characters, streamed by the fake model (4 characters a
    millisecond by default), through the Telegram adapter: the time from the model's ``[DONE]`` to
    the complete text on the fake Bot API, and the sendMessage and editMessageText calls it took.
    The floor is a bare sendMessage of the same text to the same fake, timed the same way."""
    from tests.fakes.fake_model import FakeModel, Reply
    from tests.fakes.telegram_api import FakeTelegram

    words = " ".join(f"word{n}" for n in range(chars))[:chars].rstrip()
    async with FakeModel() as model:
        model.script(Reply(text=words, chunk_chars=chars_per_chunk, chunk_delay_s=chunk_delay_s))
        telegram = FakeTelegram()
        await telegram.start()
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                async with session.post(f"{telegram.base_url}{TOKEN}/sendMessage", json={"chat_id": 9, "text": words}):
                    await telegram.wait_for(lambda: words in telegram.texts(9))
                floor_s = time.monotonic() - started
            telegram.sent.clear()
            telegram.forget_calls()
            async with running_bridge(
                bridge_config(model.base_url, telegram.base_url),
                SqliteStore(str(folder / f"long-{time.monotonic_ns()}.db")),
            ):
                telegram.user_message("a long one", user=7)
                await telegram.wait_for(lambda: telegram.texts(7) == [words], timeout=30)
                shown_at = time.monotonic()
                calls = len(telegram.calls_of("sendMessage")) + len(telegram.calls_of("editMessageText"))
        finally:
            await telegram.stop()
    return LongAnswer(floor_s, shown_at - model.finished_at[-1], calls)
