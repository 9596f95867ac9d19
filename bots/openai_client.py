"""The ``ChatModel`` for any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama...).

Failures are sorted into the few kinds in ``bots.errors`` because the user is told different things
for each: the provider's rate limit, a bad key or spent quota, a timeout, a prompt that no longer
fits. Transient failures (429, 5xx, network, timeouts) are retried with backoff, but never once
part of a streamed reply has been shown: a retry would show the user a second, different answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, aconnect_sse
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bots.errors import ContextTooLong, ModelAccessDenied, ModelError, ModelRateLimited, ModelTimeout, ModelUnavailable
from bots.http_client import is_timeout, model_http_client
from bots.model import ChatMessage, ModelReply, ServerCheck, TextSink, ToolSpec, Usage
from bots.redaction import Redactor
from bots.settings import ModelSettings
from bots.tools import ToolCallAssembler, calls_of_message, request_tools

logger = logging.getLogger("chatbridge.model")

BACKOFF_CAP_S = 20.0
"""No single backoff step waits longer than this, however many retries are configured."""

RETRY_AFTER_CAP_S = 60.0
"""A server asking us to come back later than this is treated as a failure, not waited for:
a chat user is better served by a clear error now than by a reply minutes late."""

_DETAIL_CHARS = 300
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


class _Transient(Exception):
    """A failed attempt worth repeating; ``error`` is what the caller gets if attempts run out."""

    def __init__(self, error: ModelError, retry_after_s: float | None = None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after_s = retry_after_s


class OpenAIChatModel:
    """Talks to ``{base_url}/chat/completions``; one pooled HTTP client per instance.

    ``http_client`` lets a caller share or instrument a client; a client passed in stays the
    caller's to close, one created here is closed by ``aclose``. ``on_retry`` is called with the
    failure before each retry (for metrics); it must be quick and must not raise.
    """

    def __init__(
        self,
        settings: ModelSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        on_retry: Callable[[ModelError], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_retry = on_retry
        self._base_url = settings.base_url.rstrip("/")
        self._api_key = settings.api_key.get_secret_value()
        self._redact = Redactor([self._api_key])
        # Per-phase timeouts are only a backstop; the whole attempt is bounded by _deadline.
        self._own_http = http_client is None
        self._http = http_client or model_http_client(
            timeout_s=settings.timeout_s, max_connections=settings.max_connections
        )
        self._completions_url = httpx.URL(self._url("chat/completions"))
        """Parsed once: httpx parses a URL given as a string on every request."""

    async def reply(
        self,
        messages: Sequence[ChatMessage],
        on_text: TextSink | None = None,
        *,
        tools: Sequence[ToolSpec] = (),
        temperature: float | None = None,
    ) -> ModelReply:
        body = self._completion_body(messages, stream=self._settings.stream, max_tokens=self._settings.max_tokens)
        if tools:
            body["tools"] = request_tools(tools)
        if temperature is not None:
            body["temperature"] = temperature
        try:
            return await self._attempt(body, on_text)
        except _Transient as failure:
            first_failure = failure
        return await self._retried(body, on_text, first_failure)

    async def _retried(self, body: dict[str, Any], on_text: TextSink | None, first_failure: _Transient) -> ModelReply:
        """Retries after a failed first attempt, as tenacity runs them from that failure on.

        Most calls succeed at once, and tenacity's loop costs about 50 us a call to run even then
        (``bench/``), so it is set up only now. It is built per call: it keeps the state of its loop
        on itself, and concurrent replies on one client must not share it.
        """
        pending = [first_failure]

        async def attempt() -> ModelReply:
            if pending:
                raise pending.pop()
            return await self._attempt(body, on_text)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.max_retries + 1),
            wait=self._wait_s,
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except _Transient as exc:
            raise exc.error from exc.__cause__

    async def check(self) -> ServerCheck:
        """One attempt, no retries: ``chatbridge check`` should report a problem, not wait it out."""
        try:
            async with self._deadline():
                return await self._check_once()
        except _Transient as exc:
            raise exc.error from exc.__cause__

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # --- one attempt ----------------------------------------------------------------------------

    async def _attempt(self, body: dict[str, Any], on_text: TextSink | None) -> ModelReply:
        """Once text has reached ``on_text`` a failure is final, whatever its kind."""
        sink = _Sink(on_text)
        try:
            async with self._deadline() as deadline:
                sink.deadline = deadline
                if body["stream"]:
                    return await self._stream(body, sink)
                return await self._complete(body, sink)
        except _Transient as exc:
            if sink.shown:
                raise exc.error from exc.__cause__
            raise

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[asyncio.Timeout]:
        """httpx's read timeout restarts with every chunk, so a server trickling tokens could hold
        an attempt open forever; this bounds the attempt as a whole, streaming included (but not
        the time the caller's ``on_text`` takes, see ``_Sink``)."""
        deadline = asyncio.timeout(self._settings.timeout_s)
        try:
            async with deadline:
                yield deadline
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise _Transient(ModelTimeout(f"no complete answer within {self._settings.timeout_s:g} s")) from exc

    async def _complete(self, body: dict[str, Any], sink: _Sink) -> ModelReply:
        with _network_failures():
            response = await self._http.post(self._completions_url, json=body, headers=self._headers())
        await self._raise_for_status(response)
        payload = self._json_object(response.content, "completion")
        choice = _first_choice(payload)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        text = content if isinstance(content, str) else ""
        await sink(text)
        calls = calls_of_message(message) if isinstance(message, dict) else ()
        return ModelReply(text=text, finish_reason=_finish_reason(choice), usage=_usage(payload), tool_calls=calls)

    async def _stream(self, body: dict[str, Any], sink: _Sink) -> ModelReply:
        async with contextlib.AsyncExitStack() as stack:
            # Only the request and the reading of the body are network calls; on_text runs in
            # between and its own errors must not be mistaken for the model server's.
            with _network_failures():
                # httpx takes the parsed URL as it is; httpx-sse's annotation says str only.
                url: Any = self._completions_url
                source = await stack.enter_async_context(
                    aconnect_sse(self._http, "POST", url, json=body, headers=self._headers())
                )
            await self._raise_for_status(source.response)
            reply = await self._read_stream(source, sink)
        return reply

    async def _read_stream(self, source: EventSource, sink: _Sink) -> ModelReply:
        reply = _StreamedReply()
        async with contextlib.aclosing(_sse_data(source)) as items:
            async for data in items:
                if data == "[DONE]":
                    return reply.result()
                await sink(reply.add(self._stream_chunk(data)))
        if reply.finish_reason is None:
            raise _Transient(
                ModelUnavailable("stream ended before the reply was complete (no finish_reason, no [DONE])")
            )
        return reply.result()

    def _stream_chunk(self, data: str) -> dict[str, Any]:
        """Some servers (vLLM, llama.cpp, OpenAI itself) report a failure as an SSE ``error`` event."""
        chunk = self._json_object(data.encode(), "stream chunk")
        if "error" not in chunk:
            return chunk
        error = _ServerError.from_payload(chunk)
        detail = f"error event in stream: {self._clean(error.message)}"
        if error.says_context_too_long():
            raise ContextTooLong(detail)
        raise _Transient(ModelUnavailable(detail))

    async def _check_once(self) -> ServerCheck:
        with _network_failures():
            response = await self._http.get(self._url("models"), headers=self._headers())
        if response.status_code in (404, 405):
            return await self._check_by_completion()
        await self._raise_for_status(response)
        listing = self._json_object(response.content, "model list").get("data")
        entries = listing if isinstance(listing, list) else []
        names = tuple(entry["id"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str))
        return ServerCheck(f"model server answered; {len(names)} model{'' if len(names) == 1 else 's'} listed", names)

    async def _check_by_completion(self) -> ServerCheck:
        """Servers without ``/models`` (some proxies) are reached with the cheapest real request.
        When that is not found either, the URL is most likely missing the API's ``/v1``."""
        body = self._completion_body([ChatMessage(role="user", content="ping")], stream=False, max_tokens=1)
        with _network_failures():
            response = await self._http.post(self._completions_url, json=body, headers=self._headers())
        if response.status_code == 404:
            raise ModelUnavailable(self._not_found(_ServerError.from_body(response.content)))
        await self._raise_for_status(response)
        _first_choice(self._json_object(response.content, "completion"))
        return ServerCheck(
            f"model server answered a one-token completion with {self._settings.name} (it has no /models listing)"
        )

    def _not_found(self, error: _ServerError) -> str:
        answered = f"{self._base_url} answered 404 at /models and /chat/completions"
        if not urlsplit(self._base_url).path.endswith("/v1"):
            return f"{answered}: add /v1?"
        message = self._clean(error.message)
        return f"{answered}: {message}" if message else answered

    # --- HTTP status to error kind --------------------------------------------------------------

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        with _network_failures():
            await response.aread()
        raise self._failure(response.status_code, _ServerError.from_body(response.content), response.headers)

    def _failure(self, status: int, error: _ServerError, headers: httpx.Headers) -> ModelError | _Transient:
        detail = f"HTTP {status}: {self._clean(error.message) or 'no message'}"
        if status in (401, 402, 403) or error.codes & _QUOTA_CODES:
            return ModelAccessDenied(detail)
        if status in (400, 413, 422) and error.says_context_too_long():
            return ContextTooLong(detail)
        if status == 429:
            return _retry_later(ModelRateLimited, detail, headers)
        if status == 408:
            return _Transient(ModelTimeout(detail))
        if status >= 500:
            return _retry_later(ModelUnavailable, detail, headers)
        return ModelUnavailable(detail)

    def _clean(self, message: str, limit: int = _DETAIL_CHARS) -> str:
        """Server text goes into logs: one line, the key masked in case it is echoed (in any of its
        encoded forms), and only then cut to ``limit``, so that no part of the key survives a cut."""
        return self._redact(" ".join(message.split()))[:limit]

    def _json_object(self, raw: bytes, what: str) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            snippet = self._clean(raw.decode(errors="replace"), 60)
            raise _Transient(ModelUnavailable(f"malformed {what}: not JSON ({snippet!r})")) from exc
        if not isinstance(payload, dict):
            raise _Transient(ModelUnavailable(f"malformed {what}: not a JSON object"))
        return payload

    # --- retries ---------------------------------------------------------------------------------

    def _wait_s(self, state: RetryCallState) -> float:
        """Equal jitter: at least half of each exponential step, so clients that failed together
        spread out without any of them retrying at once; never sooner than Retry-After."""
        step = min(self._settings.retry_backoff_s * 2.0 ** (state.attempt_number - 1), BACKOFF_CAP_S)
        backoff = step / 2 + random.uniform(0, step / 2)
        failure = state.outcome.exception() if state.outcome else None
        retry_after = failure.retry_after_s if isinstance(failure, _Transient) else None
        return max(backoff, retry_after or 0.0)

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        sleep_s = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "model call failed (%s); retry %d of %d in %.2f s",
            failure,
            state.attempt_number,
            self._settings.max_retries,
            sleep_s,
        )
        if self._on_retry is not None and isinstance(failure, _Transient):
            self._on_retry(failure.error)

    # --- requests --------------------------------------------------------------------------------

    def _completion_body(self, messages: Sequence[ChatMessage], *, stream: bool, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._settings.name,
            "messages": list(messages),
            "temperature": self._settings.temperature,
            "max_tokens": max_tokens,
            "stream": stream,
        }
        if stream:
            # Without this a streamed reply carries no usage at all.
            body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self) -> dict[str, str]:
        """A fresh dict each call: ``aconnect_sse`` adds its own headers to the one it is given.
        Local servers often run without a key, and some reject an empty ``Bearer``."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _url(self, path: str) -> str:
        return f"{self._base_url}/{path}"


class _Sink:
    """Passes text to the caller's callback and remembers whether the user has seen any.

    The time the callback takes (a chat platform being slow to take an edit) is added to the
    attempt's ``deadline``: it is not the model's time, and must not make the model look slow.
    """

    def __init__(self, on_text: TextSink | None) -> None:
        self._on_text = on_text
        self.shown = False
        self.deadline: asyncio.Timeout | None = None

    async def __call__(self, text: str) -> None:
        if text and self._on_text is not None:
            self.shown = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            await self._on_text(text)
            when = self.deadline.when() if self.deadline is not None else None
            if self.deadline is not None and when is not None:
                self.deadline.reschedule(when + loop.time() - started)


@dataclass(slots=True)
class _StreamedReply:
    """The pieces of a streamed reply as they arrive; usage comes last, in a chunk without choices."""

    parts: list[str] = field(default_factory=list)
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    finish_reason: str | None = None
    usage: Usage | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Record one chunk and return its new text ("" when it has none)."""
        self.usage = _usage(chunk) or self.usage
        choices = chunk.get("choices")
        if not choices:
            return ""
        choice = _first_choice(chunk)
        self.finish_reason = _finish_reason(choice) or self.finish_reason
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        text = content if isinstance(content, str) else ""
        self.parts.append(text)
        if isinstance(delta, dict):
            self.calls.add(delta.get("tool_calls"))
        return text

    def result(self) -> ModelReply:
        return ModelReply(
            text="".join(self.parts), finish_reason=self.finish_reason, usage=self.usage, tool_calls=self.calls.result()
        )


