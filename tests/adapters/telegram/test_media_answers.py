"""Pictures, voice notes and files answered end to end: the real python-telegram-bot against the fake
Bot API, the real engine and store, the fake model server (which also transcribes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from adapters.telegram.adapter import TelegramAdapter
from bots.audio import AudioClient
from bots.audio_settings import AudioSettings
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.stores.memory import MemoryStore
from tests.adapters.telegram.test_adapter import FAST, GROUP, settings
from tests.fakes.fake_model import SPEECH_BYTES, FakeModel, Status
from tests.fakes.telegram_api import FakeTelegram, entity
from tests.kit.engine import make_engine, model_settings
from tests.kit.media import OGG_VOICE, pdf, photo
from tests.kit.media_answers import decoded, part_kinds, stored_session, user_parts
from tests.kit.recorder import Recorder

Start = Callable[..., Awaitable[Recorder]]
MENTION = "@ChatBridgeBot"


@pytest_asyncio.fixture
async def audio(fake_model: FakeModel) -> AsyncIterator[AudioClient]:
    client = AudioClient(AudioSettings(), model_settings(fake_model.base_url, max_retries=1))
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def bridge(
    telegram: FakeTelegram, store: MemoryStore, model: OpenAIChatModel, audio: AudioClient
) -> AsyncIterator[Start]:
    running: list[tuple[asyncio.Task[None], TelegramAdapter, Recorder]] = []

    async def start(*, vision: bool = True, **sections: Any) -> Recorder:
        recorder = Recorder(make_engine(store, model, vision=vision, audio=audio, **sections))
        adapter = TelegramAdapter(settings(telegram), HttpServer("127.0.0.1", 0), limits=FAST, poll_timeout_s=1.0)
        task = asyncio.create_task(adapter.run(recorder))
        running.append((task, adapter, recorder))
        await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))
        return recorder

    yield start
    for task, adapter, recorder in running:
        await stop_adapters({task: adapter}, recorder.engine, 2)


def sizes(telegram: FakeTelegram, data: bytes, width: int = 400, height: int = 300) -> list[dict[str, Any]]:
    """A photo as Telegram sends it: a thumbnail and the full size, each a file of its own."""
    thumb = telegram.upload(photo(90, 60), "photos/thumb.jpg")
    full = telegram.upload(data, "photos/file_1.jpg")
    return [{**thumb, "width": 90, "height": 60}, {**full, "width": width, "height": height}]


async def answered(
    telegram: FakeTelegram, chat: int, count: int, last: Callable[[str], bool] | None = None
) -> list[str]:
    """The chat's messages once there are ``count``, the last of them satisfying ``last`` (a streamed
    answer is edited until it is complete)."""
    done = last or (lambda text: True)
    await telegram.wait_for(lambda: len(telegram.texts(chat)) >= count and done(telegram.texts(chat)[count - 1]))
    return telegram.texts(chat)


async def test_a_captioned_photo_reaches_the_model_as_an_image_next_to_its_text_scaled_down(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(media={"image_max_side_px": 200})
    telegram.user_message(None, caption="what is this?", media={"photo": sizes(telegram, photo(400, 300))})
    await answered(telegram, 1, 1)
    [request] = fake_model.requests
    text, image = user_parts(request)
    assert text == {"type": "text", "text": "what is this?"}
    picture = decoded(image)
    assert picture.size == (200, 150)
    red, _, _ = picture.convert("RGB").getpixel((20, 75))  # type: ignore[misc]
    assert red > 200  # the red half is still on the left
    assert telegram.downloads == ["photos/file_1.jpg"]


async def test_a_follow_up_two_turns_later_still_carries_the_photo(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, store: MemoryStore
) -> None:
    await bridge(media={"keep_images_turns": 2})
    telegram.user_message(None, caption="what car is this?", media={"photo": sizes(telegram, photo())})
    await answered(telegram, 1, 1)
    for count, question in enumerate(["is it old?", "and what colour is the car?", "anything else?"], 2):
        telegram.user_message(question)
        await answered(telegram, 1, count)
    kinds = [part_kinds(request, 0) for request in fake_model.requests]
    assert kinds == [["text", "image_url"], ["text", "image_url"], ["text", "image_url"], ["text"]]
    assert telegram.downloads == ["photos/file_1.jpg"], "the stored picture was not used again"
    state = await stored_session(store, 8)
    assert len(state.turns[0].images) == 1, "the picture is not stored with its turn"


async def test_a_group_photo_is_answered_only_when_addressed(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    group: dict[str, Any] = {"chat": GROUP, "chat_type": "supergroup"}
    posted = telegram.update(None, user=5, media={"photo": sizes(telegram, photo())}, **group)
    telegram.queue_update(posted)
    telegram.user_message("nice one", user=6, **group)
    await asyncio.sleep(0.3)
    assert telegram.texts(GROUP) == [] and fake_model.requests == [] and telegram.downloads == []
    question = f"{MENTION} what is this?"
    telegram.user_message(question, user=6, entities=[entity(question, MENTION)], reply_to=posted["message"], **group)
    await answered(telegram, GROUP, 1)
    [request] = fake_model.requests
    assert part_kinds(request) == ["text", "image_url"]
    assert "what is this?" in user_parts(request)[0]["text"]


async def test_a_voice_note_is_answered_from_its_transcript_which_is_stored(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel, store: MemoryStore
) -> None:
    await bridge()
    fake_model.transcripts.append("how tall is the Eiffel tower?")
    voice = {**telegram.upload(OGG_VOICE, "voice/file_2.oga"), "duration": 2, "mime_type": "audio/ogg"}
    telegram.user_message(None, media={"voice": voice})
    await answered(telegram, 1, 1, lambda text: text == "echo: how tall is the Eiffel tower?")
    assert fake_model.user_texts() == ["how tall is the Eiffel tower?"]
    [sent] = fake_model.transcriptions
    assert sent.data == OGG_VOICE
    state = await stored_session(store, 2)
    assert state.turns[0].content == "how tall is the Eiffel tower?"


async def test_a_pdfs_text_reaches_the_model_under_its_name(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    report = {**telegram.upload(pdf("Revenue rose by 12 percent"), "documents/r.pdf"), "mime_type": "application/pdf"}
    telegram.user_message(None, caption="summarise", media={"document": {**report, "file_name": "report.pdf"}})
    await answered(telegram, 1, 1)
    [asked] = fake_model.user_texts()
    assert asked.startswith("summarise\nreport.pdf:\n") and "Revenue rose by 12 percent" in asked


async def test_a_long_document_is_cut_and_both_sides_are_told(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(media={"max_document_tokens": 50})
    notes = {**telegram.upload(("word " * 2000).encode(), "documents/n.txt"), "mime_type": "text/plain"}
    telegram.user_message(None, media={"document": {**notes, "file_name": "notes.txt"}})
    cut_note = texts.DOCUMENT_CUT.format(name="notes.txt", limit=50)
    await answered(telegram, 1, 1, lambda text: text.endswith(cut_note))
    [asked] = fake_model.user_texts()
    assert len(asked) < 1000 and asked.endswith(texts.DOCUMENT_CUT_FOR_MODEL.format(name="notes.txt", limit=50))


def _corrupt(telegram: FakeTelegram) -> dict[str, Any]:
    return {"photo": sizes(telegram, b"\xff\xd8\xff\xe0 not really a jpeg")}


def _large(telegram: FakeTelegram) -> dict[str, Any]:
    return {"photo": sizes(telegram, photo())}  # over the 1000 bytes allowed below


def _docx(telegram: FakeTelegram) -> dict[str, Any]:
    upload = telegram.upload(b"PK\x03\x04" + bytes(50), "documents/d.docx")
    return {"document": {**upload, "file_name": "plan.docx", "mime_type": "application/msword"}}


def _voice(telegram: FakeTelegram) -> dict[str, Any]:
    return {"voice": {**telegram.upload(OGG_VOICE, "voice/v.oga"), "duration": 1, "mime_type": "audio/ogg"}}


def _scan(telegram: FakeTelegram) -> dict[str, Any]:
    upload = telegram.upload(pdf(""), "documents/scan.pdf")
    return {"document": {**upload, "file_name": "scan.pdf", "mime_type": "application/pdf"}}


@pytest.mark.parametrize(
    ("media", "setup", "answer"),
    [
        (_large, {"media": {"max_image_bytes": 1000}}, texts.too_large(image=True, size=len(photo()), limit=1000)),
        (_corrupt, {}, texts.IMAGE_UNREADABLE),
        (_docx, {}, texts.UNSUPPORTED_FILE.format(name="plan.docx")),
        (_scan, {}, texts.PDF_NO_TEXT),
        (_voice, {"transcription": Status(500)}, texts.TRANSCRIPTION_FAILED),
        (_voice, {"no_audio": True}, texts.AUDIO_UNSUPPORTED),
        (_large, {"vision": False}, texts.cannot_see("default", [])),
        (_large, {"download": Status(500)}, texts.DOWNLOAD_FAILED),
    ],
    ids=["too-large", "corrupt-image", "unsupported", "pdf-scan", "transcription", "no-audio", "no-vision", "download"],
)
async def test_each_bad_input_gets_its_answer_and_leaves_the_session_unchanged(
    bridge: Start,
    telegram: FakeTelegram,
    fake_model: FakeModel,
    store: MemoryStore,
    media: Callable[[FakeTelegram], dict[str, Any]],
    setup: dict[str, Any],
    answer: str,
) -> None:
    setup = dict(setup)
    if "transcription" in setup:
        fake_model.transcripts.extend([setup.pop("transcription")] * 3)
    if setup.pop("no_audio", False):
        fake_model.audio_endpoints = False
    if setup.pop("download", None) is not None:
        telegram.fail("file", 500, "Internal Server Error")
    await bridge(**setup)
    telegram.user_message("hello")
    before = await stored_session(store, 2)
    telegram.user_message(None, caption="look", media=media(telegram))
    shown = await answered(telegram, 1, 2)
    assert shown[1] == answer
    assert len(fake_model.requests) == 1, "the model was asked about a file that could not be used"
    await asyncio.sleep(0.1)
    assert await store.load_session(before.key, 100) == before
    assert await store.claim(before.key, 15.0, 10) is None, "the refused message is still queued"


async def test_a_declared_size_over_the_limit_is_refused_without_a_download(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(media={"max_file_bytes": 1000})
    song = {**telegram.upload(bytes(5000), "music/s.mp3"), "duration": 9, "mime_type": "audio/mpeg"}
    telegram.user_message(None, media={"audio": {**song, "file_name": "song.mp3"}})
    [shown] = await answered(telegram, 1, 1)
    assert shown == texts.too_large(image=False, size=5000, limit=1000)
    assert telegram.downloads == [] and telegram.calls_of("getFile") == [] and fake_model.requests == []


async def test_a_denied_users_photo_is_never_downloaded(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(access={"allow_users": ["telegram:99"], "on_denied": "reply"})
    telegram.user_message(None, caption="what is this?", media={"photo": sizes(telegram, photo())})
    [shown] = await answered(telegram, 1, 1)
    assert shown == texts.DENIED
    assert telegram.downloads == [] and telegram.calls_of("getFile") == [] and fake_model.requests == []


async def test_with_speak_a_voice_note_is_also_answered_with_a_voice_note(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge(speak="when_spoken_to")
    telegram.user_message("written question")
    await answered(telegram, 1, 1, "echo: written question".__eq__)
    fake_model.transcripts.append("spoken question")
    voice = {**telegram.upload(OGG_VOICE, "voice/file_2.oga"), "duration": 2, "mime_type": "audio/ogg"}
    telegram.user_message(None, media={"voice": voice})
    await answered(telegram, 1, 2, "echo: spoken question".__eq__)
    await telegram.wait_for(lambda: bool(telegram.voices))
    assert telegram.voices == [(1, SPEECH_BYTES)]
    assert [(s.input, s.response_format) for s in fake_model.speeches] == [("echo: spoken question", "opus")]


async def test_an_albums_pictures_become_one_question(
    bridge: Start, telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    await bridge()
    caption = f"{MENTION} which is older?"
    album: dict[str, Any] = {"chat": GROUP, "chat_type": "supergroup", "media_group_id": "album-7"}
    telegram.user_message(
        None,
        caption=caption,
        caption_entities=[entity(caption, MENTION)],
        media={"photo": sizes(telegram, photo())},
        **album,
    )
    telegram.user_message(None, media={"photo": sizes(telegram, photo(seed=2))}, **album)
    telegram.user_message(None, media={"photo": sizes(telegram, photo(seed=3))}, **album)
    await answered(telegram, GROUP, 1)
    await asyncio.sleep(0.2)
    [request] = fake_model.requests
    assert part_kinds(request) == ["text", "image_url", "image_url", "image_url"]
    assert "which is older?" in user_parts(request)[0]["text"]
