"""Pictures prepared for the model, from real files made with Pillow."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bots.images import ImageUnreadable, image_tokens, prepare_image
from tests.kit.media import photo, screenshot, transparent_png


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_a_large_photo_is_scaled_to_the_longer_side_and_sent_as_jpeg() -> None:
    prepared = prepare_image(photo(4000, 3000), max_side=2048)
    assert (prepared.width, prepared.height, prepared.mime_type) == (2048, 1536, "image/jpeg")
    image = opened(prepared.data)
    assert image.format == "JPEG" and image.size == (2048, 1536)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    # Orientation 6: the stored pixels must be turned 90 degrees clockwise to stand upright, so the
    # red left half of the stored picture becomes its top half.
    prepared = prepare_image(photo(400, 200, orientation=6), max_side=2048)
    image = opened(prepared.data).convert("RGB")
    assert image.size == (200, 400)
    top, bottom = image.getpixel((100, 50)), image.getpixel((100, 350))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[1] < 60  # red
    assert not (bottom[0] > 200 and bottom[1] < 60)
    assert not opened(prepared.data).getexif()


def test_a_small_image_keeps_its_size() -> None:
    prepared = prepare_image(photo(300, 200), max_side=2048)
    assert (prepared.width, prepared.height) == (300, 200)


def test_screenshots_and_transparent_images_stay_png() -> None:
    assert prepare_image(screenshot(), max_side=2048).mime_type == "image/png"
    prepared = prepare_image(transparent_png(), max_side=2048)
    assert prepared.mime_type == "image/png"
    assert opened(prepared.data).mode == "RGBA"


@pytest.mark.parametrize("data", [b"", b"not an image at all", photo()[:2000]], ids=["empty", "text", "truncated"])
def test_what_does_not_decode_is_unreadable(data: bytes) -> None:
    with pytest.raises(ImageUnreadable):
        prepare_image(data, max_side=2048)


def test_a_canvas_too_large_to_decode_is_refused_before_decoding() -> None:
    huge = io.BytesIO()
    Image.new("1", (8_000, 8_000)).save(huge, format="PNG")  # 64 megapixels in a few kB
    with pytest.raises(ImageUnreadable, match="pixels"):
        prepare_image(huge.getvalue(), max_side=2048)


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # OpenAI's worked examples
        ((2048, 4096), "high", 1105),
        ((4096, 8192), "low", 85),
        ((512, 512), "high", 255),
    ],
)
def test_the_token_estimate_follows_openais_tile_rule(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail=detail) == tokens
