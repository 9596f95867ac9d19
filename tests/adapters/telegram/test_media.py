"""Telegram photos, voice notes, audio and documents: what the real python-telegram-bot delivers
from the fake Bot API becomes attachments, and their fetches download through getFile and the file
endpoint, within the byte limit, without the token in any error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.media import file_base_url
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core.events import AttachmentFetchFailed, AttachmentKind, AttachmentTooLarge
from core.stores.memory import MemoryStore
from tests.adapters.telegram.test_adapter import FAST, GROUP, settings
from tests.fakes.telegram_api import TOKEN, FakeTelegram, entity
from tests.kit.engine import make_engine
from tests.kit.media import OGG_VOICE, pdf, photo
from tests.kit.recorder import Recorder

Start = Callable[..., Awaitable[tuple[TelegramAdapter, Recorder]]]


@pytest_asyncio.fixture
async def bridge(telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel) -> AsyncIterator[Start]:
    running: list[tuple[asyncio.Task[None], TelegramAdapter, Recorder]] = []

    async def start(**sections: Any) -> tuple[TelegramAdapter, Recorder]:
        recorder = Recorder(make_engine(store, model, **sections))
        adapter = TelegramAdapter(settings(telegram), HttpServer("127.0.0.1", 0), limits=FAST, poll_timeout_s=1.0)
        task = asyncio.create_task(adapter.run(recorder))
        running.append((task, adapter, recorder))
        await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))
        return adapter, recorder

    yield start
    for task, adapter, recorder in running:
        await stop_adapters({task: adapter}, recorder.engine, 2)


def sizes(telegram: FakeTelegram, data: bytes) -> list[dict[str, Any]]:
    """A photo as Telegram sends it: a thumbnail and the full size, each a file of its own."""
    thumb = telegram.upload(photo(90, 60), "photos/thumb.jpg")
    full = telegram.upload(data, "photos/file_1.jpg")
    return [{**thumb, "width": 90, "height": 60}, {**full, "width": 400, "height": 300}]


async def test_a_photo_with_a_caption_arrives_as_an_image_with_its_text(bridge: Start, telegram: FakeTelegram) -> None:
    _, recorder = await bridge()
    data = photo(400, 300)
    telegram.user_message(None, caption="what is this?", media={"photo": sizes(telegram, data)})
    [message] = await recorder.wait_for(1)
    assert message.text == "what is this?"
    [image] = message.attachments
    assert (image.kind, image.mime_type, image.size) == (AttachmentKind.IMAGE, "image/jpeg", len(data))
    assert telegram.downloads == []  # nothing is downloaded until the engine asks
    assert await image.fetch(10_000_000) == data
    assert telegram.downloads == ["photos/file_1.jpg"]  # the largest size only
    assert telegram.calls_of("getFile")[-1]["file_id"] == image.source


async def test_a_photo_without_a_caption_in_a_private_chat_reaches_the_engine(
    bridge: Start, telegram: FakeTelegram
) -> None:
    _, recorder = await bridge()
    telegram.user_message(None, media={"photo": sizes(telegram, photo())})
    [message] = await recorder.wait_for(1)
    assert message.text == "" and len(message.attachments) == 1


async def test_voice_audio_and_documents_arrive_with_their_types(bridge: Start, telegram: FakeTelegram) -> None:
    _, recorder = await bridge()
    voice = {**telegram.upload(OGG_VOICE, "voice/file_2.oga"), "duration": 2, "mime_type": "audio/ogg"}
    song = {**telegram.upload(b"ID3" + bytes(100), "music/file_3.mp3"), "duration": 9, "mime_type": "audio/mpeg"}
    report = {**telegram.upload(pdf("Quarterly"), "documents/file_4.pdf"), "mime_type": "application/pdf"}
    telegram.user_message(None, media={"voice": voice})
    telegram.user_message(None, media={"audio": {**song, "file_name": "song.mp3"}})
    telegram.user_message(None, caption="summarise", media={"document": {**report, "file_name": "report.pdf"}})
    messages = await recorder.wait_for(3)
    found = [(a.kind, a.mime_type, a.name, a.voice) for m in messages for a in m.attachments]
    assert sorted(found) == sorted(
        [
            (AttachmentKind.AUDIO, "audio/ogg", "voice.ogg", True),
            (AttachmentKind.AUDIO, "audio/mpeg", "song.mp3", False),
            (AttachmentKind.DOCUMENT, "application/pdf", "report.pdf", False),
        ]
    )
    by_name = {a.name: a for m in messages for a in m.attachments}
    assert await by_name["voice.ogg"].fetch(1_000_000) == OGG_VOICE


async def test_a_group_reply_under_a_photo_carries_the_photo(bridge: Start, telegram: FakeTelegram) -> None:
    _, recorder = await bridge()
    posted = telegram.update(
        None, user=5, chat=GROUP, chat_type="supergroup", media={"photo": sizes(telegram, photo())}
    )
    question = "@ChatBridgeBot what is this?"
    telegram.user_message(
        question,
        user=6,
        chat=GROUP,
        chat_type="supergroup",
        entities=[entity(question, "@ChatBridgeBot")],
        reply_to=posted["message"],
    )
    [message] = await recorder.wait_for(1)
    assert message.mentioned and message.attachments == ()
    [image] = message.replied_attachments
    assert image.kind is AttachmentKind.IMAGE


async def test_the_parts_of_an_album_share_their_group_and_only_one_has_the_caption(
    bridge: Start, telegram: FakeTelegram
) -> None:
    _, recorder = await bridge()
    caption = "@ChatBridgeBot compare these"
    group = {"chat": GROUP, "chat_type": "supergroup", "media_group_id": "album-1"}
    telegram.user_message(
        None,
        caption=caption,
        caption_entities=[entity(caption, "@ChatBridgeBot")],
        media={"photo": sizes(telegram, photo())},
        **group,
    )
    telegram.user_message(None, media={"photo": sizes(telegram, photo(seed=2))}, **group)
    messages = await recorder.wait_for(2)
    assert {m.media_group for m in messages} == {"album-1"}
    assert [(m.mentioned, m.text) for m in messages] == [(True, "@ChatBridgeBot compare these"), (False, "")]


async def test_a_sticker_still_gets_the_note_and_reaches_no_engine(bridge: Start, telegram: FakeTelegram) -> None:
    _, recorder = await bridge()
    sticker = {**telegram.upload(b"RIFF", "stickers/s.webp"), "width": 512, "height": 512, "type": "regular"}
    telegram.user_message(None, media={"sticker": {**sticker, "is_animated": False, "is_video": False}})
    await telegram.wait_for(lambda: bool(telegram.sent))
    assert recorder.messages == []


async def test_a_file_larger_than_the_limit_is_not_downloaded(bridge: Start, telegram: FakeTelegram) -> None:
    _, recorder = await bridge()
    telegram.user_message(None, media={"photo": sizes(telegram, photo())})
    [message] = await recorder.wait_for(1)
    with pytest.raises(AttachmentTooLarge):
        await message.attachments[0].fetch(100)
    assert telegram.downloads == [] and telegram.calls_of("getFile") == []


async def test_a_size_telegram_did_not_declare_is_counted_while_downloading(
    bridge: Start, telegram: FakeTelegram
) -> None:
    _, recorder = await bridge()
    document = {**telegram.upload(b"x" * 5000, "documents/big.txt", declared_size=None), "file_name": "big.txt"}
    telegram.user_message(None, media={"document": document})
    [message] = await recorder.wait_for(1)
    with pytest.raises(AttachmentTooLarge):
        await message.attachments[0].fetch(1000)


async def test_a_failed_download_says_so_without_the_token(
    bridge: Start, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter, recorder = await bridge()
    telegram.user_message(None, media={"photo": sizes(telegram, photo())})
    [message] = await recorder.wait_for(1)
    telegram.fail("file", 500, "Internal Server Error")
    with pytest.raises(AttachmentFetchFailed) as failed:
        await message.attachments[0].fetch(10_000_000)
    assert "HTTP 500" in str(failed.value)
    assert TOKEN not in str(failed.value) and TOKEN not in caplog.text
    # After a restart the queued message's attachment is fetched again from its source alone.
    assert await adapter.files.fetch(message.attachments[0].source)(10_000_000) == photo()


@pytest.mark.parametrize(
    ("base_url", "file_url"),
    [
        ("", "https://api.telegram.org/file/bot"),
        ("http://botapi.local:8081/bot", "http://botapi.local:8081/file/bot"),
        ("https://proxy.example/telegram/bot/", "https://proxy.example/telegram/file/bot"),
    ],
)
def test_the_file_endpoint_follows_the_bot_api_base_url(base_url: str, file_url: str) -> None:
    assert file_base_url(base_url) == file_url
