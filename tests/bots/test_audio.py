"""The audio client against the fake model server's audio endpoints, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from bots.audio import SPEECH_MAX_CHARS, AudioClient, AudioUnsupported, transcription_file_name
from bots.audio_settings import AudioSettings
from bots.errors import ModelAccessDenied, ModelUnavailable
from bots.settings import ModelSettings
from tests.fakes.fake_model import SPEECH_BYTES, FakeModel, Status
from tests.kit.media import OGG_VOICE

MODEL_KEY = "sk-model-key-1234"
AUDIO_KEY = "sk-audio-key-5678"

MakeClient = Callable[..., AudioClient]


@pytest_asyncio.fixture
async def make_client(fake_model: FakeModel) -> AsyncIterator[MakeClient]:
    clients: list[AudioClient] = []

    def make(audio: dict[str, Any] | None = None, **model: Any) -> AudioClient:
        model_settings = ModelSettings.model_validate(
            {"base_url": fake_model.base_url, "api_key": MODEL_KEY, "retry_backoff_s": 0.01, "timeout_s": 2, **model}
        )
        client = AudioClient(AudioSettings.model_validate(audio or {}), model_settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_a_voice_note_is_transcribed_with_the_configured_model(
    make_client: MakeClient, fake_model: FakeModel
) -> None:
    fake_model.transcripts.append("what is the weather like")
    client = make_client({"transcribe_model": "whisper-large"})
    text = await client.transcribe(OGG_VOICE, file_name="voice/file_7.oga", mime_type="audio/ogg")
    assert text == "what is the weather like"
    [upload] = fake_model.transcriptions
    # OpenAI refuses the .oga ending Telegram gives voice notes; the MIME type's ending is used.
    assert (upload.file_name, upload.size, upload.model) == ("file_7.ogg", len(OGG_VOICE), "whisper-large")
    assert upload.data == OGG_VOICE
    assert fake_model.audio_auth_headers == [f"Bearer {MODEL_KEY}"]


async def test_an_answer_is_spoken_as_opus_with_the_configured_voice(
    make_client: MakeClient, fake_model: FakeModel
) -> None:
    client = make_client({"voice": "nova", "speech_model": "tts-1-hd"})
    assert await client.speak("Hello there.") == SPEECH_BYTES
    [speech] = fake_model.speeches
    assert (speech.input, speech.voice, speech.model, speech.response_format) == (
        "Hello there.",
        "nova",
        "tts-1-hd",
        "opus",
    )


async def test_a_long_answer_is_read_up_to_the_speech_limit_at_a_word_end(
    make_client: MakeClient, fake_model: FakeModel
) -> None:
    await make_client().speak("word " * 2000)
    spoken = fake_model.speeches[0].input
    assert len(spoken) <= SPEECH_MAX_CHARS and spoken.endswith("word")


async def test_an_audio_server_of_its_own_uses_its_own_key_only(make_client: MakeClient, fake_model: FakeModel) -> None:
    await make_client({"base_url": fake_model.base_url, "api_key": AUDIO_KEY}).speak("a")
    await make_client({"base_url": fake_model.base_url}).speak("b")
    await make_client({"api_key": AUDIO_KEY}).speak("c")
    # Another server with no key of its own gets none: the model's key is not sent elsewhere.
    assert fake_model.audio_auth_headers == [f"Bearer {AUDIO_KEY}", None, f"Bearer {AUDIO_KEY}"]


async def test_a_server_without_audio_endpoints_is_unsupported(make_client: MakeClient, fake_model: FakeModel) -> None:
    fake_model.audio_endpoints = False
    client = make_client()
    with pytest.raises(AudioUnsupported, match="has no /audio/transcriptions"):
        await client.transcribe(OGG_VOICE, file_name="a.ogg", mime_type="audio/ogg")
    with pytest.raises(AudioUnsupported):
        await client.speak("hi")
    checked = await client.check()
    assert (checked.transcriptions, checked.speech) == (False, False)


async def test_check_sees_both_endpoints_without_transcribing_anything(
    make_client: MakeClient, fake_model: FakeModel
) -> None:
    checked = await make_client().check()
    assert (checked.transcriptions, checked.speech) == (True, True)
    assert fake_model.transcriptions == [] and fake_model.speeches == []


async def test_a_5xx_is_retried_and_a_refused_key_is_not(make_client: MakeClient, fake_model: FakeModel) -> None:
    fake_model.transcripts.extend([Status(503), "after a retry"])
    client = make_client()
    assert await client.transcribe(OGG_VOICE, file_name="a.ogg", mime_type="audio/ogg") == "after a retry"
    fake_model.transcripts.extend([Status(401, {"error": {"message": f"bad key {MODEL_KEY}"}}), "never"])
    with pytest.raises(ModelAccessDenied) as refused:
        await client.transcribe(OGG_VOICE, file_name="a.ogg", mime_type="audio/ogg")
    assert MODEL_KEY not in str(refused.value)
    assert len(fake_model.transcriptions) == 3


async def test_failures_that_last_end_in_an_error(make_client: MakeClient, fake_model: FakeModel) -> None:
    fake_model.speech_failures.extend([Status(500)] * 3)
    with pytest.raises(ModelUnavailable):
        await make_client(max_retries=2).speak("hi")


@pytest.mark.parametrize(
    ("name", "mime_type", "sent_as"),
    [
        ("voice.oga", "audio/ogg", "voice.ogg"),
        ("song.mp3", "audio/mpeg", "song.mp3"),
        ("memo", "audio/mp4", "memo.m4a"),
        ("clip.webm", "audio/webm", "clip.webm"),
        ("", "audio/wav", "audio.wav"),
    ],
)
def test_file_names_get_an_ending_the_api_takes(name: str, mime_type: str, sent_as: str) -> None:
    assert transcription_file_name(name, mime_type) == sent_as
