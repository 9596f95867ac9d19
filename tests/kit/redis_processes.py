"""Bridge processes on one Redis (``tests/kit/redis_bridge.py``), for the tests of what several
processes do together."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class BridgeProcess:
    """A ``tests/kit/redis_bridge.py`` process: send it messages, collect what each came to."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.results: dict[str, dict[str, Any]] = {}
        self.enqueued: set[str] = set()
        self.reopened: dict[str, list[str]] = {}
        """What each message answered on a reopened channel shows now, by its key (its route)."""
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        redis_url: str,
        prefix: str,
        model_url: str,
        lease_s: float = 15.0,
        settings: dict[str, Any] | None = None,
        models: dict[str, str] | None = None,
    ) -> BridgeProcess:
        """``settings`` and ``models`` as ``redis_bridge --settings`` and ``--model`` take them."""
        extra = ["--settings", json.dumps(settings or {})]
        for name, url in (models or {}).items():
            extra += ["--model", f"{name}={url}"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.kit.redis_bridge",
            "--redis-url", redis_url, "--prefix", prefix, "--model-url", model_url, "--lease-s", str(lease_s),
            *extra, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert ready == {"ready": process.pid}
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            record = json.loads(line)
            if "enqueued" in record:
                self.enqueued.add(record["enqueued"])
            elif "reopened" in record:
                self.reopened[record["reopened"]] = record["replies"]
            else:
                self.results[record["tag"]] = record
            self._arrived.set()

    def send(self, tag: str, user: str, text: str, message_id: str | None = None) -> None:
        assert self.process.stdin is not None
        line = {"tag": tag, "user": user, "message_id": message_id or tag, "text": text}
        self.process.stdin.write((json.dumps(line) + "\n").encode())

    async def result(self, tag: str, timeout_s: float = 15.0) -> dict[str, Any]:
        await self._until(lambda: tag in self.results, timeout_s)
        return self.results[tag]

    async def reopened_reply(self, message_key: str, text: str, timeout_s: float = 15.0) -> list[str]:
        """Until the answer on the channel reopened for ``message_key`` shows ``text`` in full."""
        await self._until(lambda: text in self.reopened.get(message_key, []), timeout_s)
        return self.reopened[message_key]

    async def queued(self, message_key: str, timeout_s: float = 15.0) -> None:
        """Until the message (``<chat>/<message_id>``) is in its session's queue in Redis."""
        await self._until(lambda: message_key in self.enqueued, timeout_s)

    async def _until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> int:
        """Close stdin: the bridge finishes what it has and exits."""
        if self.alive and self.process.stdin is not None:
            self.process.stdin.close()
        code = await asyncio.wait_for(self.process.wait(), 15)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        await self._reader
