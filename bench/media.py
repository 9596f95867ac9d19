"""A 4000 x 3000 JPEG from arrival to the bytes of the model request, against Pillow doing only its
own decode, resize and encode of the same file (``--only media``).

Each side runs in a fresh interpreter, so its peak memory (the RSS high-water mark over what the
process held with the file's bytes already read) is its own. The bridge's side is the media step
as a turn runs it (the fetch, ``prepare_image`` in a thread, the stored picture, the window with
its data URL) and the JSON body the chat client sends; Pillow's is ``Image.open``, ``thumbnail``
to the same size and ``save`` as JPEG at the same quality.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.process import rss_bytes
from bots.images import JPEG_QUALITY
from bots.model import ModelCard
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from core.events import Attachment, AttachmentKind
from core.media import Media
from core.media_settings import MediaSettings
from core.store import QueuedMessage, Turn
from core.tokens import TokenCounter
from core.window import Budget, build_window
from tests.kit.engine import model_settings

WIDTH, HEIGHT = 4000, 3000
RUNS = 3


def camera_jpeg(path: Path) -> int:
    """A photo-like 4000 x 3000 JPEG (gradients under grain, so it compresses like a photo)."""
    red = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    green = Image.effect_noise((WIDTH, HEIGHT), 40)
    blue = Image.radial_gradient("L").resize((WIDTH, HEIGHT))
    Image.merge("RGB", (red, green, blue)).save(path, format="JPEG", quality=92)
    return path.stat().st_size


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pillow_only(data: bytes, max_side: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((max_side, max_side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


async def bridge(data: bytes, max_side: int) -> bytes:
    """Arrival to request bytes: the media step of a turn, the window, the JSON body."""
    settings = MediaSettings(image_max_side_px=max_side)
    tokens = TokenCounter.estimate()
    client = OpenAIChatModel(model_settings("http://127.0.0.1:9"))  # never called
    card = ModelCard("default", "default", vision=True)
    media = Media(settings, tokens, ModelRegistry.single(client, card))

    async def fetch(max_bytes: int) -> bytes:
        return data

    photo = Attachment(AttachmentKind.IMAGE, "image/jpeg", "photo.jpg", len(data), "f1", fetch)
    item = QueuedMessage("c/1", "telegram", "c", "u", "what is this?", time.time(), "", (photo.record(),))
    media.remember(item.message_key, (photo,))
    turn = await media.read([item], card)
    user_turn = Turn("user", turn.text, tokens.count(turn.text), time.time(), turn.images)
    window = build_window([], [], user_turn, Budget(100_000, 40, 4, tokens.scaled), keep_images_turns=4)
    assert window is not None
    body = json.dumps({"model": "m", "messages": window.messages, "stream": True}).encode()
    await client.aclose()
    return body


def child(side: str, path: str, max_side: int) -> None:
    """One side, measured: median seconds of ``RUNS`` and the peak RSS above the start."""
    data = Path(path).read_bytes()
    before = rss_bytes()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        if side == "bridge":
            out = asyncio.run(bridge(data, max_side))
        else:
            out = pillow_only(data, max_side)
        times.append(time.perf_counter() - started)
        del out
    print(json.dumps({"s": statistics.median(times), "peak": _peak_rss_bytes() - before}))


def _measure(side: str, path: Path, max_side: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.media", side, str(path), str(max_side)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def media_costs(max_side: int = MediaSettings().image_max_side_px) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        size = camera_jpeg(path)
        pillow = _measure("pillow", path, max_side)
        ours = _measure("bridge", path, max_side)
    return {
        "file_bytes": size,
        "max_side": max_side,
        "pillow_s": pillow["s"],
        "bridge_s": ours["s"],
        "pillow_peak": pillow["peak"],
        "bridge_peak": ours["peak"],
    }


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
