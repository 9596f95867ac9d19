"""Message content with pictures in it, in the chat-completions wire shape.

A user message that carries images has a list of parts instead of a string: the text first, then
each image as a ``data:`` URL, which every OpenAI-compatible server with vision accepts (a link to
the platform's file would need the bot's token, and the model server would have to fetch it).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Literal, Protocol, TypedDict


class Picture(Protocol):
    """An image ready to send: ``bots.images.PreparedImage``, or one stored with a session."""

    @property
    def data(self) -> bytes: ...

    @property
    def mime_type(self) -> str: ...


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ImageURL(TypedDict):
    url: str


class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


def data_url(image: Picture) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def image_part(image: Picture) -> ImagePart:
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


def with_images(text: str, images: Iterable[Picture]) -> list[ContentPart]:
    """``text`` and then the images; an empty text is left out (a photo sent without a caption)."""
    parts: list[ContentPart] = [{"type": "text", "text": text}] if text else []
    parts.extend(image_part(image) for image in images)
    return parts


def text_of(content: str | list[ContentPart]) -> str:
    """The text of a message's content, its images left out (for counting, logs and echoes)."""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")
