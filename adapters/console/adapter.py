"""The terminal as a chat platform: one private chat with the local user ``console:local``.

It uses the same engine, commands and store as every other adapter, so ``chatbridge chat`` is a
faithful way to try a configuration before connecting a real platform.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from itertools import count
from typing import TextIO

from adapters.kit import MessageHandler
from core.channel import PlatformLimits
from core.events import ChatKind, IncomingMessage

CONSOLE_USER = "console:local"
_PROMPT = "you> "
_BOT = "bot> "


class ConsoleChannel:
    """Streams by printing only what each edit appends, since a terminal cannot rewrite past lines."""

    limits = PlatformLimits(max_message_chars=1_000_000, min_edit_interval_s=0.0)
    route = ""
    """There is one terminal: every answer goes to it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown: list[str] = []

    async def send(self, text: str) -> object:
        self._write(("\n" if self._shown else "") + _BOT + text)
        self._shown.append(text)
        return len(self._shown) - 1

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int)
        before = self._shown[handle]
        if text.startswith(before):
            self._write(text[len(before) :])
        else:
            self._write("\n" + _BOT + text)
        self._shown[handle] = text

    async def typing(self) -> None:
        """The prompt stays away until the answer is complete; that is signal enough here."""

    def end(self) -> None:
        if self._shown:
            self._write("\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


class ConsoleAdapter:
    name = "console"

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        # Dedupe marks outlive the process in a persistent store, so ids must differ between runs.
        self._run_id = uuid.uuid4().hex[:12]
        self._ids = count(1)
        self._stopped = asyncio.Event()
        self._reading = False

    @property
    def ready(self) -> bool:
        """The terminal is there for as long as the chat reads it."""
        return self._reading and not self._stopped.is_set()

    async def run(self, handler: MessageHandler) -> None:
        interactive = self._stdin.isatty()
        lines = _LineReader(self._stdin)
        self._reading = True
        handler.attach("console", lambda route: ConsoleChannel(self._stdout))
        if interactive:
            self._stdout.write("chatbridge console. /help lists the commands; Ctrl-D or Ctrl-C quits.\n")
        try:
            while not self._stopped.is_set():
                if interactive:
                    self._stdout.write(_PROMPT)
                    self._stdout.flush()
                line = await self._next_line(lines)
                if line is None:
                    break
                if line.strip():
                    await self._ask(handler, line.strip())
        finally:
            self._reading = False
            if interactive:
                self._stdout.write("\n")
                self._stdout.flush()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        return "terminal input and output"

    async def _next_line(self, lines: _LineReader) -> str | None:
        """The next line, or None at end of input or when stopped."""
        read = asyncio.ensure_future(lines.next())
        stopped = asyncio.ensure_future(self._stopped.wait())
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (read, stopped):
            if task not in done:
                task.cancel()
        return read.result() if read in done else None

    async def _ask(self, handler: MessageHandler, text: str) -> None:
        message = IncomingMessage(
            platform="console",
            message_id=f"{self._run_id}-{next(self._ids)}",
            chat_id=CONSOLE_USER,
            user_id=CONSOLE_USER,
            text=text,
            chat_kind=ChatKind.PRIVATE,
            user_name="you",
        )
        channel = ConsoleChannel(self._stdout)
        await handler.handle(message, channel)
        channel.end()


class _LineReader:
    """Reads stdin on a daemon thread.

    A daemon thread, not the event loop's executor: a blocked ``readline`` must not keep the process
    alive after Ctrl-C, and the terminal's file flags stay untouched (non-blocking stdin would also
    make writes to a shared terminal fail).
    """

    def __init__(self, stream: TextIO) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._pump, args=(stream,), name="console-stdin", daemon=True).start()

    def _pump(self, stream: TextIO) -> None:
        try:
            for line in stream:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        except RuntimeError:
            return  # the loop closed while we were blocked reading: the chat is over anyway

    async def next(self) -> str | None:
        return await self._queue.get()
