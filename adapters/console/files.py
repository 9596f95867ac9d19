"""``/attach PATH [question]``: a local file sent like a platform's picture, voice note or document.

The file is described from its name and size only; the engine reads it when the turn is answered,
within the ``media`` limits, as it downloads a platform's files. Quotes around PATH allow spaces.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

from core.events import Attachment, AttachmentFetchFailed, AttachmentTooLarge, Fetch, attachment_kind

COMMAND = "/attach"


def attach_request(text: str) -> tuple[str, str] | None:
    """The path and the question of an ``/attach`` line; None for any other line. The path is
    empty when the line names none."""
    head, _, rest = text.partition(" ")
    if head != COMMAND:
        return None
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        if end > 0:
            return rest[1:end], rest[end + 1 :].strip()
    path, _, question = rest.partition(" ")
    return path, question.strip()


def local_attachment(path: str) -> Attachment:
    """The file at ``path`` as an attachment. Raises ``OSError`` when it is not a readable file."""
    resolved = Path(path).expanduser().resolve()
    size = resolved.stat().st_size
    if not resolved.is_file():
        raise IsADirectoryError(path)
    mime_type = mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
    return Attachment(
        kind=attachment_kind(mime_type),
        mime_type=mime_type,
        name=resolved.name,
        size=size,
        source=str(resolved),
        fetch=fetch(str(resolved)),
    )


def fetch(source: str) -> Fetch:
    """Reads the file at ``source`` (an absolute path), at most ``max_bytes`` of it."""

    async def read(max_bytes: int) -> bytes:
        try:
            data = await asyncio.to_thread(_read_start, Path(source), max_bytes + 1)
        except OSError as error:
            raise AttachmentFetchFailed(f"cannot read the file: {error.strerror or type(error).__name__}") from None
        if len(data) > max_bytes:
            raise AttachmentTooLarge(max_bytes)
        return data

    return read


def _read_start(path: Path, count: int) -> bytes:
    with path.open("rb") as file:
        return file.read(count)
