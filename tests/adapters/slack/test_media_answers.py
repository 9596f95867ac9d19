"""Shared files answered end to end through slack-bolt's Socket Mode: the fake Slack (files behind
url_private and a redirect), the real engine and store, the fake model server (which transcribes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from adapters.slack.adapter import SlackAdapter
from bots.audio import AudioClient
from bots.audio_settings import AudioSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.adapters.slack.test_adapter import BOT_USER, _started, callback, mention, message, next_ts, slack_settings
from tests.fakes.fake_model import SPEECH_BYTES, FakeModel
from tests.fakes.slack_api import FakeSlack
from tests.kit.engine import make_engine, model_settings
from tests.kit.media import OGG_VOICE, pdf, photo
from tests.kit.media_answers import decoded, part_kinds, stored_session, user_parts


class Running:
    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack

    async def deliver(self, event: dict[str, Any]) -> None:
        envelope = await self.slack.send_envelope(callback(event))
        await asyncio.wait_for(envelope.acked.wait(), 3)

    async def share(self, text: str, *files: dict[str, object], channel: str = "D1", channel_type: str = "im") -> None:
        event = message(text, next_ts(), channel=channel, channel_type=channel_type, subtype="file_share")
        await self.deliver(event | {"files": list(files)})

    async def shown(self, count: int, last: Callable[[str], bool] | None = None, channel: str = "D1") -> list[str]:
        done = last or (lambda text: True)

        def posted() -> list[str]:
            return [m.text for m in self.slack.messages if m.channel == channel]

        async with asyncio.timeout(3):
            while not (len(posted()) >= count and done(posted()[count - 1])):
                await asyncio.sleep(0.01)
        return posted()


@pytest_asyncio.fixture
async def start(store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel) -> AsyncIterator[Any]:
    slack = FakeSlack()
    await slack.start()
    audio = AudioClient(AudioSettings(), model_settings(fake_model.base_url, max_retries=1))
    running: list[tuple[asyncio.Task[None], SlackAdapter, Engine]] = []

    async def started(**sections: Any) -> Running:
        engine = make_engine(store, model, vision=True, audio=audio, **sections)
        adapter = SlackAdapter(slack_settings(slack), HttpServer("127.0.0.1", 0))
        task = asyncio.create_task(adapter.run(engine))
        running.append((task, adapter, engine))
        await _started(adapter, task)
        await slack.wait_for_socket()
        return Running(slack)

    yield started
    for task, adapter, engine in running:
        await stop_adapters({task: adapter}, engine, 2)
    await audio.aclose()
    await slack.stop()


async def test_a_dm_image_reaches_the_model_scaled_and_is_seen_again_two_turns_later(
    start: Any, fake_model: FakeModel
) -> None:
    bridge: Running = await start(media={"image_max_side_px": 120, "keep_images_turns": 2})
    await bridge.share("what is this?", bridge.slack.upload(photo(400, 300), "shot.jpg", "image/jpeg"))
    await bridge.shown(1, lambda text: text == "echo: what is this?")
    for count, question in enumerate(["where?", "what colour?"], 2):
        await bridge.deliver(message(question, next_ts(), channel="D1", channel_type="im"))
        await bridge.shown(count, f"echo: {question}".__eq__)
    first = fake_model.requests[0]
    assert user_parts(first)[0] == {"type": "text", "text": "what is this?"}
    assert decoded(user_parts(first)[1]).size == (120, 90)
    assert part_kinds(fake_model.requests[2], 0) == ["text", "image_url"]


async def test_a_channel_image_counts_only_when_the_bot_is_mentioned(start: Any, fake_model: FakeModel) -> None:
    bridge: Running = await start()
    await bridge.share(
        "look at this", bridge.slack.upload(photo(), "a.jpg", "image/jpeg"), channel="C1", channel_type="channel"
    )
    await asyncio.sleep(0.3)
    assert fake_model.requests == [] and bridge.slack.file_requests == []
    asked = mention(f"<@{BOT_USER}> what is this?", next_ts()) | {
        "files": [bridge.slack.upload(photo(seed=2), "b.jpg", "image/jpeg")]
    }
    await bridge.deliver(asked)
    await bridge.shown(1, lambda text: text.startswith("echo:"), channel="C1")  # not the placeholder before it
    assert part_kinds(fake_model.requests[0]) == ["text", "image_url"]


async def test_an_audio_clip_is_answered_from_its_transcript(
    start: Any, fake_model: FakeModel, store: MemoryStore
) -> None:
    bridge: Running = await start()
    fake_model.transcripts.append("remind me what we decided")
    clip = bridge.slack.upload(OGG_VOICE, "audio_message.webm", "audio/webm", subtype="slack_audio")
    await bridge.share("", clip)
    await bridge.shown(1, lambda text: text == "echo: remind me what we decided")
    assert (await stored_session(store, 2)).turns[0].content == "remind me what we decided"


async def test_a_pdfs_text_reaches_the_model(start: Any, fake_model: FakeModel) -> None:
    bridge: Running = await start()
    await bridge.share("key points?", bridge.slack.upload(pdf("Ship on Friday"), "plan.pdf", "application/pdf"))
    await bridge.shown(1, lambda text: text.startswith("echo:"))
    assert "plan.pdf:\nShip on Friday" in fake_model.user_texts()[0]


async def test_an_unsupported_file_is_answered_and_the_session_is_unchanged(
    start: Any, fake_model: FakeModel, store: MemoryStore
) -> None:
    bridge: Running = await start()
    await bridge.deliver(message("hello", next_ts(), channel="D1", channel_type="im"))
    before = await stored_session(store, 2)
    await bridge.share("read this", bridge.slack.upload(b"PK\x03\x04", "deck.pptx", "application/vnd.ms-powerpoint"))
    messages = await bridge.shown(2)
    assert messages[1] == texts.UNSUPPORTED_FILE.format(name="deck.pptx")
    assert len(fake_model.requests) == 1 and bridge.slack.file_requests == []
    assert await store.load_session(before.key, 100) == before


async def test_a_denied_users_image_is_never_downloaded(start: Any, fake_model: FakeModel) -> None:
    bridge: Running = await start(access={"allow_users": ["slack:U024BE7LH"], "on_denied": "reply"})
    await bridge.share("what is this?", bridge.slack.upload(photo(), "shot.jpg", "image/jpeg"))
    assert await bridge.shown(1) == [texts.DENIED]
    assert bridge.slack.file_requests == [] and fake_model.requests == []


async def test_with_speak_a_voice_clip_is_also_answered_with_an_audio_file_in_its_thread(
    start: Any, fake_model: FakeModel
) -> None:
    bridge: Running = await start(speak="when_spoken_to")
    fake_model.transcripts.append("read me the news")
    clip = bridge.slack.upload(OGG_VOICE, "audio_message.webm", "audio/webm", subtype="slack_audio")
    await bridge.share("", clip)
    await bridge.shown(1, "echo: read me the news".__eq__)
    async with asyncio.timeout(3):
        while not bridge.slack.shared_files:
            await asyncio.sleep(0.01)
    [shared] = bridge.slack.shared_files
    assert (shared.channel, shared.filename, shared.data) == ("D1", "answer.ogg", SPEECH_BYTES)
    assert shared.thread_ts == bridge.slack.messages[0].thread_ts
