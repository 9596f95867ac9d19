"""Message parts for chat completions: text first, then each image as a data URL."""

from __future__ import annotations

import base64

import httpx

from bots.images import prepare_image
from bots.parts import data_url, text_of, with_images
from tests.fakes.fake_model import FakeModel
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


async def test_the_fake_model_records_the_image_parts_it_is_sent(fake_model: FakeModel) -> None:
    image = prepare_image(photo(), max_side=256)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": with_images("what is it?", [image])}]}
    async with httpx.AsyncClient() as client:
        answer = (await client.post(f"{fake_model.base_url}/chat/completions", json=body)).json()
    assert answer["choices"][0]["message"]["content"] == "echo: what is it?"
    assert fake_model.user_texts() == ["what is it?"]
    assert fake_model.user_images() == [[data_url(image)]]
