"""Attachments as the engine gets them, and the texts for files it cannot use."""

from __future__ import annotations

import pytest

from core import texts
from core.events import Attachment, AttachmentKind, attachment_kind


async def test_an_attachment_survives_a_store_round_trip_and_fetches_through_the_new_fetch() -> None:
    async def fetch(max_bytes: int) -> bytes:
        return b"x" * min(max_bytes, 3)

    original = Attachment(AttachmentKind.AUDIO, "audio/ogg", "voice.ogg", 1234, "file-id-1", fetch, voice=True)
    again = Attachment.from_record(original.record(), fetch)
    assert again == original
    assert await again.fetch(10) == b"xxx"


@pytest.mark.parametrize(
    ("mime_type", "kind"),
    [
        ("image/png", AttachmentKind.IMAGE),
        ("audio/ogg; codecs=opus", AttachmentKind.AUDIO),
        ("application/pdf", AttachmentKind.DOCUMENT),
        ("", AttachmentKind.DOCUMENT),
    ],
)
def test_a_mime_type_gives_the_kind(mime_type: str, kind: AttachmentKind) -> None:
    assert attachment_kind(mime_type) is kind


def test_size_limits_are_said_in_megabytes() -> None:
    assert texts.too_large(image=True, size=12_345_678, limit=10_000_000) == (
        "That picture is too large (12.3 MB; the limit is 10 MB). Please send a smaller one."
    )
    assert "over 20 MB" in texts.too_large(image=False, size=None, limit=20_000_000)
    assert texts.byte_size(850_000) == "850 kB"


def test_a_model_without_vision_names_the_models_with_it() -> None:
    assert texts.cannot_see("small", ["vis-b", "vis-a"]).endswith("These can: vis-a, vis-b; switch with /model NAME.")
    assert "none of this bridge's models" in texts.cannot_see("small", [])
