"""Real media files made on the spot for tests: photos, screenshots, PDFs, audio."""

from __future__ import annotations

import io
import random

from PIL import Image


def photo(width: int = 400, height: int = 300, *, orientation: int | None = None, seed: int = 1) -> bytes:
    """A JPEG with many colours, like a photo: a red left half over noise, so a test can tell which
    way up it is; ``orientation`` writes that EXIF tag (6: the camera was turned right)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make, so a test can see that metadata is not passed on
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def screenshot(width: int = 300, height: int = 200) -> bytes:
    """A PNG of few flat colours, like a screenshot of text."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste((0, 0, 0), (10, 10, width - 10, 20))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def transparent_png(width: int = 64, height: int = 64) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 255, 0))
    image.paste((0, 128, 255, 255), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pdf(*pages: str) -> bytes:
    """A PDF with one page per text, written by hand (pypdf writes no text): a text layer in Helvetica."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        page_number = len(objects) + 1
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1") if text else b""
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_number + 1} 0 R "
            "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream")
        kids.append(f"{page_number} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


OGG_VOICE = b"OggS\x00\x02" + bytes(26) + b"OpusHead\x01\x01" + bytes(200)
"""The start of an Ogg/Opus file, as a voice note begins; enough for the fake servers."""
