"""The model client's side of the tools API, over real HTTP against the fake model.

What is checked is what the caller gets (the calls, assembled and parsed) and what the server was
sent (the tools, then the assistant's calls and the results answering them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from bots.model import ChatMessage, ToolCall, ToolSpec
from bots.openai_client import OpenAIChatModel
from bots.settings import ModelSettings
from bots.tools import (
    ToolCallAssembler,
    ToolResult,
    argument_error_result,
    assistant_message,
    tool_message,
)
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls

MESSAGES = [ChatMessage(role="user", content="weather in Paris and Rome?")]
WEATHER = ToolSpec(
    name="weather__forecast",
    description="The forecast for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    read_only=True,
    source="weather",
)
NOTE = ToolSpec(name="notes__add", description="", parameters={"type": "object", "properties": {}})

MakeClient = Callable[..., OpenAIChatModel]


@pytest_asyncio.fixture
async def make_client(fake_model: FakeModel) -> AsyncIterator[MakeClient]:
    clients: list[OpenAIChatModel] = []

    def make(**overrides: Any) -> OpenAIChatModel:
        values: dict[str, Any] = {"base_url": fake_model.base_url, "name": "fake-model", "max_retries": 0}
        client = OpenAIChatModel(ModelSettings.model_validate({**values, **overrides}))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


class Pieces(list[str]):
    async def __call__(self, text: str) -> None:
        self.append(text)


PARIS = {"city": "Paris", "days": 3, "note": "a longer value, so that it is cut into many fragments"}
ROME = {"city": "Rome"}


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_calls_are_assembled_from_streamed_fragments(
    fake_model: FakeModel, make_client: MakeClient, interleave: bool
) -> None:
    calls = [FakeCall("weather__forecast", PARIS, id="call_a"), FakeCall("weather__forecast", ROME, id="call_b")]
    fake_model.script(ToolCalls(calls, fragment_chars=3, interleave=interleave))
    pieces = Pieces()

    reply = await make_client().reply(MESSAGES, pieces, tools=[WEATHER, NOTE])

    assert [(c.id, c.name, dict(c.arguments), c.argument_error) for c in reply.tool_calls] == [
        ("call_a", "weather__forecast", PARIS, None),
        ("call_b", "weather__forecast", ROME, None),
    ]
    assert reply.finish_reason == "tool_calls"
    assert (reply.text, pieces) == ("", [])
    assert reply.usage is not None
    assert fake_model.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather__forecast",
                "description": "The forecast for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        },
        {"type": "function", "function": {"name": "notes__add", "parameters": {"type": "object", "properties": {}}}},
    ]


async def test_calls_of_a_non_streamed_reply_and_text_beside_them(
    fake_model: FakeModel, make_client: MakeClient
) -> None:
    fake_model.script(ToolCalls([FakeCall("weather__forecast", ROME), FakeCall("notes__add")], text="Let me look."))
    pieces = Pieces()

    reply = await make_client(stream=False).reply(MESSAGES, pieces, tools=[WEATHER, NOTE])

    assert [(c.name, dict(c.arguments)) for c in reply.tool_calls] == [("weather__forecast", ROME), ("notes__add", {})]
    assert all(call.id.startswith("call_") for call in reply.tool_calls)
    assert (reply.text, pieces, reply.finish_reason) == ("Let me look.", ["Let me look."], "tool_calls")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("arguments", "problem"),
    [('{"city": "Par', "not valid JSON"), ("[1, 2]", "not a JSON object but list"), ('"Paris"', "but str")],
)
async def test_unreadable_arguments_become_an_error_value_not_a_crash(
    fake_model: FakeModel, make_client: MakeClient, stream: bool, arguments: str, problem: str
) -> None:
    fake_model.script(ToolCalls([FakeCall("weather__forecast", arguments), FakeCall("notes__add", {"x": 1})]))

    reply = await make_client(stream=stream).reply(MESSAGES, tools=[WEATHER, NOTE])

    broken, fine = reply.tool_calls
    assert broken.argument_error is not None and problem in broken.argument_error
    assert (dict(broken.arguments), broken.arguments_json) == ({}, arguments)
    assert (dict(fine.arguments), fine.argument_error) == ({"x": 1}, None)
    told = argument_error_result(broken)
    assert told.is_error and "weather__forecast" in told.text and problem in told.text


@pytest.mark.parametrize("stream", [True, False])
async def test_calls_and_results_are_sent_back_in_the_wire_shape(
    fake_model: FakeModel, make_client: MakeClient, stream: bool
) -> None:
    calls = [FakeCall("weather__forecast", PARIS, id="call_p"), FakeCall("weather__forecast", ROME, id="call_r")]
    fake_model.script(ToolCalls(calls), Reply(text="Sunny in both."))
    client = make_client(stream=stream)

    first = await client.reply(MESSAGES, tools=[WEATHER])
    results = [ToolResult("Paris: sun"), ToolResult("error: Rome is not known", is_error=True)]
    follow_up = [
        *MESSAGES,
        assistant_message(first.text, first.tool_calls),
        *(tool_message(call, result) for call, result in zip(first.tool_calls, results, strict=True)),
    ]
    second = await client.reply(follow_up, tools=[WEATHER])

    assert (second.text, second.tool_calls) == ("Sunny in both.", ())
    sent = fake_model.requests[1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_p",
                "type": "function",
                "function": {"name": "weather__forecast", "arguments": calls[0].arguments_text()},
            },
            {
                "id": "call_r",
                "type": "function",
                "function": {"name": "weather__forecast", "arguments": '{"city": "Rome"}'},
            },
        ],
    }
    assert fake_model.tool_messages()[1] == [
        {"role": "tool", "content": "Paris: sun", "tool_call_id": "call_p"},
        {"role": "tool", "content": "error: Rome is not known", "tool_call_id": "call_r"},
    ]
    assert fake_model.tools_offered() == [["weather__forecast"], ["weather__forecast"]]


async def test_a_request_without_tools_offers_none(fake_model: FakeModel, make_client: MakeClient) -> None:
    reply = await make_client().reply(MESSAGES)

    assert reply.tool_calls == ()
    assert "tools" not in fake_model.requests[0]


def test_pieces_without_an_index_are_told_apart_by_their_id() -> None:
    """A few servers send each call whole in one piece and leave the index out."""
    assembler = ToolCallAssembler()
    assembler.add([{"id": "a", "function": {"name": "one", "arguments": '{"n": '}}])
    assembler.add([{"function": {"arguments": "1}"}}])
    assembler.add([{"id": "b", "function": {"name": "two", "arguments": "{}"}}])
    assembler.add("not a list")

    assert assembler.result() == (ToolCall("a", "one", '{"n": 1}', {"n": 1}), ToolCall("b", "two", "{}", {}))