@dataclass(frozen=True, slots=True)
class _ServerError:
    """The useful part of an error body, whichever of the common shapes the server uses:
    ``{"error": {"message", "type", "code"}}`` (OpenAI, llama.cpp), ``{"message", "type", "code"}``
    (older vLLM) or ``{"error": "text"}`` (Ollama)."""

    message: str
    codes: frozenset[str]

    @classmethod
    def from_body(cls, body: bytes) -> _ServerError:
        try:
            payload = json.loads(body)
        except ValueError:
            return cls(body.decode("utf-8", errors="replace"), frozenset())
        return cls.from_payload(payload)

    @classmethod
    def from_payload(cls, payload: object) -> _ServerError:
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if not isinstance(error, dict):
            return cls(str(error or ""), frozenset())
        codes = frozenset(str(error[key]) for key in ("code", "type") if error.get(key) is not None)
        return cls(str(error.get("message") or ""), codes)

    def says_context_too_long(self) -> bool:
        return bool(self.codes & _CONTEXT_CODES) or _CONTEXT_WORDING.search(self.message) is not None


@contextlib.contextmanager
def _network_failures() -> Iterator[None]:
    """Turn httpx's transport errors into retryable model errors, without their request objects."""
    try:
        yield
    except httpx.TimeoutException as exc:
        if not is_timeout(exc):
            raise _unreachable(exc) from exc
        raise _Transient(ModelTimeout(f"network timeout ({type(exc).__name__})")) from exc
    except httpx.UnsupportedProtocol as exc:
        raise ModelUnavailable(f"bad model.base_url: {exc}") from exc
    except httpx.TransportError as exc:
        raise _unreachable(exc) from exc


def _unreachable(error: httpx.TransportError) -> _Transient:
    """A connection that failed other than by timing out, named by what the transport really
    raised (the httpx error wraps aiohttp's)."""
    cause = error.__cause__ or error
    return _Transient(ModelUnavailable(f"transport error: {type(cause).__name__}: {cause}"))


async def _sse_data(source: EventSource) -> AsyncGenerator[str, None]:
    """The data of each event; network errors are converted here, so that they are not confused
    with errors raised by the consumer's own code between events."""
    with _network_failures():
        async for event in source.aiter_sse():
            if event.data:
                yield event.data


def _retry_later(kind: type[ModelError], detail: str, headers: httpx.Headers) -> ModelError | _Transient:
    wait_s = _retry_after_s(headers)
    if wait_s is not None and wait_s > RETRY_AFTER_CAP_S:
        return kind(f"{detail} (server asks to retry after {wait_s:.0f} s; not waiting that long)")
    return _Transient(kind(detail), wait_s)


def _retry_after_s(headers: httpx.Headers) -> float | None:
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


def _first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Transient(ModelUnavailable("malformed answer: no choices"))
    return choices[0]


def _finish_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


def _usage(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None
