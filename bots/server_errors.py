"""What an OpenAI-compatible server's failures mean, shared by every client of such a server (chat,
audio): the error body's shapes, HTTP statuses sorted into ``bots.errors`` kinds, ``Retry-After``,
and transport errors, with transient failures marked for a retry.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from tenacity import RetryCallState

from bots.errors import ContextTooLong, ModelAccessDenied, ModelError, ModelRateLimited, ModelTimeout, ModelUnavailable
from bots.http_client import is_timeout

BACKOFF_CAP_S = 20.0
"""No single backoff step waits longer than this, however many retries are configured."""

RETRY_AFTER_CAP_S = 60.0
"""A server asking us to come back later than this is treated as a failure, not waited for:
a chat user is better served by a clear error now than by a reply minutes late."""

_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_QUOTA_CODES = frozenset({"insufficient_quota"})
# What servers say when the prompt does not fit, for those that send no machine-readable code:
# OpenAI/vLLM "maximum context length is 4096 tokens", llama.cpp "exceeds the available context
# size", Ollama "input length exceeds the context length", Mistral "too large for model with 32768
# maximum context length", vLLM "maximum model length" / "too long to fit into the model",
# Anthropic-style "prompt is too long", TGI "`inputs` tokens + `max_new_tokens` must be <= 4096".
_CONTEXT_WORDING = re.compile(
    r"context[ _](?:length|size|window)"
    r"|max(?:imum)?[ _]model[ _]len"
    r"|too many tokens"
    r"|prompt is too long|too long to fit"
    r"|tokens \+ `?max_new_tokens`? must be",
    re.IGNORECASE,
)
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")


class Transient(Exception):
    """A failed attempt worth repeating; ``error`` is what the caller gets if attempts run out."""

    def __init__(self, error: ModelError, retry_after_s: float | None = None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after_s = retry_after_s


def backoff_s(first_backoff_s: float, state: RetryCallState) -> float:
    """Equal jitter: at least half of each exponential step, so clients that failed together
    spread out without any of them retrying at once; never sooner than Retry-After."""
    step = min(first_backoff_s * 2.0 ** (state.attempt_number - 1), BACKOFF_CAP_S)
    backoff = step / 2 + random.uniform(0, step / 2)
    failure = state.outcome.exception() if state.outcome else None
    retry_after = failure.retry_after_s if isinstance(failure, Transient) else None
    return max(backoff, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class ServerError:
    """The useful part of an error body, whichever of the common shapes the server uses:
    ``{"error": {"message", "type", "code"}}`` (OpenAI, llama.cpp), ``{"message", "type", "code"}``
    (older vLLM) or ``{"error": "text"}`` (Ollama)."""

    message: str
    codes: frozenset[str]

    @classmethod
    def from_body(cls, body: bytes) -> ServerError:
        try:
            payload = json.loads(body)
        except ValueError:
            return cls(body.decode("utf-8", errors="replace"), frozenset())
        return cls.from_payload(payload)

    @classmethod
    def from_payload(cls, payload: object) -> ServerError:
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if not isinstance(error, dict):
            return cls(str(error or ""), frozenset())
        codes = frozenset(str(error[key]) for key in ("code", "type") if error.get(key) is not None)
        return cls(str(error.get("message") or ""), codes)

    def says_context_too_long(self) -> bool:
        return bool(self.codes & _CONTEXT_CODES) or _CONTEXT_WORDING.search(self.message) is not None


def status_failure(status: int, error: ServerError, headers: httpx.Headers, detail: str) -> ModelError | Transient:
    """The kind of failure an HTTP status (and the error body) says, transient ones to be retried;
    ``detail`` is the log text, which the caller has cleaned of secrets."""
    if status in (401, 402, 403) or error.codes & _QUOTA_CODES:
        return ModelAccessDenied(detail)
    if status in (400, 413, 422) and error.says_context_too_long():
        return ContextTooLong(detail)
    if status == 429:
        return retry_later(ModelRateLimited, detail, headers)
    if status == 408:
        return Transient(ModelTimeout(detail))
    if status >= 500:
        return retry_later(ModelUnavailable, detail, headers)
    return ModelUnavailable(detail)


def retry_later(kind: type[ModelError], detail: str, headers: httpx.Headers) -> ModelError | Transient:
    wait_s = retry_after_s(headers)
    if wait_s is not None and wait_s > RETRY_AFTER_CAP_S:
        return kind(f"{detail} (server asks to retry after {wait_s:.0f} s; not waiting that long)")
    return Transient(kind(detail), wait_s)


def retry_after_s(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (OpenAI), then ``Retry-After`` as delta-seconds or an HTTP date."""
    millis = headers.get("retry-after-ms", "").strip()
    if _DELTA_SECONDS.fullmatch(millis):
        return float(millis) / 1000
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class network_failures:  # noqa: N801 - used as a ``with`` statement, like contextlib's
    """Turn httpx's transport errors into retryable model errors, without their request objects;
    ``url_key`` is the setting a URL that httpx cannot use came from.

    A class rather than a generator: it wraps every model request, and a generator-based context
    manager is three objects more per request, each walked by the garbage collector while a burst of
    requests waits for the model (``bench/``)."""

    __slots__ = ("_url_key",)

    def __init__(self, url_key: str = "model.base_url") -> None:
        self._url_key = url_key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        if isinstance(exc, httpx.TimeoutException):
            if not is_timeout(exc):
                raise unreachable(exc) from exc
            raise Transient(ModelTimeout(f"network timeout ({type(exc).__name__})")) from exc
        if isinstance(exc, httpx.UnsupportedProtocol):
            raise ModelUnavailable(f"bad {self._url_key}: {exc}") from exc
        if isinstance(exc, httpx.TransportError):
            raise unreachable(exc) from exc


def unreachable(error: httpx.TransportError) -> Transient:
    """A connection that failed other than by timing out, named by what the transport really
    raised (the httpx error wraps aiohttp's)."""
    cause = error.__cause__ or error
    return Transient(ModelUnavailable(f"transport error: {type(cause).__name__}: {cause}"))
