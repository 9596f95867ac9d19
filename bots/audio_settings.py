"""The ``audio:`` section: speech to text and text to speech on an OpenAI-compatible server."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Speak(StrEnum):
    NEVER = "never"
    WHEN_SPOKEN_TO = "when_spoken_to"
    ALWAYS = "always"


class AudioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "", description="the API root serving /audio/transcriptions and /audio/speech; empty: model.base_url"
    )
    api_key: SecretStr = Field(
        SecretStr(""), description="sent as a Bearer token; empty: model.api_key when base_url is empty too"
    )
    transcribe_model: str = Field("whisper-1", description="the model that turns voice notes and audio into text")
    speak: Speak = Field(
        Speak.NEVER,
        description="also answer as speech: never; when_spoken_to (the question was audio); always",
    )
    speech_model: str = Field("tts-1", description="the model that reads answers aloud")
    voice: str = Field("alloy", description="the voice of spoken answers, one the speech model offers")
