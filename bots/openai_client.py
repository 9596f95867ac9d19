"""The ``ChatModel`` for any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama...).

Failures are sorted into the few kinds in ``bots.errors`` because the user is told different things
for each: the provider's rate limit, a bad key or spent quota, a timeout, a prompt that no longer
fits. Transient failures (429, 5xx, network, timeouts) are retried with backoff, but never once
part of a streamed reply has been shown: a retry would show the user a second, different answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, aconnect_sse
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bots.errors import ContextTooLong, ModelError, ModelTimeout, ModelUnavailable
from bots.http_client import model_http_client
from bots.model import ChatMessage, ModelReply, ServerCheck, TextSink, ToolSpec, Usage
from bots.redaction import Redactor
from bots.server_errors import ServerError as _ServerError
from bots.server_errors import Transient as _Transient
from bots.server_errors import backoff_s, status_failure
from bots.server_errors import network_failures as _network_failures
from bots.settings import ModelSettings
from bots.tools import ToolCallAssembler, calls_of_message, request_tools

logger = logging.getLogger("chatbridge.model")

_DETAIL_CHARS = 300


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
        # Per-phase timeouts are only a backstop; the whole attempt is bounded by _Deadline.
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
            async with _Deadline(self._settings.timeout_s):
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
            async with _Deadline(self._settings.timeout_s) as deadline:
                sink.deadline = deadline
                if body["stream"]:
                    return await self._stream(body, sink)
                return await self._complete(body, sink)
        except _Transient as exc:
            if sink.shown:
                raise exc.error from exc.__cause__
            raise

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
        chunk = self._json_object(data, "stream chunk")
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
        return status_failure(status, error, headers, f"HTTP {status}: {self._clean(error.message) or 'no message'}")

    def _clean(self, message: str, limit: int = _DETAIL_CHARS) -> str:
        """Server text goes into logs: one line, the key masked in case it is echoed (in any of its
        encoded forms), and only then cut to ``limit``, so that no part of the key survives a cut."""
        return self._redact(" ".join(message.split()))[:limit]

    def _json_object(self, raw: bytes | str, what: str) -> dict[str, Any]:
        """``raw`` as it came: a body as bytes, an event's data as the text httpx-sse decoded (which
        json would otherwise detect the encoding of and decode again)."""
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            text = raw if isinstance(raw, str) else raw.decode(errors="replace")
            snippet = self._clean(text, 60)
            raise _Transient(ModelUnavailable(f"malformed {what}: not JSON ({snippet!r})")) from exc
        if not isinstance(payload, dict):
            raise _Transient(ModelUnavailable(f"malformed {what}: not a JSON object"))
        return payload

    # --- retries ---------------------------------------------------------------------------------

    def _wait_s(self, state: RetryCallState) -> float:
        return backoff_s(self._settings.retry_backoff_s, state)

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


class _Deadline:
    """httpx's read timeout restarts with every chunk, so a server trickling tokens could hold an
    attempt open forever; this bounds the attempt as a whole, streaming included (but not the time
    the caller's ``on_text`` takes, see ``_Sink``). A class around ``asyncio.timeout`` rather than
    a generator: it wraps every model call (see ``network_failures``)."""

    __slots__ = ("_timeout", "_timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self._timeout = asyncio.timeout(timeout_s)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> asyncio.Timeout:
        return await self._timeout.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError as expired:
            raise _Transient(ModelTimeout(f"no complete answer within {self._timeout_s:g} s")) from expired


DEADLINE_SLACK_S = 0.01
"""Time spent showing text is given back to the deadline once it adds up to this much: most pieces
are taken at once (the renderer only buffers them), and moving the deadline's timer for each piece
of a stream was a few per cent of a burst's CPU (``bench/``)."""


class _Sink:
    """Passes text to the caller's callback and remembers whether the user has seen any.

    The time the callback takes (a chat platform being slow to take an edit) is added to the
    attempt's ``deadline``: it is not the model's time, and must not make the model look slow.
    """

    __slots__ = ("_on_text", "shown", "deadline", "_owed_s")

    def __init__(self, on_text: TextSink | None) -> None:
        self._on_text = on_text
        self.shown = False
        self.deadline: asyncio.Timeout | None = None
        self._owed_s = 0.0

    async def __call__(self, text: str) -> None:
        if text and self._on_text is not None:
            self.shown = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            await self._on_text(text)
            self._owed_s += loop.time() - started
            when = self.deadline.when() if self.deadline is not None else None
            if self.deadline is not None and when is not None and self._owed_s >= DEADLINE_SLACK_S:
                self.deadline.reschedule(when + self._owed_s)
                self._owed_s = 0.0


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


async def _sse_data(source: EventSource) -> AsyncGenerator[str, None]:
    """The data of each event; network errors are converted here, so that they are not confused
    with errors raised by the consumer's own code between events."""
    with _network_failures():
        async for event in source.aiter_sse():
            if event.data:
                yield event.data


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
