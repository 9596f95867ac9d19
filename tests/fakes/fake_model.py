"""A local fake of an OpenAI-compatible chat-completions server, for tests.

It speaks the real wire format (JSON bodies, SSE streams, error objects, ``Retry-After``) over real
HTTP on 127.0.0.1, so the production client runs its own code path against it. Tests queue what the
next requests should get with ``script``; once the queue is empty every request gets an echo of its
last user message, which keeps engine tests readable without scripting each turn. ``ToolCalls``
answers with tool calls, streamed in argument fragments as real servers send them.

It also serves ``/v1/audio/transcriptions`` (a scripted transcript for each file, the multipart
upload recorded) and ``/v1/audio/speech`` (Ogg/Opus-looking bytes, the text and voice recorded);
``audio_endpoints = False`` makes both answer 404, like a chat-only server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL_ID = "fake-model"


@dataclass
class Reply:
    """A normal answer. ``text=None`` echoes the last user message like the default reply."""

    text: str | None = None
    finish_reason: str = "stop"
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_chars: int = 4


@dataclass
class FakeCall:
    """One tool call of a ``ToolCalls`` reply. A dict ``arguments`` is sent as its JSON; a string is
    sent as it is, so a test can send arguments that are not valid JSON."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class ToolCalls:
    """A reply that asks for the ``calls`` (several: parallel calls of one round), after ``text``.

    Streamed, each call's first piece brings its index, id and name, and its arguments follow in
    pieces of ``fragment_chars``; with ``interleave`` the pieces of the calls take turns, which the
    client must put back together by index.
    """

    calls: list[FakeCall]
    text: str = ""
    finish_reason: str = "tool_calls"
    fragment_chars: int = 5
    interleave: bool = False


@dataclass
class Status:
    """An error answer. Without ``json_body`` the body is an OpenAI-style error object."""

    code: int
    json_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Malformed:
    """A 200 whose body (or SSE data line, when streaming) is not valid JSON."""


@dataclass
class CutStream:
    """Streams ``text`` and then drops the connection: no finish_reason, no ``[DONE]``.

    To a non-streaming request it sends half of the JSON body before dropping the connection.
    """

    text: str = "partial"


@dataclass
class Hang:
    """Accepts the request and never answers, until the server stops."""


Step = Reply | ToolCalls | Status | Malformed | CutStream | Hang

SPEECH_BYTES = b"OggS\x00\x02" + bytes(22) + b"OpusHead" + bytes(64)
"""What ``/v1/audio/speech`` answers: the start of an Ogg/Opus file (OpenAI's ``opus`` format)."""
IMAGE_TOKENS = 85
"""What the fake charges per image part (OpenAI's ``detail: low`` figure), so tests can assert usage."""


@dataclass
class Transcription:
    """One upload to ``/v1/audio/transcriptions``."""

    file_name: str
    content_type: str
    size: int
    model: str
    data: bytes = field(repr=False)


@dataclass
class Speech:
    """One request to ``/v1/audio/speech``."""

    input: str
    voice: str
    model: str
    response_format: str


