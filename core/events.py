"""The one incoming-message shape every adapter produces.

Identities are strings of the form ``platform:id`` (``telegram:42``, ``slack:C024BE91L``) so that
whitelists, admin lists and session keys read the same on every platform. Display names travel along
only for the model's benefit and are never used to authorise anything.

Pictures, voice notes and files travel as ``Attachment``s: what the platform says about them, and a
way to download them that the adapter supplies. Nothing is downloaded when the event is made: the
engine fetches only after the access and trigger checks, so a denied user's file is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar


class ChatKind(StrEnum):
    """Private chats trigger on every message; groups only when the bot is addressed."""

    PRIVATE = "private"
    GROUP = "group"


class AttachmentKind(StrEnum):
    """What the engine does with a file: an image is shown to the model, audio is transcribed, a
    document becomes text. Anything else a platform sends as a file is a document, so that the
    user hears which types are supported instead of nothing."""

    IMAGE = "image"
    AUDIO = "audio"
    DOCUMENT = "document"


Fetch = Callable[[int], Awaitable[bytes]]
"""Download an attachment's bytes, at most ``max_bytes`` of them (the argument).

Raises ``AttachmentTooLarge`` past the limit (having read at most one byte more), and
``AttachmentFetchFailed`` or ``AttachmentFetchTimeout`` otherwise; none of their messages carries a
token or a URL with one in it."""


Refetch = Callable[[str], Fetch]
"""An adapter's download of a file by its ``Attachment.source`` alone: a queued message's files
after a restart, or in another process."""


class AttachmentError(Exception):
    """A download that did not give the bytes. ``kind`` keys its user-facing text in
    ``core.texts.ATTACHMENT_ERRORS``; the message is for logs and has no secret in it."""

    kind: ClassVar[str] = "attachment_fetch_failed"


class AttachmentTooLarge(AttachmentError):
    """Larger than the limit the fetch was given, by the platform's word or by counting."""

    kind = "attachment_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        said = f"{size} bytes" if size is not None else "more"
        super().__init__(f"{said}; the limit is {limit} bytes")
        self.limit = limit
        self.size = size


class AttachmentFetchFailed(AttachmentError):
    """The platform or its file host refused or broke off the download."""

    kind = "attachment_fetch_failed"


class AttachmentFetchTimeout(AttachmentError):
    """The download did not finish in time."""

    kind = "attachment_fetch_timeout"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file of a message, as the platform describes it, with the adapter's way to download it.

    ``size`` is the platform's figure (None when it gives none), so limits can be checked before any
    download. ``source`` is the adapter's own reference to the file (a Telegram ``file_id``, a
    Discord CDN URL, a Slack ``url_private``): plain data without a secret, kept with a queued
    message so that the adapter can make a fetch for it again after a restart. ``voice`` marks audio
    recorded as a voice message in the app, rather than an audio file someone shared.
    """

    kind: AttachmentKind
    mime_type: str
    name: str
    size: int | None
    source: str
    fetch: Fetch = field(repr=False, compare=False)
    voice: bool = False

    def record(self) -> dict[str, str | int | bool | None]:
        """Everything but the fetch, as JSON-ready data (for a store)."""
        return {
            "kind": self.kind.value,
            "mime_type": self.mime_type,
            "name": self.name,
            "size": self.size,
            "source": self.source,
            "voice": self.voice,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object], fetch: Fetch) -> Attachment:
        """The attachment ``record`` describes, fetched by ``fetch`` (which the adapter makes from
        ``record["source"]``)."""
        size = record.get("size")
        return cls(
            kind=AttachmentKind(str(record["kind"])),
            mime_type=str(record.get("mime_type") or ""),
            name=str(record.get("name") or ""),
            size=size if isinstance(size, int) else None,
            source=str(record["source"]),
            fetch=fetch,
            voice=record.get("voice") is True,
        )


def attachment_kind(mime_type: str) -> AttachmentKind:
    """The kind a file's MIME type makes it, for platforms that only give a MIME type."""
    major = mime_type.partition("/")[0].lower()
    if major == "image":
        return AttachmentKind.IMAGE
    if major == "audio":
        return AttachmentKind.AUDIO
    return AttachmentKind.DOCUMENT


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A platform message after translation, before the engine has decided anything about it.

    ``mention_texts`` are the literal strings the adapter recognised as mentions of the bot (for
    example ``@chatbridge_bot`` or ``<@U123>``); the engine strips them from the text it sends to the
    model, so it never has to know a platform's mention syntax.

    ``attachments`` are the message's own files; ``replied_attachments`` those of the message it
    replies to, for "@bot what is this?" written under someone else's photo in a group.
    ``media_group`` is set on each part of an album that a platform delivers as several messages
    (Telegram): the parts share it, and only one of them carries the caption.
    """

    platform: str
    message_id: str
    chat_id: str
    user_id: str
    text: str
    chat_kind: ChatKind
    user_name: str = ""
    from_bot: bool = False
    mentioned: bool = False
    mention_texts: tuple[str, ...] = ()
    reply_to_bot: bool = False
    thread_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    replied_attachments: tuple[Attachment, ...] = ()
    media_group: str | None = None
    received_at: float = field(default_factory=time.time)

    @property
    def dedupe_key(self) -> str:
        """Message ids are only unique within a chat on most platforms, so the chat is part of the key."""
        return f"{self.chat_id}/{self.message_id}"

    @property
    def is_private(self) -> bool:
        return self.chat_kind is ChatKind.PRIVATE
