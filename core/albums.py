"""Albums: several pictures sent together, which a platform (Telegram) delivers as one message
each, become one question.

The parts share ``IncomingMessage.media_group``; the first to arrive waits ``ALBUM_WAIT_S`` for the
others, then goes on as one message carrying every part's files and the caption (only one part has
it). The other parts' handlers end there, their receipts settled when the joined message is taken.
This happens in the process that receives the parts: a platform that spread one album's parts over
several processes would have them answered as separate messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from core.channel import Receipt
from core.events import IncomingMessage

ALBUM_WAIT_S = 1.0
"""Telegram delivers an album's parts within a few hundred milliseconds of each other."""


@dataclass(slots=True)
class _Album:
    receipt: Receipt
    parts: list[IncomingMessage] = field(default_factory=list)


class Albums:
    def __init__(self, wait_s: float = ALBUM_WAIT_S) -> None:
        self._wait_s = wait_s
        self._open: dict[str, _Album] = {}

    async def gathered(self, message: IncomingMessage, receipt: Receipt) -> IncomingMessage | None:
        """The message to handle: ``message`` itself when it is no album's part, the whole album for
        its first part, and None for the others (joined into the first)."""
        if message.media_group is None:
            return message
        key = f"{message.platform}/{message.chat_id}/{message.media_group}"
        album = self._open.get(key)
        if album is not None:
            album.parts.append(message)
            receipt.settle(await album.receipt.taken())
            return None
        album = self._open[key] = _Album(receipt, [message])
        try:
            await asyncio.sleep(self._wait_s)
        finally:
            del self._open[key]
        return joined(album.parts)


def joined(parts: list[IncomingMessage]) -> IncomingMessage:
    """One message of an album's parts: the captioned part's text and address, every part's files."""
    base = next((part for part in parts if part.text), parts[0])
    return dataclasses.replace(
        base,
        attachments=tuple(file for part in parts for file in part.attachments),
        mentioned=any(part.mentioned for part in parts),
        mention_texts=tuple(dict.fromkeys(text for part in parts for text in part.mention_texts)),
        reply_to_bot=any(part.reply_to_bot for part in parts),
    )
