"""One side of a burst, the bridge or the bare bot that is its floor, in a process of its own.

``bench/burst.py`` starts one process of each side afresh for every round and has them take turns,
burst by burst, so that both meet the same state of the machine: here its speed drifted by half from
one hour to the next and a single burst varied by a third. A fresh process for each round makes its
first burst a truly cold one (new connections, a new heap), and a process's own CPU clock counts only
its side. Each process has its own fake Bot API, so that an idle side's polling never takes the
other's updates.

Run as ``python -m bench.burst_side bridge|floor MODEL_URL FOLDER CHATS [--until-expired]``. It
prints one JSON line when ready (its RSS at start-up), then answers each line on stdin: ``burst``
queues one message from each of CHATS new chats and prints the burst's figures once every chat has
its answer (or 300 s have passed); ``memory`` (the bridge only) prints RSS after the bursts and, with
``--until-expired``, after every session has expired and been swept. It ends when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import httpx

from bench.burst import (
    CONTROL_TIMEOUT_S,
    SESSION_TIMEOUT_S,
    SWEEP_EVERY_S,
    all_answered,
    bridge_config,
    fake_telegram_process,
    running_bridge,
    streamed_text,
)
from bench.process import rss_bytes
from bots.http_client import model_http_client
from chatbridge.config import ServerSettings
from chatbridge.process import run, tune_garbage_collector
from core.stores.sqlite import SqliteStore
from tests.fakes.telegram_api import TOKEN

SETTLE_S = 1.0
"""After each burst, before the next command: the bridge stores its last turns after the answers, and
the bare bot waits as long, so that every burst of either side starts from the same quiet."""

Burst = Callable[[], Awaitable[dict[str, float | int]]]


async def _timed(
    http: httpx.AsyncClient, control: str, chats: int, answer_all: Callable[[], Awaitable[None]]
) -> dict[str, float | int]:
    """Queues the fake's burst, lets ``answer_all`` run (the bare bot answers in it; the bridge
    answers on its own while it waits), and returns the fake's timing with this process's CPU and
    the peak RSS read every 50 ms meanwhile."""
    peak = rss_bytes()

    async def read_peak() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.05)
            peak = max(peak, rss_bytes())

    cpu = time.process_time()
    await http.post(f"{control}/burst", params={"chats": chats})
    reading = asyncio.create_task(read_peak())
    try:
        await answer_all()
        answered = await all_answered(http, control)
    finally:
        reading.cancel()
    cpu_s = time.process_time() - cpu
    await asyncio.sleep(SETTLE_S)
    return {"wall_s": answered.wall_s, "cpu_s": cpu_s, "answered": answered.chats, "peak": max(peak, rss_bytes())}


@contextlib.asynccontextmanager
async def _bridge(
    model_url: str, folder: Path, chats: int, until_expired: bool
) -> AsyncIterator[tuple[Burst, Callable[[], Awaitable[dict[str, int]]]]]:
    """The bridge on its default settings (SQLite store, polling); with ``until_expired`` the
    session timeout and the sweeps are shortened so that a full expiry fits in the run."""
    async with fake_telegram_process() as (telegram_url, control), httpx.AsyncClient(timeout=CONTROL_TIMEOUT_S) as http:
        path = str(folder / f"burst-{chats}-{time.monotonic_ns()}.db")
        if until_expired:
            config = bridge_config(model_url, telegram_url, session={"timeout_s": SESSION_TIMEOUT_S})
            store = SqliteStore(path, prune_interval_s=SWEEP_EVERY_S, housekeeping_interval_s=SWEEP_EVERY_S)
        else:
            config, store = bridge_config(model_url, telegram_url), SqliteStore(path)

        async def nothing() -> None:
            return None

        async def memory() -> dict[str, int]:
            gc.collect()
            after = rss_bytes()
            if until_expired:
                await asyncio.sleep(SESSION_TIMEOUT_S + 3 * SWEEP_EVERY_S)
                gc.collect()
            return {"rss_after": after, "rss_expired": rss_bytes()}

        async with running_bridge(config, store):
            yield (lambda: _timed(http, control, chats, nothing)), memory


@contextlib.asynccontextmanager
async def _floor(model_url: str, chats: int) -> AsyncIterator[Burst]:
    """A bare bot doing the platform calls of the bridge's burst: the fake's burst is fetched with
    getUpdates (100 at a time, as the bridge gets them), and each chat gets a typing signal, one
    completion and one sendMessage with its text, as many at a time as the bridge answers at once.
    Bot API calls are bare aiohttp. The completion is streamed, as the bridge asks for it, so that
    the model server does the same work for both sides; it goes through the bridge's HTTP stack,
    read line by line, the cheapest way we have to make it."""
    at_once = ServerSettings().max_concurrent_messages  # the bridge's default
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "question"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    slots = asyncio.Semaphore(at_once)
    async with (
        fake_telegram_process() as (telegram_url, control),
        httpx.AsyncClient(timeout=CONTROL_TIMEOUT_S) as http,
        model_http_client(timeout_s=60, max_connections=at_once) as model,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=at_once)) as telegram,
    ):
        bot = f"{telegram_url}{TOKEN}"

        async def answer(chat: int) -> None:
            async with slots:
                async with telegram.post(f"{bot}/sendChatAction", json={"chat_id": chat, "action": "typing"}) as sent:
                    await sent.read()
                text = await streamed_text(model, f"{model_url}/chat/completions", body)
                async with telegram.post(f"{bot}/sendMessage", json={"chat_id": chat, "text": text}) as sent:
                    await sent.read()

        async def bare_bot() -> None:
            offset, answers = 0, list[asyncio.Task[None]]()
            while len(answers) < chats:
                async with telegram.post(f"{bot}/getUpdates", json={"offset": offset, "timeout": 10}) as polled:
                    updates = (await polled.json())["result"]
                offset = updates[-1]["update_id"] + 1
                answers += [asyncio.create_task(answer(update["message"]["chat"]["id"])) for update in updates]
            await asyncio.gather(*answers)

        yield lambda: _timed(http, control, chats, bare_bot)


def _print(figures: Mapping[str, float]) -> None:
    print(json.dumps(figures), flush=True)


async def _serve(side: str, model_url: str, folder: Path, chats: int, until_expired: bool) -> None:
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        if side == "bridge":
            burst_once, memory = await stack.enter_async_context(_bridge(model_url, folder, chats, until_expired))
        else:
            burst_once, memory = await stack.enter_async_context(_floor(model_url, chats)), None
        gc.collect()
        _print({"rss_start": rss_bytes()})
        while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if command == "burst":
                _print(await burst_once())
            elif command == "memory" and memory is not None:
                _print(await memory())
            else:
                raise SystemExit(f"unknown command for the {side}: {command!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("bridge", "floor"))
    parser.add_argument("model_url")
    parser.add_argument("folder", type=Path)
    parser.add_argument("chats", type=int)
    parser.add_argument("--until-expired", action="store_true")
    args = parser.parse_args()
    tune_garbage_collector()  # as ``chatbridge run`` does
    run(_serve(args.side, args.model_url, args.folder, args.chats, args.until_expired))


if __name__ == "__main__":
    main()
