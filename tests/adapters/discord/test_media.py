"""Discord attachments through the real discord.py client and the fake gateway: files, voice
messages and the replied message's files become attachments fetched from the (fake) CDN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from adapters.discord.adapter import DiscordAdapter
from bots.openai_client import OpenAIChatModel
from chatbridge.runtime import stop_adapters
from core.events import AttachmentKind, AttachmentTooLarge
from core.stores.memory import MemoryStore
from tests.adapters.discord.test_adapter import settings_for
from tests.fakes import discord_api as wire
from tests.fakes.discord_api import FakeDiscord
from tests.kit.engine import make_engine
from tests.kit.media import OGG_VOICE, photo
from tests.kit.recorder import Recorder

Start = Callable[[], Awaitable[tuple[DiscordAdapter, Recorder]]]


@pytest_asyncio.fixture
async def bridge(discord_fake: FakeDiscord, store: MemoryStore, model: OpenAIChatModel) -> AsyncIterator[Start]:
    running: list[tuple[asyncio.Task[None], DiscordAdapter, Recorder]] = []

    async def start() -> tuple[DiscordAdapter, Recorder]:
        recorder = Recorder(make_engine(store, model))
        adapter = DiscordAdapter(settings_for(discord_fake))
        task = asyncio.create_task(adapter.run(recorder))
        running.append((task, adapter, recorder))
        await discord_fake.wait_ready()
        return adapter, recorder

    yield start
    for task, adapter, recorder in running:
        await stop_adapters({task: adapter}, recorder.engine, 2)


async def test_an_image_in_a_dm_arrives_as_an_attachment_fetched_from_the_cdn(
    bridge: Start, discord_fake: FakeDiscord
) -> None:
    _, recorder = await bridge()
    data = photo()
    upload = discord_fake.upload(data, "cat.jpg", "image/jpeg", channel_id=wire.DM_CHANNEL_ID)
    await discord_fake.say("", channel_id=wire.DM_CHANNEL_ID, attachments=(upload,))
    [message] = await recorder.wait_for(1)
    [image] = message.attachments
    assert (image.kind, image.mime_type, image.name, image.size) == (
        AttachmentKind.IMAGE,
        "image/jpeg",
        "cat.jpg",
        len(data),
    )
    assert discord_fake.cdn_requests == []
    assert await image.fetch(10_000_000) == data
    assert len(discord_fake.cdn_requests) == 1


async def test_a_voice_message_is_audio_marked_as_voice(bridge: Start, discord_fake: FakeDiscord) -> None:
    _, recorder = await bridge()
    upload = discord_fake.upload(OGG_VOICE, "voice-message.ogg", "audio/ogg", channel_id=wire.DM_CHANNEL_ID, voice=True)
    await discord_fake.say("", channel_id=wire.DM_CHANNEL_ID, attachments=(upload,), voice_message=True)
    [message] = await recorder.wait_for(1)
    [voice] = message.attachments
    assert (voice.kind, voice.voice) == (AttachmentKind.AUDIO, True)


async def test_a_file_without_a_content_type_is_typed_by_its_name(bridge: Start, discord_fake: FakeDiscord) -> None:
    _, recorder = await bridge()
    upload = discord_fake.upload(b"a,b\n1,2\n", "data.csv", None, channel_id=wire.DM_CHANNEL_ID)
    await discord_fake.say("what is in it?", channel_id=wire.DM_CHANNEL_ID, attachments=(upload,))
    [message] = await recorder.wait_for(1)
    assert [(a.kind, a.mime_type) for a in message.attachments] == [(AttachmentKind.DOCUMENT, "text/csv")]


async def test_a_mention_replying_to_an_image_carries_the_image(bridge: Start, discord_fake: FakeDiscord) -> None:
    _, recorder = await bridge()
    upload = discord_fake.upload(photo(), "car.png", "image/png")
    posted = await discord_fake.say("look", author=wire.BOB, attachments=(upload,))
    await discord_fake.say(f"<@{wire.BOT_ID}> what colour is it?", mentions=(wire.BOT,), reply_to=posted)
    messages = await recorder.wait_for(2)
    question = messages[-1]
    assert question.mentioned and question.attachments == ()
    assert [a.name for a in question.replied_attachments] == ["car.png"]


async def test_a_file_over_the_limit_is_not_downloaded(bridge: Start, discord_fake: FakeDiscord) -> None:
    _, recorder = await bridge()
    upload = discord_fake.upload(photo(), "big.jpg", "image/jpeg", channel_id=wire.DM_CHANNEL_ID)
    await discord_fake.say("", channel_id=wire.DM_CHANNEL_ID, attachments=(upload,))
    [message] = await recorder.wait_for(1)
    with pytest.raises(AttachmentTooLarge):
        await message.attachments[0].fetch(100)
    assert discord_fake.cdn_requests == []
