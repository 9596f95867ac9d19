"""One bridge process on the redis store, driven through stdin/stdout, for the multi-process tests.

    python -m tests.kit.redis_bridge --redis-url URL --prefix P --model-url URL [--lease-ttl S]

It prints ``{"ready": pid}`` once the engine is built, then reads one JSON object per line::

    {"tag": "any", "user": "telegram:1", "message_id": "7", "text": "hello"}

(a private chat of ``user``) and handles every line at once in its own task, like an adapter would.
For each it writes ``{"enqueued": "<chat>/<message_id>"}`` when the message joined its session's
queue, and ``{"tag", "outcome", "replies", "pid", "done_at"}`` when it is handled, where ``replies``
is what the user would see. End of input: replies in flight finish, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from bots.openai_client import OpenAIChatModel
from chatbridge.process import run, tune_garbage_collector
from core.engine import Engine
from core.events import ChatKind, IncomingMessage
from core.store import PendingMessage
from core.stores import redis as redis_store
from core.stores.redis import RedisStore
from core.tokens import TokenCounter
from tests.kit.channel import RecordingChannel
from tests.kit.engine import engine_settings, model_settings


class _ObservedStore(RedisStore):
    """Reports when a message has reached its session's queue: the moment that defines its place
    in the session's order, which a test needs to know to check that order.

    A message is queued by ``enqueue``, or by a script that also checks it or takes the lease: the
    ``_ADMIT`` script unless it gave a verdict, the ``_ACQUIRE`` script when given a seventh
    argument. All are watched here."""

    async def enqueue(self, session_key: str, item: PendingMessage) -> None:
        await super().enqueue(session_key, item)
        _write({"enqueued": item.message_key})

    async def _eval(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        result = await super()._eval(script, keys, args)
        admitted = script is redis_store._ADMIT and not isinstance(result[0], str)
        if admitted or (script is redis_store._ACQUIRE and len(args) > 6):
            _write({"enqueued": json.loads(args[6])[0]})
        return result


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
    channel = RecordingChannel()
    outcome = await engine.handle(message, channel)
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
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    store = _ObservedStore(args.redis_url, args.prefix)
    await store.open()
    model = OpenAIChatModel(model_settings(args.model_url, max_retries=0, stream=True))
    settings = engine_settings(
        lease_ttl_s=args.lease_ttl,
        context={"max_messages": 1000, "max_tokens": 1_000_000},
        limits={"user_messages_per_minute": 0},
    )
    engine = Engine(store=store, model=model, tokens=TokenCounter.estimate(), settings=settings)
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
    await model.aclose()
    await store.close()


if __name__ == "__main__":
    tune_garbage_collector()  # as ``chatbridge run`` does
    run(main())