class FakeModel:
    """The fake server.

    ``requests`` and ``auth_headers`` record every chat-completions call in arrival order, failed
    ones included. ``default_delay_s`` is the latency of unscripted replies. ``GET /v1/models`` lists
    ``models``; ``list_models = False`` makes it answer 404, like the servers and proxies that lack it.
    """

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.default_delay_s = 0.0
        self.list_models = True
        self.models = [MODEL_ID]
        self.audio_endpoints = True
        self.transcriptions: list[Transcription] = []
        self.speeches: list[Speech] = []
        self.audio_auth_headers: list[str | None] = []
        self.transcripts: deque[str | Status] = deque()
        """What the next transcriptions answer; when empty, "transcript of <file name>"."""
        self.speech_failures: deque[Status] = deque()
        self.first_content_at: list[float] = []
        """``time.monotonic()`` when each stream wrote its first piece of text (for benchmarks)."""
        self.finished_at: list[float] = []
        """``time.monotonic()`` when each stream of text wrote its ``[DONE]``."""
        self._steps: deque[Step] = deque()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def script(self, *steps: Step) -> None:
        """Queue answers; each chat-completions request takes the oldest one."""
        self._steps.extend(steps)

    def user_texts(self) -> list[str]:
        """The last user message of each request, which is what most assertions care about."""
        return [_last_user_text(body) for body in self.requests]

    def user_images(self) -> list[list[str]]:
        """The image URLs (``data:`` URLs as sent) of each request's last user message."""
        return [_last_user_images(body) for body in self.requests]

    def tools_offered(self) -> list[list[str]]:
        """The names of the tools each request offered (empty when it offered none)."""
        return [[tool["function"]["name"] for tool in body.get("tools") or []] for body in self.requests]

    def tool_messages(self) -> list[list[dict[str, Any]]]:
        """The ``tool`` role messages (results sent back) of each request."""
        return [[m for m in body.get("messages") or [] if m.get("role") == "tool"] for body in self.requests]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        # handler_cancellation: a client that gives up (timeout) ends its handler, so hanging or
        # slow requests do not pile up; a short shutdown_timeout keeps stop() quick as a backstop.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        # A deep accept queue: with aiohttp's default of 128, a burst of 1,000 new connections
        # overflows it and the rest wait a whole SYN retransmission (1 s) to get in.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"

    async def __aenter__(self) -> FakeModel:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Release hanging and delayed handlers first, so shutdown does not wait on them."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers -------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if not self.list_models:
            return web.json_response(_error_body("not found"), status=404)
        listing = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.models]
        return web.json_response({"object": "list", "data": listing})

    async def _transcriptions(self, request: web.Request) -> web.Response:
        """Multipart as OpenAI takes it: ``file`` and ``model`` (400 when either is missing)."""
        if not self.audio_endpoints:
            return web.json_response(_error_body("not found"), status=404)
        self.audio_auth_headers.append(request.headers.get("Authorization"))
        form = await request.post()
        upload, model = form.get("file"), form.get("model")
        if not isinstance(upload, web.FileField) or not isinstance(model, str):
            return web.json_response(_error_body("file and model are required"), status=400)
        data = upload.file.read()
        self.transcriptions.append(Transcription(upload.filename, upload.content_type, len(data), model, data))
        scripted = self.transcripts.popleft() if self.transcripts else f"transcript of {upload.filename}"
        if isinstance(scripted, Status):
            return _status_response(scripted)
        return web.json_response({"text": scripted})

    async def _speech(self, request: web.Request) -> web.Response:
        if not self.audio_endpoints:
            return web.json_response(_error_body("not found"), status=404)
        self.audio_auth_headers.append(request.headers.get("Authorization"))
        body = await _json_body(request)
        if not body.get("input") or not body.get("model"):
            return web.json_response(_error_body("input and model are required"), status=400)
        if self.speech_failures:
            return _status_response(self.speech_failures.popleft())
        fmt = str(body.get("response_format") or "mp3")
        self.speeches.append(Speech(str(body["input"]), str(body.get("voice") or ""), str(body["model"]), fmt))
        return web.Response(body=SPEECH_BYTES, content_type="audio/ogg" if fmt == "opus" else "audio/mpeg")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        self.requests.append(body)
        self.auth_headers.append(request.headers.get("Authorization"))
        step = self._steps.popleft() if self._steps else Reply(delay_s=self.default_delay_s)
        streaming = body.get("stream") is True
        match step:
            case Hang():
                await self._stopping.wait()
                return web.json_response(_error_body("fake model stopped"), status=503)
            case Status():
                return _status_response(step)
            case Malformed():
                return await self._malformed(request, streaming)
            case CutStream():
                return await self._cut_stream(request, body, step.text, streaming)
            case Reply():
                await self._pause(step.delay_s)
                reply = _Completion(body, step)
                if streaming:
                    return await self._stream(request, reply, step)
                return web.json_response(reply.completion())
            case ToolCalls():
                reply = _Completion(body, Reply(text=step.text, finish_reason=step.finish_reason), step.calls)
                if streaming:
                    return await self._stream_calls(request, reply, step)
                return web.json_response(reply.completion())

    async def _stream(self, request: web.Request, reply: _Completion, step: Reply) -> web.StreamResponse:
        response = await _open_sse(request)
        events = [reply.chunk({"role": "assistant", "content": ""})]
        size = max(step.chunk_chars, 1)
        events += [reply.chunk({"content": reply.text[i : i + size]}) for i in range(0, len(reply.text), size)]
        events.append(reply.chunk({}, finish_reason=step.finish_reason))
        if reply.include_usage:
            events.append(reply.usage_chunk())
        for index, event in enumerate(events):
            if index and step.chunk_delay_s:
                await self._pause(step.chunk_delay_s)
            if index == 1:
                self.first_content_at.append(time.monotonic())
            await _send(response, json.dumps(event))
        await _send(response, "[DONE]")
        self.finished_at.append(time.monotonic())
        return response

    async def _stream_calls(self, request: web.Request, reply: _Completion, step: ToolCalls) -> web.StreamResponse:
        response = await _open_sse(request)
        events = [reply.chunk({"role": "assistant", "content": step.text or None})]
        pieces = [reply.call_pieces(index, call, step.fragment_chars) for index, call in enumerate(step.calls)]
        if step.interleave:
            ordered = [piece for turn in itertools.zip_longest(*pieces) for piece in turn if piece is not None]
        else:
            ordered = [piece for call_pieces in pieces for piece in call_pieces]
        events += [reply.chunk({"tool_calls": [piece]}) for piece in ordered]
        events.append(reply.chunk({}, finish_reason=step.finish_reason))
        if reply.include_usage:
            events.append(reply.usage_chunk())
        for event in events:
            await _send(response, json.dumps(event))
        await _send(response, "[DONE]")
        return response

    async def _malformed(self, request: web.Request, streaming: bool) -> web.StreamResponse:
        if not streaming:
            return web.Response(text='{"choices": [', content_type="application/json")
        response = await _open_sse(request)
        await _send(response, '{"choices": [{"delta": ')
        await _send(response, "[DONE]")
        return response

    async def _cut_stream(
        self, request: web.Request, body: dict[str, Any], text: str, streaming: bool
    ) -> web.StreamResponse:
        """Streaming: one chunk carrying ``text``. Not streaming: the first half of the JSON body."""
        reply = _Completion(body, Reply(text=text))
        if streaming:
            response = await _open_sse(request)
            await _send(response, json.dumps(reply.chunk({"role": "assistant", "content": text})))
        else:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            whole = json.dumps(reply.completion()).encode()
            await response.write(whole[: len(whole) // 2])
        # Closing the socket mid-body leaves the chunked encoding unterminated, as a crashed or
        # restarted server does; aiohttp's own write_eof afterwards meets a closed transport and
        # is ignored.
        if request.transport is not None:
            request.transport.close()
        return response

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake early when the server stops, so stop() never waits out a long delay."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)


class _Completion:
    """One reply's text and usage, rendered as a chat.completion or as its chunks."""

    def __init__(self, body: dict[str, Any], step: Reply, calls: list[FakeCall] | None = None) -> None:
        self.text = step.text if step.text is not None else "echo: " + _last_user_text(body)
        self.calls = calls or []
        self.call_ids = [call.id or f"call_{uuid.uuid4().hex[:8]}" for call in self.calls]
        self.finish_reason = step.finish_reason
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._model = body.get("model") or MODEL_ID
        self._id = "chatcmpl-" + uuid.uuid4().hex[:12]
        self._created = int(time.time())
        self._usage = _usage(body, self.text)

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["content"] = self.text or None  # as OpenAI sends it when the reply is only calls
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_text()}}
                for call_id, call in zip(self.call_ids, self.calls, strict=True)
            ]
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self._usage}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice]}

    def call_pieces(self, index: int, call: FakeCall, fragment_chars: int) -> list[dict[str, Any]]:
        """A call as streamed: the first piece names it, the others carry its arguments in fragments."""
        function = {"name": call.name, "arguments": ""}
        first = {"index": index, "id": self.call_ids[index], "type": "function", "function": function}
        text, size = call.arguments_text(), max(fragment_chars, 1)
        rest = [{"index": index, "function": {"arguments": text[i : i + size]}} for i in range(0, len(text), size)]
        return [first, *rest]

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self._usage}

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self._id, "object": kind, "created": self._created, "model": self._model}


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    """A deterministic stand-in for token counts, so tests can assert exact figures."""
    messages = body.get("messages") or []
    characters = sum(len(_text(message.get("content"))) for message in messages)
    images = sum(len(_images(message.get("content"))) for message in messages)
    prompt = characters // 4 + 4 * len(messages) + IMAGE_TOKENS * images
    completion = len(text) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message; of a list of parts, its text parts joined."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _last_user_images(body: dict[str, Any]) -> list[str]:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _images(message.get("content"))
    return []


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(part.get("text") or "") for part in content if part.get("type") == "text")
    return str(content or "")


def _images(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str((part.get("image_url") or {}).get("url")) for part in content if part.get("type") == "image_url"]


def _error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}


def _status_response(step: Status) -> web.Response:
    body = step.json_body if step.json_body is not None else _error_body(f"fake status {step.code}")
    return web.json_response(body, status=step.code, headers=step.headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request body; a body that is not a JSON object is recorded as ``{}`` rather than crashing."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, data: str) -> None:
    await response.write(f"data: {data}\n\n".encode())


async def _serve_until_stdin_closes(delay_s: float) -> None:
    """Run on its own: print the base URL, answer with echoes until standard input closes."""
    server = FakeModel()
    server.default_delay_s = delay_s
    await server.start()
    print(server.base_url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server that echoes, for trying chatbridge.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    asyncio.run(_serve_until_stdin_closes(parser.parse_args().delay))
