"""One bridge process on the redis store, driven through stdin/stdout, for the multi-process tests.

    python -m tests.kit.redis_bridge --redis-url URL --prefix P --model-url URL [--lease-s S]
        [--settings JSON] [--model NAME=URL ...]

``--settings`` are section overrides of the engine's settings (``{"limits": {...}}``); each
``--model`` adds a model NAME served at URL, with the API key ``sk-NAME``.

It prints ``{"ready": pid}`` once the engine is built, then reads one JSON object per line::

    {"tag": "any", "user": "telegram:1", "message_id": "7", "text": "hello"}

(a private chat of ``user``) and handles every line at once in its own task, like an adapter would.
For each it writes ``{"enqueued": "<chat>/<message_id>"}`` when the message joined its session's
queue, and ``{"tag", "outcome", "replies", "pid", "done_at"}`` when it is handled, where ``replies``
is what the user would see. The answer to a message another process left queued is reported as
``{"reopened": "<chat>/<message_id>", "replies"}`` at every change. End of input: replies in
flight finish, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from bots.registry import ModelRegistry
from chatbridge.process import run, tune_garbage_collector
from core.channel import Receipt
from core.engine import Engine
from core.events import ChatKind, IncomingMessage
from core.stores.redis import RedisStore
from core.tokens import TokenCounter
from tests.kit.channel import RecordingChannel
from tests.kit.engine import engine_settings, model_settings


class _ReopenedChannel(RecordingChannel):
    """Where the answers to messages another process left queued go: every change is reported as
    ``{"reopened": route, "replies": [...]}``."""

    async def send(self, text: str) -> object:
        handle = await super().send(text)
        _write({"reopened": self.route, "replies": self.messages, "pid": os.getpid()})
        return handle

    async def edit(self, handle: object, text: str) -> None:
        await super().edit(handle, text)
        _write({"reopened": self.route, "replies": self.messages, "pid": os.getpid()})


def _write(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _handle(engine: Engine, line: dict[str, Any]) -> None:
    user = line["user"]
    message = IncomingMessage(
        platform=user.split(":")[0],
        message_id=str(line["message_id"]),
        chat_id=user,
        user_id=user,
        text=line["text"],
        chat_kind=ChatKind.PRIVATE,
    )
    channel = RecordingChannel(route=message.dedupe_key)
    receipt = Receipt()

    async def report_queued() -> None:
        if await receipt.taken():
            _write({"enqueued": message.dedupe_key})

    reporting = asyncio.create_task(report_queued())
    outcome = await engine.handle(message, channel, receipt)
    await reporting
    _write(
        {
            "tag": line["tag"],
            "outcome": str(outcome),
            "replies": channel.messages,
            "pid": os.getpid(),
            "done_at": time.time(),
        }
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--lease-s", type=float, default=15.0)
    parser.add_argument("--settings", type=json.loads, default={})
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    store = RedisStore(args.redis_url, args.prefix)
    await store.open()
    models = {"default": model_settings(args.model_url, max_retries=0, stream=True)}
    for named in args.model:
        name, _, url = named.partition("=")
        models[name] = model_settings(url, max_retries=0, stream=True, api_key=f"sk-{name}")
    registry = ModelRegistry.from_settings(models)
    sections = {
        "context": {"max_messages": 1000, "max_tokens": 1_000_000},
        "limits": {"user_messages_per_minute": 0},
        **args.settings,
    }
    settings = engine_settings(lease_s=args.lease_s, **sections)
    engine = Engine(store=store, models=registry, tokens=TokenCounter.estimate(), settings=settings)
    engine.attach("telegram", lambda route: _ReopenedChannel(route=route))
    _write({"ready": os.getpid()})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        task = asyncio.create_task(_handle(engine, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    await registry.aclose()
    await store.close()


if __name__ == "__main__":
    tune_garbage_collector()  # as ``chatbridge run`` does
    run(main())
