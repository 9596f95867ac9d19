"""The console when it is not a terminal (``echo question | chatbridge chat``, or ``run`` under a
service manager): one line in is one question, and only the answers come out, unadorned."""

from __future__ import annotations

import asyncio
import threading
from typing import TextIO

from core.channel import PlatformLimits


class PlainChannel:
    """Streams by writing only what each edit appends, since a pipe cannot take anything back."""

    limits = PlatformLimits(max_message_chars=1_000_000, min_edit_interval_s=0.0)
    route = ""
    """There is one console: every answer goes to it."""
    append_only = True
    """``core.tool_loop.AppendOnly``: no status line while tools run, since it would stay."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown: list[str] = []

    async def send(self, text: str) -> object:
        self._write(("\n\n" if self._shown else "") + text)
        self._shown.append(text)
        return len(self._shown) - 1

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int)
        before = self._shown[handle]
        self._write(text[len(before) :] if text.startswith(before) else "\n\n" + text)
        self._shown[handle] = text

    async def typing(self) -> None:
        """Nothing to show in a pipe."""

    def end(self) -> None:
        if self._shown:
            self._write("\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


class LineReader:
    """Reads the input's lines on a daemon thread.

    A daemon thread, not the event loop's executor: a blocked ``readline`` must not keep the process
    alive after Ctrl-C, and the file flags stay untouched (non-blocking stdin would also make writes
    to a shared terminal fail).
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
        """The next line, or None at end of input."""
        return await self._queue.get()
