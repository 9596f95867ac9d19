"""Pictures made ready for a vision model: upright, no larger than needed, in a format every server takes.

Every image is decoded and encoded again, even a small JPEG that would fit as it is: the new file
has the EXIF orientation applied (phones store pictures sideways and say so in EXIF, which models
ignore) and carries no metadata, so a photo's GPS position does not travel to the model provider.

Memory: the file's bytes and the encoded result are the only copies of the image's bytes held at
once (the pixels in between are Pillow's). A JPEG is decoded at a reduced scale straight away
(``Image.draft``: libjpeg's DCT scaling by 1/2, 1/4 or 1/8) when it is much larger than the target,
which saves most of the decoding time and memory of a 12-megapixel photo.

The output is PNG for images with transparency or few colours (screenshots, diagrams, text: JPEG
blurs their sharp edges and would lose the alpha), JPEG otherwise (photos: a tenth of PNG's size).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 60_000_000
"""Images with more pixels than this are refused before decoding: a small file can claim a huge
canvas (a "decompression bomb"), and no camera photo comes near it (a 50-megapixel phone: 8192 x 6144)."""
JPEG_QUALITY = 85
FEW_COLOURS = 256
"""An image with at most this many distinct colours (counted after scaling) is sent as PNG."""


class ImageUnreadable(Exception):
    """The bytes are not an image Pillow can decode (corrupt, truncated, or an unknown format)."""


@dataclass(frozen=True, slots=True)
class PreparedImage:
    data: bytes
    mime_type: str
    width: int
    height: int


def prepare_image(data: bytes, *, max_side: int) -> PreparedImage:
    """``data`` decoded, turned upright, scaled so its longer side is at most ``max_side`` and encoded
    as PNG or JPEG. CPU-bound: run it in a thread (``asyncio.to_thread``) from async code.

    Raises ``ImageUnreadable`` for anything that does not decode, a truncated file included.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageUnreadable(f"{opened.width} x {opened.height} pixels is more than {MAX_PIXELS}")
            image = _decoded(opened, max_side)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports a corrupt or truncated file as OSError (or SyntaxError from some plugins).
        raise ImageUnreadable(f"{type(error).__name__}: {error}") from None
    image = _flattened(image)
    as_png = _wants_png(image)
    encoded = io.BytesIO()
    if as_png:
        image.save(encoded, format="PNG")
    else:
        opaque = image if image.mode in ("RGB", "L") else image.convert("RGB" if image.mode == "RGBA" else "L")
        opaque.save(encoded, format="JPEG", quality=JPEG_QUALITY)
    return PreparedImage(encoded.getvalue(), "image/png" if as_png else "image/jpeg", image.width, image.height)


def _decoded(opened: Image.Image, max_side: int) -> Image.Image:
    """The first frame (of a GIF or WebP animation), upright and scaled down."""
    upright_size = _upright_size(opened)
    scale = max_side / max(upright_size)
    if scale < 1 and opened.format == "JPEG":
        # draft may pick any size down to the requested one, never below; the resize below finishes.
        wanted = (math.ceil(opened.width * scale), math.ceil(opened.height * scale))
        opened.draft(opened.mode if opened.mode in ("RGB", "L") else "RGB", wanted)
    # Scaled first, turned upright after: the box is square, so the order changes nothing but the
    # cost, and turning the full-size decode would copy all of it (bench --only media). Pillow's own
    # resampling for thumbnails (bicubic, reducing by whole factors first) is as fast as Pillow gets.
    opened.thumbnail((max_side, max_side))
    return ImageOps.exif_transpose(opened)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """Width and height once EXIF orientation is applied (orientations 5-8 swap them)."""
    orientation = image.getexif().get(0x0112, 1)
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else (image.width, image.height)


def _flattened(image: Image.Image) -> Image.Image:
    """RGB or L, with an alpha band (RGBA, LA) only when the image has transparency: the modes both
    encoders take. Palette, 16-bit and CMYK images are converted; a transparent colour becomes alpha."""
    transparent = "transparency" in image.info or "A" in image.mode
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
        return image.convert("LA") if transparent else (image if image.mode == "L" else image.convert("L"))
    if image.mode in ("RGB", "RGBA", "LA") and "transparency" not in image.info:
        return image
    return image.convert("RGBA" if transparent else "RGB")


def _wants_png(image: Image.Image) -> bool:
    """Any pixel not fully opaque, or few colours."""
    if image.mode in ("RGBA", "LA"):
        alpha = image.getchannel("A").getextrema()
        if isinstance(alpha, tuple) and alpha[0] != 255:
            return True
    return image.getcolors(FEW_COLOURS) is not None


# --- what an image costs in tokens -----------------------------------------------------------------

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
TILE_PX = 512


def image_tokens(width: int, height: int, *, detail: str = "high") -> int:
    """The prompt tokens an image of this size costs, by OpenAI's published rule for GPT-4o and
    GPT-4 Turbo with vision (platform.openai.com/docs/guides/images-vision, "Calculating costs"):

    ``detail: low`` is a flat 85. ``high`` (and ``auto`` for images this large) first fits the image
    into 2048 x 2048, then scales it so its shorter side is at most 768, and charges 170 for each
    512-pixel tile that covers it plus 85: a 1024 x 1024 image is 4 tiles, 765 tokens. Images are never
    enlarged here: a 512 x 512 one is one tile.

    Other servers count differently (llava-style models spend a fixed 576 or so, Qwen-VL about one
    token per 28 x 28 pixels), so this is an estimate for the window; the engine's calibration by the
    server's reported usage corrects it over time.
    """
    if detail == "low":
        return LOW_DETAIL_TOKENS
    if width <= 0 or height <= 0:
        return LOW_DETAIL_TOKENS
    fit = min(1.0, 2048 / max(width, height))
    shorter = min(1.0, 768 / (min(width, height) * fit))
    scale = fit * shorter
    tiles = math.ceil(width * scale / TILE_PX) * math.ceil(height * scale / TILE_PX)
    return LOW_DETAIL_TOKENS + TILE_TOKENS * tiles
