"""The OpenAI-compatible model client against the fake model server, over real HTTP.

Assertions are on what the caller gets (reply, pieces of text, error kind) and on what the server
saw (how many requests, their bodies and headers), which is where retries become visible.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bots.errors import ContextTooLong, ModelAccessDenied, ModelError, ModelRateLimited, ModelTimeout, ModelUnavailable
from bots.model import ChatMessage, Usage
from bots.openai_client import OpenAIChatModel
from bots.settings import ModelSettings
from tests.fakes.fake_model import CutStream, FakeModel, Hang, Malformed, Reply, Status, Step

KEY = "sk-test-9f8e7d6c5b4a"
MESSAGES = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hello there")]
PROMPT_TOKENS = (len("be brief") + len("hello there")) // 4 + 4 * 2  # the fake's counting rule

MakeClient = Callable[..., OpenAIChatModel]


@pytest_asyncio.fixture
async def make_client(fake_model: FakeModel) -> AsyncIterator[MakeClient]:
    """Clients for the fake server; keyword arguments override ``ModelSettings`` fields."""
    clients: list[OpenAIChatModel] = []

    def make(**overrides: Any) -> OpenAIChatModel:
        values: dict[str, Any] = {
            "base_url": fake_model.base_url,
            "api_key": KEY,
            "name": "fake-model",
            "temperature": 0.3,
            "max_tokens": 64,
            "timeout_s": 2.0,
            "max_retries": 2,
            "retry_backoff_s": 0.01,
        }
        client = OpenAIChatModel(ModelSettings.model_validate({**values, **overrides}))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


class Pieces(list[str]):
    """An ``on_text`` callback that keeps what it was given."""

    async def __call__(self, text: str) -> None:
        self.append(text)


def completion_tokens(text: str) -> int:
    return len(text) // 4 + 1


def error_text(exc: BaseException) -> str:
    """Everything a log line or traceback could show about an error, its causes included."""
    return "".join(traceback.format_exception(exc)) + getattr(exc, "detail", "")


# --- replies ------------------------------------------------------------------------------------


async def test_streamed_reply_arrives_in_pieces_with_usage(fake_model: FakeModel, make_client: MakeClient) -> None:
    text = "Hello, streaming world"
    fake_model.script(Reply(text=text, chunk_chars=5))
    pieces = Pieces()

    reply = await make_client().reply(MESSAGES, pieces)

    assert pieces == ["Hello", ", str", "eamin", "g wor", "ld"]
    assert reply.text == text
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=completion_tokens(text))
    sent = fake_model.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "fake-model"
    assert sent["temperature"] == 0.3
    assert sent["max_tokens"] == 64
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


async def test_non_streamed_reply_is_passed_on_once(fake_model: FakeModel, make_client: MakeClient) -> None:
    pieces = Pieces()

    reply = await make_client(stream=False).reply(MESSAGES, pieces)

    assert pieces == ["echo: hello there"]
    assert reply.text == "echo: hello there"
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=completion_tokens(reply.text))
    assert fake_model.requests[0]["stream"] is False
    assert "stream_options" not in fake_model.requests[0]


@pytest.mark.parametrize("stream", [True, False])
async def test_reply_without_a_callback_and_a_length_cut(
    fake_model: FakeModel, make_client: MakeClient, stream: bool
) -> None:
    fake_model.script(Reply(text="cut short", finish_reason="length"))

    reply = await make_client(stream=stream).reply(MESSAGES)

    assert (reply.text, reply.finish_reason) == ("cut short", "length")


async def test_api_key_is_sent_as_bearer_token_only_when_set(fake_model: FakeModel, make_client: MakeClient) -> None:
    await make_client().reply(MESSAGES)
    await make_client(api_key="").reply(MESSAGES)

    assert fake_model.auth_headers == [f"Bearer {KEY}", None]


async def test_trailing_slash_of_base_url_is_ignored(fake_model: FakeModel, make_client: MakeClient) -> None:
    reply = await make_client(base_url=fake_model.base_url + "/").reply(MESSAGES)

    assert reply.text == "echo: hello there"


# --- retries ------------------------------------------------------------------------------------


async def test_rate_limit_is_retried_no_sooner_than_retry_after(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(Status(429, headers={"Retry-After": "0.2"}), Reply(text="finally"))

    started = time.monotonic()
    reply = await make_client().reply(MESSAGES)

    assert time.monotonic() - started >= 0.2
    assert reply.text == "finally"
    assert len(fake_model.requests) == 2


async def test_rate_limit_through_every_retry_is_reported(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(*[Status(429)] * 3)

    with pytest.raises(ModelRateLimited, match="HTTP 429"):
        await make_client(max_retries=2).reply(MESSAGES)

    assert len(fake_model.requests) == 3


@pytest.mark.parametrize("retry_after", ["3600", formatdate(time.time() + 3600, usegmt=True)])
async def test_retry_after_too_far_away_fails_at_once(
    fake_model: FakeModel, make_client: MakeClient, retry_after: str
) -> None:
    fake_model.script(Status(429, headers={"Retry-After": retry_after}))

    with pytest.raises(ModelRateLimited, match="not waiting"):
        await make_client().reply(MESSAGES)

    assert len(fake_model.requests) == 1


async def test_server_errors_are_retried_and_logged_without_the_key(
    fake_model: FakeModel, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake_model.script(Status(500), Status(503, {"error": {"message": f"overloaded for {KEY}"}}), Reply(text="ok"))

    with caplog.at_level(logging.WARNING, logger="chatbridge.model"):
        reply = await make_client(max_retries=2).reply(MESSAGES)

    assert reply.text == "ok"
    assert len(fake_model.requests) == 3
    retries = [record.getMessage() for record in caplog.records if record.name == "chatbridge.model"]
    assert len(retries) == 2
    assert "HTTP 503" in retries[1]
    assert all(KEY not in message for message in retries)


async def test_server_errors_through_every_retry_are_reported(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(Status(502), Status(500))

    with pytest.raises(ModelUnavailable, match="HTTP 500"):
        await make_client(max_retries=1).reply(MESSAGES)

    assert len(fake_model.requests) == 2


async def test_without_retries_a_server_error_is_reported_after_one_request(
    fake_model: FakeModel, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake_model.script(Status(500), Reply(text="never asked for"))

    with caplog.at_level(logging.WARNING, logger="chatbridge.model"), pytest.raises(ModelUnavailable, match="HTTP 500"):
        await make_client(max_retries=0).reply(MESSAGES)

    assert len(fake_model.requests) == 1
    assert not [record for record in caplog.records if record.name == "chatbridge.model"]


async def test_refused_connection_is_unavailable(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # Not a timeout, though the aiohttp transport reports it as httpx.ConnectTimeout.
    with pytest.raises(ModelUnavailable, match="Cannot connect"):
        await make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1).reply(MESSAGES)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_server_that_hangs_up_without_answering_is_unavailable(make_client: MakeClient, stream: bool) -> None:
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ModelUnavailable, match="ServerDisconnected"):
            await make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, stream=stream).reply(MESSAGES)
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == 2


# --- errors that are not retried ----------------------------------------------------------------


async def test_exhausted_quota_is_access_denied_without_retry(fake_model: FakeModel, make_client: MakeClient) -> None:
    quota = {
        "error": {
            "message": "You exceeded your current quota",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
    fake_model.script(Status(429, quota))

    with pytest.raises(ModelAccessDenied, match="exceeded your current quota"):
        await make_client().reply(MESSAGES)

    assert len(fake_model.requests) == 1


@pytest.mark.parametrize("code", [401, 402, 403])
async def test_refused_key_or_payment_is_access_denied(
    fake_model: FakeModel, make_client: MakeClient, code: int
) -> None:
    fake_model.script(Status(code))

    with pytest.raises(ModelAccessDenied, match=f"HTTP {code}"):
        await make_client().reply(MESSAGES)

    assert len(fake_model.requests) == 1


CONTEXT_ERRORS = {
    "openai": (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens.",
                "code": "context_length_exceeded",
            }
        },
    ),
    "llama.cpp": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
            }
        },
    ),
    "vllm": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens",
            "code": 400,
        },
    ),
    "ollama": (400, {"error": "input length exceeds the context length"}),
    "mistral": (
        400,
        {"error": {"message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length"}},
    ),
    "tgi": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096"}),
}


@pytest.mark.parametrize(("code", "body"), CONTEXT_ERRORS.values(), ids=CONTEXT_ERRORS.keys())
async def test_context_length_errors_are_recognised(
    fake_model: FakeModel, make_client: MakeClient, code: int, body: dict[str, Any]
) -> None:
    fake_model.script(Status(code, body))

    with pytest.raises(ContextTooLong):
        await make_client().reply(MESSAGES)

    assert len(fake_model.requests) == 1


async def test_other_client_errors_are_unavailable_without_retry(
    fake_model: FakeModel, make_client: MakeClient
) -> None:
    fake_model.script(Status(404, {"error": {"message": "The model `nope` does not exist", "code": "model_not_found"}}))

    with pytest.raises(ModelUnavailable, match="HTTP 404: The model `nope` does not exist"):
        await make_client().reply(MESSAGES)

    assert len(fake_model.requests) == 1


# --- broken answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_malformed_answers_are_retried_then_unavailable(
    fake_model: FakeModel, make_client: MakeClient, stream: bool
) -> None:
    fake_model.script(Malformed(), Malformed())

    with pytest.raises(ModelUnavailable, match="malformed"):
        await make_client(stream=stream, max_retries=1).reply(MESSAGES)

    assert len(fake_model.requests) == 2


async def test_stream_cut_after_shown_text_is_not_retried(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(CutStream(text="partial"), Reply(text="must not be requested"))
    pieces = Pieces()

    with pytest.raises(ModelUnavailable):
        await make_client().reply(MESSAGES, pieces)

    assert pieces == ["partial"]
    assert len(fake_model.requests) == 1


async def test_non_streamed_answer_cut_mid_body_is_retried(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(CutStream(), Reply(text="whole"))
    pieces = Pieces()

    reply = await make_client(stream=False).reply(MESSAGES, pieces)

    assert reply.text == "whole"
    assert pieces == ["whole"]
    assert len(fake_model.requests) == 2


async def test_stream_cut_before_anything_was_shown_is_retried(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(CutStream(text="partial"), Reply(text="whole"))

    reply = await make_client().reply(MESSAGES)

    assert reply.text == "whole"
    assert len(fake_model.requests) == 2


async def test_callback_errors_are_not_taken_for_model_errors(fake_model: FakeModel, make_client: MakeClient) -> None:
    async def failing(text: str) -> None:
        raise httpx.ReadError("the chat platform went away")

    with pytest.raises(httpx.ReadError, match="chat platform"):
        await make_client().reply(MESSAGES, failing)

    assert len(fake_model.requests) == 1


# --- deadlines ----------------------------------------------------------------------------------


async def test_a_hanging_server_times_out_on_every_attempt(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(Hang(), Hang())

    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await make_client(timeout_s=0.3, max_retries=1).reply(MESSAGES)

    assert time.monotonic() - started >= 0.6
    assert len(fake_model.requests) == 2


async def test_the_deadline_covers_a_trickling_stream(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.script(Reply(text="slow " * 10, chunk_chars=5, chunk_delay_s=0.1))
    pieces = Pieces()

    with pytest.raises(ModelTimeout):
        await make_client(timeout_s=0.35).reply(MESSAGES, pieces)

    assert 1 <= len(pieces) < 10
    assert len(fake_model.requests) == 1  # text was shown, so no retry


async def test_time_spent_showing_the_text_is_not_charged_to_the_model(
    fake_model: FakeModel, make_client: MakeClient
) -> None:
    """A platform slow to take each edit must not turn a quick model into a model timeout."""
    fake_model.script(Reply(text="quick " * 10, chunk_chars=6))

    class SlowPlatform(Pieces):
        async def __call__(self, text: str) -> None:
            await asyncio.sleep(0.1)
            await super().__call__(text)

    pieces = SlowPlatform()
    reply = await make_client(timeout_s=0.5).reply(MESSAGES, pieces)
    assert reply.text == "quick " * 10 and len(pieces) == 10  # a second of showing, in a 0.5 s deadline


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "overrides"),
    [
        ([Status(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})], {}),
        ([Status(429, {"error": {"message": f"Rate limit reached for {KEY}"}})] * 2, {}),
        ([Status(500, {"error": f"crash while serving {KEY}"})] * 2, {}),
        ([Status(400, {"error": {"message": f"maximum context length exceeded for {KEY}"}})], {}),
        ([Malformed()] * 2, {}),
        ([CutStream()], {}),
        ([Hang()] * 2, {"timeout_s": 0.2}),
    ],
    ids=["401", "429", "500", "context", "malformed", "cut", "hang"],
)
async def test_the_api_key_never_appears_in_an_error(
    fake_model: FakeModel, make_client: MakeClient, steps: list[Step], overrides: dict[str, Any]
) -> None:
    fake_model.script(*steps)

    with pytest.raises(ModelError) as caught:
        await make_client(max_retries=1, **overrides).reply(MESSAGES, Pieces())

    assert KEY not in error_text(caught.value)


async def test_a_key_echoed_where_the_detail_is_cut_is_masked_before_the_cut(
    fake_model: FakeModel, make_client: MakeClient
) -> None:
    """Cut first and masked after, the key's first half would survive the cut unrecognised."""
    echoed = {"error": {"message": "x" * 290 + KEY + " y"}}
    fake_model.script(Status(400, echoed), Malformed())

    with pytest.raises(ModelError) as caught:
        await make_client(max_retries=0).reply(MESSAGES, Pieces())
    assert "***" in error_text(caught.value) and KEY[:8] not in error_text(caught.value)


