"""The one incoming-message shape every adapter produces.

Identities are strings of the form ``platform:id`` (``telegram:42``, ``slack:C024BE91L``) so that
whitelists, admin lists and session keys read the same on every platform. Display names travel along
only for the model's benefit and are never used to authorise anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class ChatKind(StrEnum):
    """Private chats trigger on every message; groups only when the bot is addressed."""

    PRIVATE = "private"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A platform message after translation, before the engine has decided anything about it.

    ``mention_texts`` are the literal strings the adapter recognised as mentions of the bot (for
    example ``@chatbridge_bot`` or ``<@U123>``); the engine strips them from the text it sends to the
    model, so it never has to know a platform's mention syntax.
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
    received_at: float = field(default_factory=time.time)

    @property
    def dedupe_key(self) -> str:
        """Message ids are only unique within a chat on most platforms, so the chat is part of the key."""
        return f"{self.chat_id}/{self.message_id}"

    @property
    def is_private(self) -> bool:
        return self.chat_kind is ChatKind.PRIVATE
