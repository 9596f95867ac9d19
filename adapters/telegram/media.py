"""Telegram's photos, voice notes, audio files and documents as the engine's attachments.

A photo arrives in several sizes; the largest is taken (the engine scales it down itself, and
Telegram's own previews are too small to read text in). Files are fetched the Bot API's way:
``getFile`` gives a ``file_path``, and the bytes are at ``<base_file_url><token>/<file_path>``, where
``base_file_url`` follows ``adapters.telegram.base_url`` (``.../bot`` becomes ``.../file/bot``), so a
self-hosted Bot API server or a proxy serves both. The Bot API hands out files up to 20 MB.

Videos, animations and video notes become documents, so the user hears that they are not supported;
stickers, locations, contacts and polls are not files anyone asks a question about.
"""

from __future__ import annotations

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError, TimedOut

from adapters.downloads import Downloader
from core.events import (
    Attachment,
    AttachmentFetchFailed,
    AttachmentFetchTimeout,
    AttachmentKind,
    AttachmentTooLarge,
    Fetch,
    attachment_kind,
)

DEFAULT_FILE_URL = "https://api.telegram.org/file/bot"
BOT_API_MAX_BYTES = 20_000_000
"""The largest file the public Bot API's getFile hands out ("file is too big" beyond it)."""


def file_base_url(base_url: str) -> str:
    """The file endpoint of the Bot API at ``base_url``: ``.../bot`` becomes ``.../file/bot``."""
    if not base_url:
        return DEFAULT_FILE_URL
    root = base_url.rstrip("/")
    if root.endswith("/bot"):
        return f"{root.removesuffix('/bot')}/file/bot"
    return f"{root}/file/bot"


class TelegramFiles:
    """Makes the attachments of a message, each with a fetch through ``getFile``."""

    def __init__(self, bot: Bot, downloader: Downloader) -> None:
        self._bot = bot
        self._downloader = downloader

    def attachments(self, message: Message) -> tuple[Attachment, ...]:
        found: list[Attachment] = []
        if message.photo:
            largest = max(message.photo, key=lambda size: size.width * size.height)
            found.append(
                self._attachment(
                    AttachmentKind.IMAGE,
                    "image/jpeg",
                    f"photo_{largest.file_unique_id}.jpg",
                    largest.file_id,
                    largest.file_size,
                )
            )
        if message.voice is not None:
            voice = message.voice
            mime = voice.mime_type or "audio/ogg"
            found.append(
                self._attachment(AttachmentKind.AUDIO, mime, "voice.ogg", voice.file_id, voice.file_size, voice=True)
            )
        if message.audio is not None:
            audio = message.audio
            mime = audio.mime_type or "audio/mpeg"
            name = audio.file_name or "audio.mp3"
            found.append(self._attachment(AttachmentKind.AUDIO, mime, name, audio.file_id, audio.file_size))
        if message.document is not None:
            document = message.document
            mime = document.mime_type or "application/octet-stream"
            name = document.file_name or "document"
            found.append(self._attachment(attachment_kind(mime), mime, name, document.file_id, document.file_size))
        for video in (message.video, message.animation, message.video_note):
            if video is not None:
                mime = getattr(video, "mime_type", None) or "video/mp4"
                name = getattr(video, "file_name", None) or "video.mp4"
                found.append(self._attachment(AttachmentKind.DOCUMENT, mime, name, video.file_id, video.file_size))
        return tuple(found)

    def fetch(self, file_id: str, size: int | None = None) -> Fetch:
        """The fetch of one file, from its ``file_id`` alone (the attachment's ``source``)."""

        async def fetch(max_bytes: int) -> bytes:
            if size is not None and size > max_bytes:
                raise AttachmentTooLarge(max_bytes, size)
            try:
                file = await self._bot.get_file(file_id)
            except TimedOut:
                raise AttachmentFetchTimeout("getFile timed out") from None
            except BadRequest as error:
                if "too big" in str(error).lower():
                    raise AttachmentTooLarge(min(max_bytes, BOT_API_MAX_BYTES), size) from None
                raise AttachmentFetchFailed(f"getFile refused: {type(error).__name__}") from None
            except TelegramError as error:
                raise AttachmentFetchFailed(f"getFile failed: {type(error).__name__}") from None
            if file.file_size is not None and file.file_size > max_bytes:
                raise AttachmentTooLarge(max_bytes, file.file_size)
            url = file.file_path or ""
            if not url.startswith(("https://", "http://")):
                # A Bot API server in --local mode gives a path on its own disk.
                raise AttachmentFetchFailed("getFile gave no URL (a Bot API server in local mode?)")
            return await self._downloader.get(url, max_bytes=max_bytes)

        return fetch

    def _attachment(
        self, kind: AttachmentKind, mime: str, name: str, file_id: str, size: int | None, *, voice: bool = False
    ) -> Attachment:
        return Attachment(kind, mime, name, size, file_id, self.fetch(file_id, size), voice=voice)
