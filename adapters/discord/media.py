"""Discord attachments as the engine's: each has a signed CDN URL that needs no token to download.

Discord says the MIME type (``content_type``) for most files; for the rest it is guessed from the
file name. A voice message is an Ogg/Opus attachment flagged as one (``is_voice_message``).
The URL's signature expires after about a day, which a message queued across a restart outlives.
"""

from __future__ import annotations

import mimetypes

import discord

from adapters.downloads import Downloader
from core.events import Attachment, AttachmentTooLarge, Fetch, attachment_kind


class DiscordFiles:
    def __init__(self, downloader: Downloader) -> None:
        self._downloader = downloader

    def attachments(self, message: discord.Message) -> tuple[Attachment, ...]:
        return tuple(self._attachment(attachment) for attachment in message.attachments)

    def fetch(self, url: str, size: int | None = None) -> Fetch:
        """The fetch of one attachment, from its URL alone (the attachment's ``source``); a known
        ``size`` over the limit is refused without a request."""

        async def fetch(max_bytes: int) -> bytes:
            if size is not None and size > max_bytes:
                raise AttachmentTooLarge(max_bytes, size)
            return await self._downloader.get(url, max_bytes=max_bytes)

        return fetch

    def _attachment(self, attachment: discord.Attachment) -> Attachment:
        mime = attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
        mime = mime.partition(";")[0].strip()
        return Attachment(
            attachment_kind(mime),
            mime,
            attachment.filename,
            attachment.size,
            attachment.url,
            self.fetch(attachment.url, attachment.size),
            voice=attachment.is_voice_message(),
        )
