"""The terminal as a chat platform: one private chat with the local user ``console:local``.

It uses the same engine, commands and store as every other adapter, so ``chatbridge chat`` is a
faithful way to try a configuration before connecting a real platform. On a terminal it is an
interactive chat (``terminal.py``); on pipes it reads lines and prints only the answers
(``plain.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable
from itertools import count
from typing import TYPE_CHECKING, TextIO

from adapters.console import files
from adapters.console.plain import LineReader, PlainChannel
from adapters.console.settings import ConsoleSettings
from adapters.kit import MessageHandler
from core import texts
from core.channel import ReplyChannel
from core.events import Attachment, ChatKind, IncomingMessage
from core.render import send_text

if TYPE_CHECKING:
    from adapters.console.terminal import TerminalPrompt

CONSOLE_USER = "console:local"


class ConsoleAdapter:
    name = "console"

    def __init__(
        self, settings: ConsoleSettings | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
    ) -> None:
        self._settings = settings or ConsoleSettings()
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        # Dedupe marks outlive the process in a persistent store, so ids must differ between runs.
        self._run_id = uuid.uuid4().hex[:12]
        self._ids = count(1)
        self._stopped = asyncio.Event()
        self._reading = False
        self._answer: asyncio.Task[object] | None = None

    @property
    def interactive(self) -> bool:
        """A person at a terminal, rather than pipes: this console then owns Ctrl-C (SIGINT)."""
        return self._stdin.isatty() and self._stdout.isatty()

    @property
    def ready(self) -> bool:
        """The terminal is there for as long as the chat reads it."""
        return self._reading and not self._stopped.is_set()

    async def run(self, handler: MessageHandler) -> None:
        self._reading = True
        try:
            if self.interactive:
                await self._converse(handler)
            else:
                await self._answer_lines(handler)
        finally:
            self._reading = False

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        return "terminal input and output"

    async def _answer_lines(self, handler: MessageHandler) -> None:
        handler.attach("console", lambda route: PlainChannel(self._stdout), files.fetch)
        lines = LineReader(self._stdin)
        while (line := await self._unless_stopped(lines.next())) is not None:
            if line.strip():
                channel = PlainChannel(self._stdout)
                await self._ask(handler, line.strip(), channel)
                channel.end()

    async def _converse(self, handler: MessageHandler) -> None:
        from rich.console import Console

        # Loaded only for a person at a terminal: pipes and ``run`` need neither library.
        from adapters.console.terminal import WELCOME, Quit, StatusLine, TerminalChannel, TerminalPrompt

        console = Console(file=self._stdout)
        prompt = TerminalPrompt(self._settings.history_path, console)
        status = StatusLine()
        handler.attach("console", lambda route: TerminalChannel(console), files.fetch)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: self._interrupt(prompt))
        logging.getLogger().addHandler(status)
        console.print(WELCOME, style="dim", highlight=False)
        try:
            while not self._stopped.is_set():
                try:
                    question = await self._unless_stopped(prompt.ask())
                except Quit:
                    return
                if question is None:
                    return
                channel = TerminalChannel(console)
                status.channel = channel
                stopped = False
                try:
                    stopped = not await self._ask(handler, question, channel)
                finally:
                    status.channel = None
                    channel.close(stopped=stopped)
                if stopped:
                    prompt.interrupted()
        finally:
            logging.getLogger().removeHandler(status)
            loop.remove_signal_handler(signal.SIGINT)

    def _interrupt(self, prompt: TerminalPrompt) -> None:
        """Ctrl-C while an answer streams (the prompt takes it as a key): stop that answer. Between
        an answer and the next prompt it counts as pressed at the prompt."""
        if self._answer is not None:
            self._answer.cancel()
        elif prompt.interrupted():
            self._stopped.set()

    async def _unless_stopped(self, reading: Awaitable[str | None]) -> str | None:
        """What ``reading`` gives, or None once ``stop`` is called first."""
        read = asyncio.ensure_future(reading)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (read, stopped):
                task.cancel()
        return read.result() if read in done else None

    async def _ask(self, handler: MessageHandler, text: str, channel: ReplyChannel) -> bool:
        """Answer one question; False when Ctrl-C withdrew it (the engine then stores nothing)."""
        attachments: tuple[Attachment, ...] = ()
        request = files.attach_request(text)
        if request is not None:
            path, text = request
            if not path:
                await send_text(channel, texts.ATTACH_USAGE)
                return True
            try:
                attachments = (files.local_attachment(path),)
            except OSError:
                await send_text(channel, texts.ATTACH_NO_FILE.format(path=path))
                return True
        message = IncomingMessage(
            platform="console",
            message_id=f"{self._run_id}-{next(self._ids)}",
            chat_id=CONSOLE_USER,
            user_id=CONSOLE_USER,
            text=text,
            chat_kind=ChatKind.PRIVATE,
            user_name="you",
            attachments=attachments,
        )
        self._answer = answer = asyncio.ensure_future(handler.handle(message, channel))
        try:
            await asyncio.wait({answer})
        except asyncio.CancelledError:  # the chat itself is stopping: the answer goes with it
            answer.cancel()
            await asyncio.wait({answer})
            raise
        finally:
            self._answer = None
        return not answer.cancelled()
