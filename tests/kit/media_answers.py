"""What the model was sent and the store keeps, for the tests of media answered end to end."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from PIL import Image

from core.store import SessionState, Store


def user_parts(request: dict[str, Any], index: int = -1) -> list[dict[str, Any]]:
    """The content parts of a request's user message (the newest by default)."""
    users = [m for m in request["messages"] if m["role"] == "user"]
    content = users[index]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def part_kinds(request: dict[str, Any], index: int = -1) -> list[str]:
    return [part["type"] for part in user_parts(request, index)]


def decoded(part: dict[str, Any]) -> Image.Image:
    """The picture of an ``image_url`` part, which must be a JPEG data URL."""
    url = part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))


async def stored_session(store: Store, turns: int) -> SessionState:
    """The store's one session, once it holds ``turns`` turns."""
    async with asyncio.timeout(3):
        while True:
            sessions = await store.list_sessions()
            state = await store.load_session(sessions[0].key, 100) if sessions else None
            if state is not None and len(state.turns) >= turns:
                return state
            await asyncio.sleep(0.01)
