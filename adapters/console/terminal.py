"""The console on a terminal: prompt_toolkit reads the question (line editing, history, a paste or
Alt-Enter as one multi-line message) and rich shows the answer as it streams, as Markdown.

Ctrl-C means "stop" before it means "quit": it stops the answer being streamed, clears a typed
line, and quits only when pressed again at an empty prompt. Ctrl-D at an empty prompt quits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import HTML
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text

from core import texts
from core.channel import PlatformLimits

WELCOME = (
    "chatbridge · /help lists commands · /attach PATH [question] sends a file · Alt-Enter: new line"
    " · Ctrl-C: stop the answer · Ctrl-D: quit"
)
QUIT_HINT = "(press Ctrl-C again or Ctrl-D to quit)"
STOPPED = "(stopped; this exchange is not remembered)"
CODE_THEME = "monokai"

log = logging.getLogger(__name__)


class Quit(Exception):
    """The person asked to leave the chat."""


class Interrupted(Exception):
    """Ctrl-C at the prompt: the typed line, if any, is gone."""


class TerminalPrompt:
    """One question at a time from the keyboard."""

    def __init__(self, history_path: Path, console: Console) -> None:
        self._console = console
        self._session: PromptSession[str] = PromptSession(
            history=_history(history_path), key_bindings=_bindings(), enable_open_in_editor=False
        )
        self._quit_armed = False

    async def ask(self) -> str:
        """The next question (possibly several lines). Raises ``Quit`` when the person leaves."""
        while True:
            try:
                # Ctrl-C at the prompt is a key (the binding below); the signal is the console's.
                text = await self._session.prompt_async(
                    HTML("<b><ansigreen>you&gt;</ansigreen></b> "), handle_sigint=False
                )
            except EOFError:
                raise Quit from None
            except Interrupted:
                if self.interrupted():
                    raise Quit from None
                continue
            self._quit_armed = False
            if text.strip():
                return text.strip()

    def interrupted(self) -> bool:
        """A Ctrl-C (at the prompt, during an answer, or in between): True when it is the second in a
        row, which means quit; otherwise the next one will."""
        if self._quit_armed:
            return True
        self._quit_armed = True
        self._console.print(QUIT_HINT, style="dim")
        return False


def _history(path: Path) -> FileHistory | InMemoryHistory:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as exc:
        log.warning("cannot keep the chat history in %s (%s); it lasts this session only", path, exc.strerror)
        return InMemoryHistory()
    return FileHistory(str(path))


def _bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _new_line(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()  # as in a shell: the line is dropped, the prompt stays
            return
        event.app.exit(exception=Interrupted())

    return bindings


class TerminalChannel:
    """One answer on the terminal: a spinner until the first words, then the Markdown as it grows.

    A live area at the bottom of the screen is redrawn on every edit; a terminal cannot redraw what
    has scrolled off its top, so lines that leave the live area are printed for good instead, and
    the live area holds only the last screenful. Warnings logged while the answer is awaited (the
    model client's retries, say) show as one dim status line under it, replaced by the next.
    """

    limits = PlatformLimits(max_message_chars=1_000_000, min_edit_interval_s=0.1)
    route = ""
    """There is one terminal: every answer goes to it."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._texts: list[str] = []
        self._status = ""
        self._committed = 0
        self._live = Live(self._view([]), console=console, refresh_per_second=12, transient=False)
        self._live.start()
        self._asking = asyncio.Lock()

    async def send(self, text: str) -> object:
        self._texts.append(text)
        self._redraw()
        return len(self._texts) - 1

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int)
        self._texts[handle] = text
        self._redraw()

    async def typing(self) -> None:
        """The spinner shows from the start; nothing more to do."""

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        """y/n at the terminal (the one person at it is the asker); no answer within ``timeout_s``
        is no. The answer being streamed pauses meanwhile, and the decision stays on the screen.
        Several questions of one round are asked one after the other."""
        async with self._asking:
            self._live.stop()
            session: PromptSession[str] = PromptSession()
            try:
                async with asyncio.timeout(timeout_s):
                    typed = await session.prompt_async(
                        texts.TOOL_CONSOLE_PROMPT.format(question=question), handle_sigint=False
                    )
                allowed = typed.strip().lower() in ("y", "yes")
                decided = texts.TOOL_CONFIRMED if allowed else texts.TOOL_DECLINED
            except TimeoutError:
                allowed, decided = False, texts.TOOL_TIMED_OUT
            except (EOFError, KeyboardInterrupt):
                allowed, decided = False, texts.TOOL_DECLINED
            self._console.print(decided.format(question="").strip(), style="dim", highlight=False)
            self._live.start()
            return allowed

    def status(self, text: str) -> None:
        self._status = text
        self._redraw()

    def close(self, *, stopped: bool = False) -> None:
        """The answer is complete, or was stopped: everything it showed stays on the screen."""
        self._status = STOPPED if stopped else ""
        self._redraw(final=True)
        self._live.stop()
        self._console.print()  # a blank line before the next prompt

    def _redraw(self, final: bool = False) -> None:
        lines = self._lines() if self._texts else []
        room = max(self._console.size.height - 3, 4)
        stable = max(len(lines) - room, 0)
        if stable <= self._committed:
            self._live.update(self._view(lines[self._committed :], final=final), refresh=True)
            return
        # The live area takes its new, shorter content first; printing above it then redraws it.
        committed, self._committed = self._committed, stable
        self._live.update(self._view(lines[stable:], final=final))
        self._live.console.print(_Lines(lines[committed:stable]))

    def _lines(self) -> list[list[Segment]]:
        markdown = _ChatMarkdown("\n\n".join(self._texts))
        # One column short of the width: a line that fills the last column makes some terminals
        # wrap early, and the live area would then be redrawn one line off.
        options = self._console.options.update_width(max(self._console.width - 1, 20))
        return self._console.render_lines(markdown, options, pad=False)

    def _view(self, lines: list[list[Segment]], final: bool = False) -> RenderableType:
        status = Text(self._status, style="dim", no_wrap=True, overflow="ellipsis")
        if not self._texts and not final:
            return Spinner("dots", text=status if self._status else Text("thinking…", style="dim"))
        return Group(_Lines(lines), status) if self._status else _Lines(lines)


class _ChatMarkdown(Markdown):
    """Markdown as chat platforms show it (adapters/markdown.py does the same for them): a single
    line break stays a line break, where CommonMark would join the two lines."""

    def __init__(self, text: str) -> None:
        super().__init__(text, code_theme=CODE_THEME)
        for token in self.parsed:
            for child in token.children or ():
                if child.type == "softbreak":
                    child.type = "hardbreak"


class _Lines:
    """Lines rich has already rendered, shown as they are."""

    def __init__(self, lines: Iterable[list[Segment]]) -> None:
        self._lines = list(lines)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from _joined(self._lines)


def _joined(lines: list[list[Segment]]) -> Iterator[Segment]:
    for line in lines:
        yield from line
        yield Segment.line()


class StatusLine(logging.Handler):
    """Shows warnings as the status line of the answer being awaited, instead of log lines that
    would land in the middle of the chat (the full records go to the log file)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.channel: TerminalChannel | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.channel is not None:
            self.channel.status(record.getMessage())
