"""The ``media:`` section: how large, and how many, pictures and files the bridge takes.

A section of its own (not in ``core.settings``) because it is read by the media step alone.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MediaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_image_bytes: int = Field(10_000_000, gt=0, description="larger images are refused before they are downloaded")
    max_images_per_message: int = Field(
        4, ge=1, description="images taken from one message (an album counts as one); more are refused"
    )
    image_max_side_px: int = Field(
        2048, ge=64, description="images are scaled down so that their longer side is at most this, before sending"
    )
    max_file_bytes: int = Field(
        20_000_000, gt=0, description="largest audio file or document taken; larger ones are refused before download"
    )
    max_document_tokens: int = Field(
        8000, gt=0, description="a document's text is cut at this many tokens (keeping the start); both sides are told"
    )
    keep_images_turns: int = Field(
        4, ge=0, description="an image is sent again with this many later user turns of its session, then dropped"
    )
