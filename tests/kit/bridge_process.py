"""``chatbridge`` itself in a subprocess, for tests of what an operator sees: its exit status, its
logs, its console, and what it does after a kill."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path


class BridgeProcess:
    """``chatbridge`` in a subprocess: stdin/stdout for the console, stderr to a file (it can be long)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv, self.cwd, self.env = argv, cwd, env
        self.stderr_path = cwd / "stderr.log"
        self.stdout = ""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def port(self) -> int:
        for _ in range(200):
            found = re.search(r"HTTP server listening on [\d.]+:(\d+)", self.stderr)
            if found:
                return int(found.group(1))
            assert self.process is not None and self.process.returncode is None, self.stderr
            await asyncio.sleep(0.05)
        raise AssertionError(f"the HTTP server did not start:\n{self.stderr}")

    async def ask(self, text: str) -> str:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()
        line = (await asyncio.wait_for(self.process.stdout.readline(), 15)).decode()
        self.stdout += line
        return line.rstrip("\n")

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.process.communicate(), 30)
        self.stdout += out.decode(errors="replace")
        assert self.process.returncode is not None
        return self.process.returncode

    async def finish(self, stdin: str = "") -> int:
        assert self.process is not None
        out, _ = await asyncio.wait_for(self.process.communicate(stdin.encode()), 30)
        self.stdout += out.decode(errors="replace")
        assert self.process.returncode is not None
        return self.process.returncode


def base_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")}
    env.update(CHATBRIDGE_CONTEXT__TOKENIZER="estimate", CHATBRIDGE_SERVER__PORT="0")
    env.update(extra)
    return env
