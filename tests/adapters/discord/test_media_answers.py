"""Pictures, voice messages and files answered end to end through the real discord.py client: the
fake gateway and CDN, the real engine and store, the fake model server (which also transcribes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from adapters.discord.adapter import DiscordAdapter
from bots.audio import AudioClient
from bots.audio_settings import AudioSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.adapters.discord.test_adapter import settings_for
from tests.fakes import discord_api as wire
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.fake_model import SPEECH_BYTES, FakeModel
from tests.kit.engine import make_engine, model_settings
from tests.kit.media import OGG_VOICE, pdf, photo
from tests.kit.media_answers import decoded, part_kinds, stored_session, user_parts

Start = Callable[..., Awaitable[None]]
DM = wire.DM_CHANNEL_ID


@pytest_asyncio.fixture
async def bridge(
    discord_fake: FakeDiscord, store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> AsyncIterator[Start]:
    audio = AudioClient(AudioSettings(), model_settings(fake_model.base_url, max_retries=1))
    running: list[tuple[asyncio.Task[None], DiscordAdapter, Engine]] = []

    async def start(**sections: Any) -> None:
        engine = make_engine(store, model, vision=True, audio=audio, **sections)
        adapter = DiscordAdapter(settings_for(discord_fake))
        task = asyncio.create_task(adapter.run(engine))
        running.append((task, adapter, engine))
        await discord_fake.wait_ready()

    yield start
    for task, adapter, engine in running:
        await stop_adapters({task: adapter}, engine, 2)
    await audio.aclose()


async def shown(fake: FakeDiscord, channel: int, count: int, last: Callable[[str], bool] | None = None) -> list[str]:
    done = last or (lambda text: True)
    await fake.wait_until(lambda: len(fake.bot_messages(channel)) >= count and done(fake.bot_messages(channel)[-1]))
    return fake.bot_messages(channel)


async def test_a_photo_in_a_dm_reaches_the_model_scaled_and_a_later_question_still_sees_it(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    await bridge(media={"image_max_side_px": 100, "keep_images_turns": 2})
    upload = discord_fake.upload(photo(400, 300), "cat.jpg", "image/jpeg", channel_id=DM)
    await discord_fake.say("what is this?", channel_id=DM, attachments=(upload,))
    await shown(discord_fake, DM, 1, lambda text: text.startswith("echo: what is this?"))
    for count, question in enumerate(["is it young?", "what colour is it?"], 2):
        await discord_fake.say(question, channel_id=DM)
        await shown(discord_fake, DM, count, f"echo: {question}".__eq__)
    first = fake_model.requests[0]
    assert user_parts(first)[0] == {"type": "text", "text": "what is this?"}
    assert decoded(user_parts(first)[1]).size == (100, 75)
    assert part_kinds(fake_model.requests[2], 0) == ["text", "image_url"]
    assert len(discord_fake.cdn_requests) == 1


async def test_a_channel_photo_counts_only_when_the_bot_is_addressed(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    await bridge()
    posted = await discord_fake.say(
        "look", author=wire.BOB, attachments=(discord_fake.upload(photo(), "car.jpg", "image/jpeg"),)
    )
    await asyncio.sleep(0.3)
    assert fake_model.requests == [] and discord_fake.cdn_requests == [] and discord_fake.bot_messages() == []
    await discord_fake.say(f"<@{wire.BOT_ID}> what colour is it?", mentions=(wire.BOT,), reply_to=posted)
    await shown(discord_fake, wire.CHANNEL_ID, 1)
    assert part_kinds(fake_model.requests[0]) == ["text", "image_url"]


async def test_a_voice_message_is_answered_from_its_transcript(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel, store: MemoryStore
) -> None:
    await bridge()
    fake_model.transcripts.append("what time is it in Tokyo?")
    upload = discord_fake.upload(OGG_VOICE, "voice-message.ogg", "audio/ogg", channel_id=DM, voice=True)
    await discord_fake.say("", channel_id=DM, attachments=(upload,), voice_message=True)
    await shown(discord_fake, DM, 1, lambda text: text == "echo: what time is it in Tokyo?")
    state = await stored_session(store, 2)
    assert state.turns[0].content == "what time is it in Tokyo?"


async def test_a_pdfs_text_reaches_the_model(bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel) -> None:
    await bridge()
    upload = discord_fake.upload(pdf("Invoice total 420 EUR"), "invoice.pdf", "application/pdf", channel_id=DM)
    await discord_fake.say("how much?", channel_id=DM, attachments=(upload,))
    await shown(discord_fake, DM, 1)
    assert "invoice.pdf:\nInvoice total 420 EUR" in fake_model.user_texts()[0]


async def test_too_many_or_unreadable_pictures_are_answered_and_the_session_is_unchanged(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel, store: MemoryStore
) -> None:
    await bridge(media={"max_images_per_message": 2})
    await discord_fake.say("hello", channel_id=DM)
    before = await stored_session(store, 2)
    many = tuple(discord_fake.upload(photo(seed=n), f"p{n}.jpg", "image/jpeg", channel_id=DM) for n in range(3))
    await discord_fake.say("compare", channel_id=DM, attachments=many)
    await shown(discord_fake, DM, 2)
    broken = discord_fake.upload(b"\xff\xd8 broken", "b.jpg", "image/jpeg", channel_id=DM)
    await discord_fake.say("and this?", channel_id=DM, attachments=(broken,))
    messages = await shown(discord_fake, DM, 3)
    assert messages[1:] == [texts.TOO_MANY_IMAGES.format(count=3, limit=2), texts.IMAGE_UNREADABLE]
    assert len(fake_model.requests) == 1 and len(discord_fake.cdn_requests) == 1  # the broken one only
    assert await store.load_session(before.key, 100) == before


async def test_a_denied_users_photo_is_never_downloaded(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    await bridge(access={"deny_users": [f"discord:{wire.ALICE_ID}"], "on_denied": "reply"})
    upload = discord_fake.upload(photo(), "cat.jpg", "image/jpeg", channel_id=DM)
    await discord_fake.say("what is this?", channel_id=DM, attachments=(upload,))
    assert await shown(discord_fake, DM, 1) == [texts.DENIED]
    assert discord_fake.cdn_requests == [] and fake_model.requests == []


async def test_with_speak_always_the_answer_also_comes_as_an_audio_file(
    bridge: Start, discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    await bridge(speak="always")
    await discord_fake.say("say hello", channel_id=DM)
    await discord_fake.wait_until(lambda: bool(discord_fake.uploads))
    assert [(u.channel_id, u.filename, u.data) for u in discord_fake.uploads] == [(DM, "answer.ogg", SPEECH_BYTES)]
    assert discord_fake.bot_messages(DM)[0] == "echo: say hello"
