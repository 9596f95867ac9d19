"""Measure chatbridge against its physical floor and print one table.

Run from the repository root: ``.venv/bin/python -m bench.run`` (``--only NAME`` for one section).
Every figure is measured in the same run as its baseline. Sections that measure memory run in a
fresh interpreter of their own, so what earlier sections allocated does not blur them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
import httpx

from bots.http_pool import PooledClients
from bots.model import ChatMessage
from bots.openai_client import OpenAIChatModel
from core.channel import PlatformLimits
from core.engine import Engine, Outcome
from core.render import StreamRenderer
from core.store import Store, Turn
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore
from core.tokens import TokenCounter
from core.window import Budget, build_window
from tests.fakes.fake_model import FakeModel, Reply
from tests.kit.engine import engine_settings, model_settings, private


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None


class NullChannel:
    """A platform that accepts everything at once, so only the bridge's own cost is measured."""

    def __init__(self, limits: PlatformLimits = PlatformLimits(4096, 0.0)) -> None:
        self.limits = limits
        self.sends: list[float] = []
        self.edits = 0

    async def send(self, text: str) -> object:
        self.sends.append(time.monotonic())
        return len(self.sends)

    async def edit(self, handle: object, text: str) -> None:
        self.edits += 1

    async def typing(self) -> None:
        return None


@asynccontextmanager
async def fake_model() -> AsyncIterator[FakeModel]:
    server = FakeModel()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _engine(store: Store, model: OpenAIChatModel) -> Engine:
    settings = engine_settings(limits={"user_messages_per_minute": 0})
    return Engine(store=store, model=model, tokens=TokenCounter.estimate(), settings=settings)


async def _mean_s(action: Callable[[int], Awaitable[object]], count: int, warmup: int = 30) -> float:
    for n in range(warmup):
        await action(-1 - n)
    started = time.perf_counter()
    for n in range(count):
        await action(n)
    return (time.perf_counter() - started) / count


# --- 1. per-message overhead --------------------------------------------------------------------


async def per_message_overhead(stores: dict[str, Callable[[], Store]], count: int = 400) -> list[Row]:
    rows: list[Row] = []
    async with fake_model() as server:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}], "stream": False}
        async with httpx.AsyncClient() as client:
            bare_s = await _mean_s(lambda n: client.post(f"{server.base_url}/chat/completions", json=body), count)
        rows.append(Row("1 overhead", "bare httpx request to the fake model", f"{bare_s * 1e3:.3f} ms"))
        for name, make in stores.items():
            model = OpenAIChatModel(model_settings(server.base_url, stream=False))
            async with opened(make()) as store:
                engine = _engine(store, model)

                async def one(n: int) -> None:
                    outcome = await engine.handle(private(f"hello {n}", user=f"bench:{n % 50}"), NullChannel())
                    assert outcome is Outcome.ANSWERED, outcome

                engine_s = await _mean_s(one, count)
            await model.aclose()
            target = 1.5 if name == "memory" else 2.0
            ratio = engine_s / bare_s
            rows.append(Row("1 overhead", f"engine, {name} store, per message", f"{engine_s * 1e3:.3f} ms"))
            rows.append(Row("1 overhead", f"ratio to bare request, {name}", f"{ratio:.2f}x", f"<= {target}x", ratio <= target))
            rows.append(Row("1 overhead", f"messages per second, {name}, one process", f"{1 / engine_s:.0f}"))
    return rows


# --- 2. context window versus history length ----------------------------------------------------


async def window_cost(stores: dict[str, Callable[[], Store]], repeats: int = 300) -> list[Row]:
    rows: list[Row] = []
    tokens = TokenCounter.estimate()
    budget = Budget(4000, 40, tokens.message_overhead, tokens.scaled)
    user_turn = Turn("user", "the new question", tokens.count("the new question"), time.time())
    for name, make in stores.items():
        timings: dict[int, float] = {}
        async with opened(make()) as store:
            for size in (10, 1_000, 10_000):
                key = f"bench:window:{size}"
                await _fill(store, key, size)

                async def build(_: int, key: str = key) -> None:
                    state = await store.load_session(key, budget.max_messages)
                    assert state is not None
                    build_window("You are a helpful assistant.", 8, state.turns, user_turn, budget)

                timings[size] = await _mean_s(build, repeats)
                rows.append(Row("2 window", f"{name}: build request, {size:,} stored turns", f"{timings[size] * 1e6:.0f} us"))
        ratio = timings[10_000] / timings[10]
        rows.append(Row("2 window", f"{name}: 10,000 vs 10 turns", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5))
        # Past max_messages the window itself stops growing, so this isolates history length.
        flat = timings[10_000] / timings[1_000]
        rows.append(Row("2 window", f"{name}: 10,000 vs 1,000 turns (both fill the 40-message window)", f"{flat:.2f}x"))
    return rows


async def _fill(store: Store, key: str, turns: int) -> None:
    async with store.lease(key, 60) as fence:
        now = time.time()
        for n in range(0, turns, 2):
            pair = [Turn("user", f"question {n}", 4, now), Turn("assistant", f"answer {n} " * 5, 12, now)]
            await store.commit_turns(key, pair, fence, 3600)


# --- 3. concurrency -----------------------------------------------------------------------------