# --- check --------------------------------------------------------------------------------------


async def test_check_lists_the_models(fake_model: FakeModel, make_client: MakeClient) -> None:
    checked = await make_client().check()
    assert checked.detail == "model server answered; 1 model listed"
    assert checked.listed == ("fake-model",)
    fake_model.models = ["llama3:latest", "qwen2.5:7b"]
    checked = await make_client().check()
    assert checked.listed == ("llama3:latest", "qwen2.5:7b")
    assert [checked.leaves_out(name) for name in ("llama3", "qwen2.5:7b", "qwen2.5", "fake-model")] == [
        False,
        False,
        True,
        True,
    ]
    assert fake_model.requests == []


async def test_check_without_v1_in_the_url_suggests_it(fake_model: FakeModel, make_client: MakeClient) -> None:
    """The server's own 404s ("404: Not Found") say nothing about what to change."""
    root = fake_model.base_url.removesuffix("/v1")

    with pytest.raises(ModelUnavailable) as raised:
        await make_client(base_url=root).check()

    assert str(raised.value) == f"{root} answered 404 at /models and /chat/completions: add /v1?"


async def test_check_with_v1_passes_on_what_the_404_says(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.list_models = False
    fake_model.script(
        Status(404, {"error": {"message": "The model `gpt-9` does not exist", "code": "model_not_found"}})
    )

    with pytest.raises(ModelUnavailable) as raised:
        await make_client(name="gpt-9").check()

    assert str(raised.value) == (
        f"{fake_model.base_url} answered 404 at /models and /chat/completions: The model `gpt-9` does not exist"
    )


async def test_check_falls_back_to_a_one_token_completion(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.list_models = False

    checked = await make_client().check()

    assert "one-token completion" in checked.detail and checked.listed is None
    assert [(body["max_tokens"], body["stream"]) for body in fake_model.requests] == [(1, False)]


async def test_check_reports_a_refused_key(fake_model: FakeModel, make_client: MakeClient) -> None:
    fake_model.list_models = False
    fake_model.script(Status(401))

    with pytest.raises(ModelAccessDenied):
        await make_client().check()


# --- ownership ----------------------------------------------------------------------------------


async def test_a_shared_http_client_is_left_open(fake_model: FakeModel) -> None:
    async with httpx.AsyncClient() as http:
        settings = ModelSettings.model_validate({"base_url": fake_model.base_url, "name": "fake-model"})
        model = OpenAIChatModel(settings, http_client=http)
        assert (await model.reply(MESSAGES)).text == "echo: hello there"
        await model.aclose()
        assert not http.is_closed
