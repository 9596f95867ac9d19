"""Message parts for chat completions: text first, then each image as a data URL."""

from __future__ import annotations

import base64

from bots.images import prepare_image
from bots.parts import text_of, with_images
from tests.kit.media import photo, screenshot


def test_text_and_images_become_parts_with_data_urls() -> None:
    images = [prepare_image(photo(), max_side=2048), prepare_image(screenshot(), max_side=2048)]
    parts = with_images("what is this?", images)
    assert parts[0] == {"type": "text", "text": "what is this?"}
    urls = [part["image_url"]["url"] for part in parts[1:] if part["type"] == "image_url"]
    assert [url.split(",")[0] for url in urls] == ["data:image/jpeg;base64", "data:image/png;base64"]
    assert base64.b64decode(urls[0].split(",", 1)[1]) == images[0].data
    assert text_of(parts) == "what is this?"


def test_a_photo_without_a_caption_has_no_text_part() -> None:
    parts = with_images("", [prepare_image(photo(), max_side=512)])
    assert [part["type"] for part in parts] == ["image_url"]
    assert text_of(parts) == ""