@asynccontextmanager
async def fake_model_process(latency_s: float) -> AsyncIterator[str]:
    """The fake model in a process of its own, so its CPU time is not billed to the bridge."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.fake_model", "--delay", str(latency_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        yield (await process.stdout.readline()).decode().strip()
    finally:
        process.stdin.close()
        await process.wait()


async def concurrency(sessions: int = 1_000, latency_s: float = 1.0) -> list[Row]:
    async with fake_model_process(latency_s) as base_url:
        bare = await _bare_concurrent(base_url, sessions)
        model = OpenAIChatModel(model_settings(base_url, stream=False, timeout_s=30))
        async with opened(MemoryStore()) as store:
            engine = _engine(store, model)
            started = time.perf_counter()
            outcomes = await asyncio.gather(
                *(engine.handle(private(f"hi {n}", user=f"bench:{n}"), NullChannel()) for n in range(sessions))
            )
            wall = time.perf_counter() - started
        await model.aclose()
    answered = sum(outcome is Outcome.ANSWERED for outcome in outcomes)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        Row("3 concurrency", f"{sessions:,} bare httpx requests at once, same pools: wall time", f"{bare:.2f} s"),
        Row("3 concurrency", f"{sessions:,} sessions at once, {latency_s:.0f} s model: wall time", f"{wall:.2f} s", "<= 1.3 s", wall <= 1.3 and answered == sessions),
        Row("3 concurrency", "answered", f"{answered:,} of {sessions:,}"),
        Row("3 concurrency", "peak RSS of the bridge process", f"{peak_mib:.0f} MiB"),
    ]


async def _bare_concurrent(base_url: str, count: int) -> float:
    """The floor: the same number of concurrent requests with no bridge around them."""
    pools = PooledClients(timeout_s=30, max_connections=count)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    started = time.perf_counter()
    await asyncio.gather(*(pools.next().post(f"{base_url}/chat/completions", json=body) for _ in range(count)))
    elapsed = time.perf_counter() - started
    await pools.aclose()
    return elapsed


# --- 5. memory per idle session -----------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory_per_session(sessions: int = 10_000) -> list[Row]:
    store = MemoryStore()
    await store.open()
    gc.collect()
    before = _rss_bytes()
    now = time.time()
    for n in range(sessions):
        key = f"telegram:{1_000_000 + n}"
        async with store.lease(key, 60) as fence:
            pair = [Turn("user", "hello, how are you?", 6, now), Turn("assistant", "I am fine, thank you. How can I help?", 10, now)]
            await store.commit_turns(key, pair, fence, 3600)
    gc.collect()
    grown = _rss_bytes() - before
    await store.close()
    return [
        Row("5 memory", f"RSS growth for {sessions:,} idle sessions (one short exchange each)", f"{grown / 2**20:.1f} MiB"),
        Row("5 memory", "per idle session", f"{grown / sessions / 1024:.2f} KiB"),
    ]


# --- 6. streaming -------------------------------------------------------------------------------


async def streaming(tokens: int = 2_000) -> list[Row]:
    """A 2,000-token reply streamed a token at a time to a channel with Telegram's private-chat pace."""
    text = " ".join(f"w{n % 100:02d}" for n in range(tokens))
    async with fake_model() as server:
        server.script(Reply(text=text, chunk_chars=4, chunk_delay_s=0.001))
        model = OpenAIChatModel(model_settings(server.base_url, stream=True))
        channel = NullChannel(PlatformLimits(max_message_chars=4000, min_edit_interval_s=1.0))
        renderer = StreamRenderer(channel)
        started = time.perf_counter()
        reply = await model.reply([ChatMessage("user", "go")], renderer.push)
        await renderer.finish(reply.text)
        duration = time.perf_counter() - started
        await model.aclose()
        first_token = server.first_content_at[0]
    first_text_ms = (channel.sends[0] - first_token) * 1e3
    calls = len(channel.sends) + channel.edits
    return [
        Row("6 streaming", "model's first token to first text handed to the platform", f"{first_text_ms:.2f} ms"),
        Row("6 streaming", f"platform calls for a {tokens:,}-token reply streamed over {duration:.1f} s (1 s edit interval)", f"{calls} ({len(channel.sends)} sends, {channel.edits} edits)"),
    ]


# --- driver -------------------------------------------------------------------------------------


def _store_factories(folder: Path) -> dict[str, Callable[[], Store]]:
    return {
        "memory": MemoryStore,
        "sqlite": lambda: SqliteStore(str(folder / f"bench-{time.monotonic_ns()}.db")),
    }


SECTIONS: dict[str, Callable[[Path], Awaitable[list[Row]]]] = {
    "overhead": lambda folder: per_message_overhead(_store_factories(folder)),
    "window": lambda folder: window_cost(_store_factories(folder)),
    "concurrency": lambda folder: concurrency(),
    "memory": lambda folder: memory_per_session(),
    "streaming": lambda folder: streaming(),
}
ISOLATED = {"concurrency", "memory"}


def _in_subprocess(name: str) -> list[Row]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", name, "--json"], check=True, capture_output=True, text=True
    ).stdout
    return [Row(**row) for row in json.loads(output)]


def _print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(row, field)) for row in rows) for field in ("section", "metric", "value", "target")]
    for row in rows:
        verdict = "" if row.met is None else ("met" if row.met else "MISSED")
        print(f"{row.section:<{widths[0]}}  {row.metric:<{widths[1]}}  {row.value:>{widths[2]}}  {row.target:<{widths[3]}}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS))
    parser.add_argument("--json", action="store_true", help="print rows as JSON (used for isolated sections)")
    args = parser.parse_args()
    names = [args.only] if args.only else list(SECTIONS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if name in ISOLATED and not args.only:
                rows += _in_subprocess(name)
            else:
                rows += asyncio.run(SECTIONS[name](Path(folder)))
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows]))
    else:
        _print_table(rows)


if __name__ == "__main__":
    main()
