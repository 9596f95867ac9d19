"""Speech to text and text to speech on an OpenAI-compatible server (``/audio/transcriptions``,
``/audio/speech``): OpenAI itself, and local servers such as speaches, LocalAI or whisper.cpp's.

The server is ``audio.base_url``, or the model's when that is empty (and then the model's key when
``audio.api_key`` is empty too). Timeouts, retries and backoff are the model's settings: the audio
server is usually the model's own, and a second set of knobs would only be set the same.

Files go to the server as they came (ogg/opus, mp3, m4a, wav, webm, flac): the API takes those
without conversion, so no ffmpeg is needed. OpenAI decides the format by the file name's ending and
refuses Telegram's ``.oga``, so a name the API would not accept gets the ending of its MIME type.

A server without these endpoints (most chat-only servers: Ollama, llama.cpp's, vLLM without an
audio model) answers 404 or 405; that is ``AudioUnsupported``, for one clear answer to the user
and a warning from ``chatbridge check``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bots.audio_settings import AudioSettings
from bots.errors import ModelError, ModelTimeout, ModelUnavailable
from bots.http_client import model_http_client
from bots.redaction import Redactor
from bots.server_errors import ServerError, Transient, backoff_s, network_failures, status_failure
from bots.settings import ModelSettings

log = logging.getLogger("chatbridge.audio")

_T = TypeVar("_T")

TRANSCRIPTIONS = "audio/transcriptions"
SPEECH = "audio/speech"
SPEECH_FORMAT = "opus"
"""Ogg/Opus: what Telegram plays as a voice note, and what Discord and Slack play inline."""
SPEECH_MIME_TYPE = "audio/ogg"
SPEECH_MAX_CHARS = 4096
"""OpenAI's limit on the text of one speech request; longer answers are read up to here."""
ACCEPTED_ENDINGS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})
"""The file name endings OpenAI's transcription endpoint takes."""
ENDING_OF_MIME_TYPE = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "m4a",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}
_DETAIL_CHARS = 300


class AudioUnsupported(ModelError):
    """The audio server has no such endpoint (404/405)."""

    kind = "audio_unsupported"


@dataclass(frozen=True, slots=True)
class AudioCheck:
    """Which endpoints the audio server has, for ``chatbridge check``."""

    base_url: str
    transcriptions: bool
    speech: bool


