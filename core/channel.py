"""What the engine needs from a platform to answer one message.

An adapter hands the engine one ``ReplyChannel`` per incoming message. The channel knows where the
answer goes (chat, thread, message to reply to) and how to format Markdown for its platform; the
engine and the shared renderer only decide *what* to send and *when*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PlatformLimits:
    """Platform limits as data, so splitting and edit throttling are written once in ``core.render``.

    ``max_message_chars`` is the longest text one message may carry (before the adapter's own markup
    conversion; adapters leave themselves a margin). ``min_edit_interval_s`` is the shortest time
    between two sends or edits of one streamed reply. A channel that cannot edit (``can_edit=False``)
    gets the reply only once it is complete. ``first_show_delay_s`` is how long the first message of
    a streamed reply waits for more text (unless there is already enough to be worth showing), so
    that a short answer lands once, complete, instead of its first words followed by an edit one
    ``min_edit_interval_s`` later; the typing signal shows meanwhile.
    """

    max_message_chars: int
    min_edit_interval_s: float
    can_edit: bool = True
    first_show_delay_s: float = 0.0


FIRST_SHOW_DELAY_S = 0.3
"""What the platforms use for ``first_show_delay_s``: a short answer from a fast model is complete
within it, and a wait this long before the first words is not felt while "typing…" shows."""


class PlatformRateLimited(Exception):
    """Raised by a channel when the platform answered 429; the renderer waits ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"platform rate limit, retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class ReplyChannel(Protocol):
    """The reply side of one incoming message, implemented by each adapter."""

    @property
    def limits(self) -> PlatformLimits: ...

    async def send(self, text: str) -> object:
        """Post a new message with ``text`` (Markdown) and return a handle that ``edit`` accepts."""
        ...

    async def edit(self, handle: object, text: str) -> None:
        """Replace the text of a message this channel sent earlier."""
        ...

    async def typing(self) -> None:
        """Show that the bot is working (a no-op where the platform has no such signal)."""
        ...
