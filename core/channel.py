"""What the engine needs from a platform to answer one message.

An adapter hands the engine one ``ReplyChannel`` per incoming message. The channel knows where the
answer goes (chat, thread, message to reply to) and how to format Markdown for its platform; the
engine and the shared renderer only decide *what* to send and *when*.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


class LengthUnit(StrEnum):
    """What a platform counts when it limits a message's length."""

    CHARACTERS = "characters"
    UTF16 = "utf16"
    """UTF-16 code units (Telegram): a character outside the Basic Multilingual Plane, most emoji
    among them, counts twice."""
    UTF8_BYTES = "utf8_bytes"
    """UTF-8 bytes (WeChat, WeCom): a Chinese character counts three, an emoji four."""

    def measure(self, text: str) -> int:
        if text.isascii():  # one unit a character in all three; CPython knows it without a scan
            return len(text)
        if self is LengthUnit.UTF16:
            return len(text.encode("utf-16-le")) // 2
        if self is LengthUnit.UTF8_BYTES:
            return len(text.encode("utf-8"))
        return len(text)


@dataclass(frozen=True, slots=True)
class PlatformLimits:
    """Platform limits as data, so splitting and edit throttling are written once in ``core.render``.

    ``max_message_chars`` is the longest text one message may carry (before the adapter's own markup
    conversion; adapters leave themselves a margin), counted in ``length_unit`` as the platform
    counts. ``min_edit_interval_s`` is the shortest time
    between two sends or edits of one streamed reply. A channel that cannot edit (``can_edit=False``)
    gets the reply only once it is complete. ``first_show_delay_s`` is how long the first message of
    a streamed reply waits for more text (unless there is already enough to be worth showing), so
    that a short answer lands once, complete, instead of its first words followed by an edit one
    ``min_edit_interval_s`` later; the typing signal shows meanwhile. ``final_burst`` is how many
    calls the complete text may make back to back, without the interval between them, where the
    platform takes short bursts: streaming keeps to the interval, so that a reply makes at most
    ``final_burst - 1`` calls more than the interval allows, once, at its end.
    """

    max_message_chars: int
    min_edit_interval_s: float
    can_edit: bool = True
    first_show_delay_s: float = 0.0
    length_unit: LengthUnit = LengthUnit.CHARACTERS
    final_burst: int = 1


FIRST_SHOW_DELAY_S = 0.3
"""What the platforms use for ``first_show_delay_s``, counted from the first streamed words: a short
answer is complete within it, and a wait this long is not felt while "typing…" shows."""


class PlatformTooLong(Exception):
    """Raised by a channel when the platform refused a text as too long (its markup grew it past the
    limit, say); the renderer cuts the reply into smaller messages and sends it again."""


class PlatformTrouble(Exception):
    """A platform call that failed for a while, not for good: the renderer tries it again, within
    the delivery budget."""


class PlatformRateLimited(PlatformTrouble):
    """Raised by a channel when the platform answered 429; the renderer waits ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"platform rate limit, retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class PlatformUnavailable(PlatformTrouble):
    """Raised by a channel when the platform answered 5xx, timed out or cut the connection; the
    renderer backs off and tries again."""


class ReplyChannel(Protocol):
    """The reply side of one incoming message, implemented by each adapter."""

    @property
    def limits(self) -> PlatformLimits: ...

    @property
    def route(self) -> str:
        """Where answers go, as text the adapter's ``Reopen`` turns back into a channel: the queue
        stores it, so that a message can be answered after a restart or by another process."""
        ...

    async def send(self, text: str) -> object:
        """Post a new message with ``text`` (Markdown) and return a handle that ``edit`` accepts."""
        ...

    async def edit(self, handle: object, text: str) -> None:
        """Replace the text of a message this channel sent earlier."""
        ...

    async def typing(self) -> None:
        """Show that the bot is working (a no-op where the platform has no such signal)."""
        ...


@runtime_checkable
class VoiceChannel(Protocol):
    """A reply channel that can also send an answer as speech (``audio.speak``); platforms without
    a way to do so leave it out, and their answers stay text."""

    async def send_voice(self, audio: bytes, mime_type: str) -> None: ...


Reopen = Callable[[str], ReplyChannel]
"""An adapter's way back from a ``ReplyChannel.route`` to a channel."""


class Receipt:
    """When an adapter whose platform waits for an acknowledgement (a webhook) may give it.

    The engine settles it True once the message needs nothing more from the platform (durably
    queued, answered or ignored), False when the store could not take it. ``redelivers`` says that
    the platform delivers a message again when it is not acknowledged, so the user need not be
    asked to send it again; an adapter that has nobody to acknowledge passes no receipt.
    """

    def __init__(self, *, redelivers: bool = False) -> None:
        self.redelivers = redelivers
        self._taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def settled(self) -> bool:
        return self._taken.done()

    def settle(self, taken: bool) -> None:
        if not self._taken.done():
            self._taken.set_result(taken)

    async def taken(self) -> bool:
        return await asyncio.shield(self._taken)