class AudioClient:
    """One pooled HTTP client; a client passed in stays the caller's to close."""

    def __init__(
        self, audio: AudioSettings, model: ModelSettings, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self._audio = audio
        self._model = model
        own_server = not audio.base_url
        self.base_url = (audio.base_url or model.base_url).rstrip("/")
        self.url_key = "model.base_url" if own_server else "audio.base_url"
        key = audio.api_key.get_secret_value() or (model.api_key.get_secret_value() if own_server else "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._redact = Redactor([key])
        self._own_http = http_client is None
        self._http = http_client or model_http_client(timeout_s=model.timeout_s, max_connections=64)

    async def transcribe(self, data: bytes, *, file_name: str, mime_type: str) -> str:
        """The text spoken in an audio file. Raises a ``ModelError`` (``AudioUnsupported`` when the
        server has no transcription endpoint)."""
        name = transcription_file_name(file_name, mime_type)

        async def attempt() -> str:
            with network_failures(self.url_key):
                response = await self._http.post(
                    self._url(TRANSCRIPTIONS),
                    data={"model": self._audio.transcribe_model, "response_format": "json"},
                    files={"file": (name, data, mime_type or "application/octet-stream")},
                    headers=self._headers,
                )
            self._raise_for_status(response, TRANSCRIPTIONS)
            try:
                text = response.json().get("text")
            except (ValueError, AttributeError):
                text = None
            if not isinstance(text, str):
                raise Transient(ModelUnavailable("malformed transcription: no text"))
            return text.strip()

        return await self._with_retries(attempt)

    async def speak(self, text: str) -> bytes:
        """``text`` read aloud, as Ogg/Opus bytes (``SPEECH_MIME_TYPE``), at most ``SPEECH_MAX_CHARS``
        of it. Raises a ``ModelError`` (``AudioUnsupported`` without a speech endpoint)."""
        body = {
            "model": self._audio.speech_model,
            "input": _speakable(text),
            "voice": self._audio.voice,
            "response_format": SPEECH_FORMAT,
        }

        async def attempt() -> bytes:
            with network_failures(self.url_key):
                response = await self._http.post(self._url(SPEECH), json=body, headers=self._headers)
            self._raise_for_status(response, SPEECH)
            if not response.content:
                raise Transient(ModelUnavailable("empty speech answer"))
            return response.content

        return await self._with_retries(attempt)

    async def check(self) -> AudioCheck:
        """Whether each endpoint exists, asked with a request it must refuse (no file, no text), which
        costs nothing: 400 or 422 means it is there, 404 or 405 that it is not. Raises a
        ``ModelError`` when the server cannot be reached or refuses the key."""

        async def present(path: str, **request: Any) -> bool:
            with network_failures(self.url_key):
                response = await self._http.post(self._url(path), headers=self._headers, **request)
            if response.status_code in (404, 405, 501):
                return False
            if response.status_code in (401, 403):
                self._raise_for_status(response, path)
            return True

        try:
            async with asyncio.timeout(self._model.timeout_s):
                transcriptions = await present(TRANSCRIPTIONS, data={"model": self._audio.transcribe_model})
                speech = await present(SPEECH, json={"model": self._audio.speech_model})
        except Transient as failure:
            raise failure.error from failure.__cause__
        except TimeoutError:
            raise ModelTimeout(f"no answer within {self._model.timeout_s:g} s") from None
        return AudioCheck(self.base_url, transcriptions, speech)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # --- the pieces -----------------------------------------------------------------------------

    async def _with_retries(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``attempt`` under the model's deadline per attempt, retried as the chat client retries."""

        async def bounded() -> _T:
            try:
                async with asyncio.timeout(self._model.timeout_s):
                    return await attempt()
            except TimeoutError:
                raise Transient(ModelTimeout(f"no answer within {self._model.timeout_s:g} s")) from None

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._model.max_retries + 1),
            wait=lambda state: backoff_s(self._model.retry_backoff_s, state),
            retry=retry_if_exception_type(Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return await retrying(bounded)
        except Transient as exc:
            raise exc.error from exc.__cause__

    def _raise_for_status(self, response: httpx.Response, path: str) -> None:
        if response.is_success:
            return
        error = ServerError.from_body(response.content)
        message = self._redact(" ".join(error.message.split()))[:_DETAIL_CHARS]
        detail = f"HTTP {response.status_code} at /{path}: {message or 'no message'}"
        if response.status_code in (404, 405, 501):
            raise AudioUnsupported(f"{self.url_key} {self.base_url} has no /{path} ({detail})")
        raise status_failure(response.status_code, error, response.headers, detail)

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        sleep_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("audio call failed (%s); retry %d in %.2f s", failure, state.attempt_number, sleep_s)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"


def transcription_file_name(name: str, mime_type: str) -> str:
    """``name`` with an ending the API takes: its own when accepted, else its MIME type's."""
    path = PurePosixPath(PurePosixPath(name).name or "audio")
    if path.suffix.lower().removeprefix(".") in ACCEPTED_ENDINGS:
        return path.name
    ending = ENDING_OF_MIME_TYPE.get(mime_type.lower().partition(";")[0].strip(), "ogg")
    return f"{path.stem or 'audio'}.{ending}"


def _speakable(text: str) -> str:
    """At most ``SPEECH_MAX_CHARS``, cut at the last sentence or word end before it."""
    if len(text) <= SPEECH_MAX_CHARS:
        return text
    cut = text[:SPEECH_MAX_CHARS]
    for end in (". ", "\n", " "):
        at = cut.rfind(end)
        if at > SPEECH_MAX_CHARS // 2:
            return cut[: at + 1].rstrip()
    return cut
