"""The engine's media step with attachments built here (the adapters' own are tested through each
platform library): the count limit, a queued picture answered after a restart through the adapter's
refetch, and a turn of several messages of which one cannot be used."""

from __future__ import annotations

import asyncio
import time

from bots.openai_client import OpenAIChatModel
from core import texts
from core.events import Attachment, AttachmentKind, Fetch
from core.store import QueuedMessage, Verdict
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel, Reply
from tests.kit.channel import RecordingChannel
from tests.kit.engine import make_engine, private
from tests.kit.media import photo
from tests.kit.stores import admission


class Files:
    """Files served by source, each download logged."""

    def __init__(self, **files: bytes) -> None:
        self.files = files
        self.downloads: list[str] = []

    def fetch(self, source: str) -> Fetch:
        async def fetch(max_bytes: int) -> bytes:
            self.downloads.append(source)
            return self.files[source]

        return fetch

    def image(self, source: str) -> Attachment:
        data = self.files[source]
        return Attachment(AttachmentKind.IMAGE, "image/jpeg", f"{source}.jpg", len(data), source, self.fetch(source))


async def test_more_pictures_than_allowed_are_refused_before_any_download(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    files = Files(a=photo(), b=photo(seed=2), c=photo(seed=3))
    engine = make_engine(store, model, vision=True, media={"max_images_per_message": 2})
    channel = RecordingChannel()
    attachments = tuple(files.image(name) for name in "abc")
    await engine.handle(private("compare", attachments=attachments), channel)
    assert channel.messages == [texts.TOO_MANY_IMAGES.format(count=3, limit=2)]
    assert files.downloads == [] and fake_model.requests == []
    assert await store.list_sessions() == []


async def test_a_picture_queued_before_a_restart_is_fetched_again_by_its_source(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    files = Files(f1=photo())
    record = files.image("f1").record()
    item = QueuedMessage(
        "telegram:1/7", "telegram", "telegram:1", "telegram:1", "what is it?", time.time(), "r", (record,)
    )
    assert await store.admit(admission("telegram:1", item)) is Verdict.QUEUED
    engine = make_engine(store, model, vision=True)
    channel = RecordingChannel()
    engine.attach("telegram", lambda route: channel, files.fetch)
    try:
        async with asyncio.timeout(3):
            while not fake_model.requests or not channel.messages:
                await asyncio.sleep(0.01)
    finally:
        engine.close()
    assert files.downloads == ["f1"]
    [images] = fake_model.user_images()
    assert len(images) == 1 and images[0].startswith("data:image/jpeg;base64,")
    assert fake_model.user_texts() == ["what is it?"]


async def test_a_message_whose_file_cannot_be_used_is_left_out_of_a_turn_it_shares(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    files = Files(bad=b"not an image")
    engine = make_engine(store, model, vision=True)
    fake_model.script(Reply(delay_s=0.3))  # the first turn is slow, so the next two messages queue behind it
    channel = RecordingChannel()
    first = asyncio.create_task(engine.handle(private("first"), channel))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(engine.handle(private("look", attachments=(files.image("bad"),)), channel))
    third = asyncio.create_task(engine.handle(private("and this"), channel))
    await asyncio.gather(first, second, third)
    assert texts.IMAGE_UNREADABLE in channel.messages
    assert "look" not in "".join(fake_model.user_texts())
    assert "and this" in fake_model.user_texts()[-1]
    [info] = await store.list_sessions()
    state = await store.load_session(info.key, 100)
    assert state is not None and all("look" not in turn.content for turn in state.turns)
