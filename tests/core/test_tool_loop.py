"""The tool loop through the engine: the real model client against the fake model scripting tool
calls, the real MCP test server over streamable HTTP, a real store.

Assertions are on what the user sees, what the model was sent (its tools, the results) and what is
stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bots.openai_client import OpenAIChatModel
from chatbridge.metrics import BridgeMetrics
from core import texts
from core.calendar import BudgetCalendar
from core.engine import Outcome
from core.store import Turn, Verdict
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore
from core.tool_loop import DECLINED, NOT_ASKED, PENDING_AT_RESTART, RESULT_CAP_CHARS
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, Status, ToolCalls, _usage
from tests.fakes.mcp_servers import HttpMcpServer
from tests.kit.channel import RecordingChannel
from tests.kit.engine import private
from tests.kit.stores import admission, queued
from tests.kit.tools import tool_engine, tools_for

ALICE, BOB = "telegram:1001", "telegram:1002"


@pytest_asyncio.fixture
async def mcp() -> AsyncIterator[HttpMcpServer]:
    async with HttpMcpServer() as server:
        yield server


class ConfirmingChannel(RecordingChannel):
    """A channel that can ask; ``answer`` is what the asker says (None: they never answer)."""

    def __init__(self, answer: bool | None) -> None:
        super().__init__()
        self.answer = answer
        self.questions: list[tuple[str, str, float]] = []
        self.shown: list[str] = []
        """Every text a message showed, in order, edits included."""

    async def send(self, text: str) -> object:
        self.shown.append(text)
        return await super().send(text)

    async def edit(self, handle: object, text: str) -> None:
        self.shown.append(text)
        await super().edit(handle, text)

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        self.questions.append((question, asker, timeout_s))
        if self.answer is None:
            await asyncio.sleep(timeout_s)
            return False
        return self.answer


async def test_a_read_only_tool_runs_without_asking_and_the_answer_replaces_the_status(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "otter"})]), Reply("Otters are mustelids."))
    channel = ConfirmingChannel(answer=False)
    async with tools_for(mcp.url) as tools:
        outcome = await tool_engine(store, model, tools).handle(private("what is an otter?", ALICE), channel)

    assert outcome is Outcome.ANSWERED
    assert channel.text == "Otters are mustelids."
    assert any('using kb__lookup: {"query": "otter"}' in text for text in channel.shown), channel.shown
    assert channel.questions == []
    assert "kb__lookup" in fake_model.tools_offered()[0]
    assert fake_model.tool_messages()[1][0]["content"] == "found: otter"
    assert fake_model.tools_offered()[1], "the request after a round offers the tools again"


async def test_a_writing_tool_runs_only_once_the_asker_allows_it(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "buy milk"})]), Reply("Noted."))
    channel = ConfirmingChannel(answer=True)
    async with tools_for(mcp.url, timeout_s=3) as tools:
        await tool_engine(store, model, tools).handle(private("note: buy milk", ALICE), channel)

    assert mcp.notes.texts == ["buy milk"]
    [(question, asker, timeout_s)] = channel.questions
    assert "kb__add_note" in question and "buy milk" in question and asker == ALICE and timeout_s == 3
    assert channel.text == "Noted."


async def test_a_declined_or_unanswered_writing_tool_does_not_run_and_the_model_is_told(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    async with tools_for(mcp.url, timeout_s=0.3) as tools:
        engine = tool_engine(store, model, tools)
        for answer in (False, None):
            fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("I did not write it."))
            channel = ConfirmingChannel(answer)
            await engine.handle(private("note x", ALICE), channel)
            assert channel.text == "I did not write it."
            assert fake_model.tool_messages()[-1][-1]["content"] == DECLINED

    assert mcp.notes.texts == []


async def test_a_channel_that_cannot_ask_runs_no_writing_tool(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("Could not."))
    async with tools_for(mcp.url) as tools:
        await tool_engine(store, model, tools).handle(private("note x", ALICE), RecordingChannel())

    assert mcp.notes.texts == []
    assert fake_model.tool_messages()[1][0]["content"] == NOT_ASKED


async def test_parallel_calls_of_one_round_all_run_and_each_result_answers_its_call(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    calls = [FakeCall("kb__lookup", {"query": "a"}, id="c-a"), FakeCall("kb__lookup", {"query": "b"}, id="c-b")]
    fake_model.script(ToolCalls(calls, interleave=True), Reply("a and b"))
    async with tools_for(mcp.url) as tools:
        await tool_engine(store, model, tools).handle(private("a and b?", ALICE), RecordingChannel())

    results = {m["tool_call_id"]: m["content"] for m in fake_model.tool_messages()[1]}
    assert results == {"c-a": "found: a", "c-b": "found: b"}


async def test_max_rounds_stops_a_model_that_never_stops_calling_tools(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(*(ToolCalls([FakeCall("kb__lookup", {"query": str(n)})]) for n in range(2)), Reply("enough"))
    async with tools_for(mcp.url, max_rounds=2) as tools:
        channel = RecordingChannel()
        await tool_engine(store, model, tools).handle(private("loop", ALICE), channel)

    assert len(fake_model.requests) == 3, "two rounds, then one request without tools"
    assert [bool(offered) for offered in fake_model.tools_offered()] == [True, True, False]
    assert channel.text == "enough"


async def test_a_hanging_tool_times_out_and_the_model_is_told(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__slow", {"seconds": 30})]), Reply("It took too long."))
    async with tools_for(mcp.url, timeout_s=0.5) as tools:
        channel = RecordingChannel()
        await tool_engine(store, model, tools).handle(private("slow", ALICE), channel)

    assert channel.text == "It took too long."
    assert "did not finish within 0.5 s" in fake_model.tool_messages()[1][0]["content"]


async def test_bad_arguments_are_sent_back_for_the_model_to_correct(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__lookup", '{"query": ')]), Reply("sorry"))
    async with tools_for(mcp.url) as tools:
        await tool_engine(store, model, tools).handle(private("x", ALICE), RecordingChannel())

    assert "not usable" in fake_model.tool_messages()[1][0]["content"]


async def test_a_user_outside_tools_allow_users_is_offered_no_tools(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    async with tools_for(mcp.url, allow_users=[ALICE]) as tools:
        engine = tool_engine(store, model, tools)
        await engine.handle(private("hi", BOB), RecordingChannel())
        await engine.handle(private("hi", ALICE), RecordingChannel())

    assert fake_model.tools_offered()[0] == []
    assert "kb__lookup" in fake_model.tools_offered()[1]


async def test_a_denied_user_never_reaches_the_model_or_a_tool(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]))
    async with tools_for(mcp.url, confirm="never") as tools:
        engine = tool_engine(store, model, tools, access={"allow_users": [ALICE]})
        channel = RecordingChannel()
        outcome = await engine.handle(private("note x", BOB), channel)

    assert outcome is Outcome.DENIED
    assert fake_model.requests == [] and mcp.notes.texts == []


async def test_a_big_result_is_cut_with_a_note(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "z" * (RESULT_CAP_CHARS + 500)})]), Reply("ok"))
    async with tools_for(mcp.url) as tools:
        await tool_engine(store, model, tools).handle(private("big", ALICE), RecordingChannel())

    sent = fake_model.tool_messages()[1][0]["content"]
    assert sent.startswith("found: zzz") and "[cut: the result had" in sent
    assert len(sent) < RESULT_CAP_CHARS + 200


async def test_the_tool_calls_and_results_are_stored_with_the_turn_and_survive_a_restart(
    model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer, tmp_path: Path
) -> None:
    path = str(tmp_path / "chatbridge.db")
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "otter"}, id="call-1")]), Reply("Mustelids."))
    async with tools_for(mcp.url) as tools:
        store = SqliteStore(path)
        await store.open()
        await tool_engine(store, model, tools).handle(private("otter?", ALICE), RecordingChannel())
        await store.close()

        store = SqliteStore(path)  # a new process on the same file
        await store.open()
        try:
            await tool_engine(store, model, tools).handle(private("and a badger?", ALICE), RecordingChannel())
            state = await store.load_session(ALICE, 100)
        finally:
            await store.close()

    sent = [(m["role"], m.get("tool_call_id"), m["content"]) for m in fake_model.requests[-1]["messages"]]
    assert sent[1:] == [
        ("user", None, "otter?"),
        ("assistant", None, ""),
        ("tool", "call-1", "found: otter"),
        ("assistant", None, "Mustelids."),
        ("user", None, "and a badger?"),
    ]
    assert fake_model.requests[-1]["messages"][2]["tool_calls"][0]["function"]["name"] == "kb__lookup"
    assert state is not None
    answer = state.turns[1]
    assert isinstance(answer, Turn) and answer.content == "Mustelids." and len(answer.steps) == 2
    assert answer.tokens > len("Mustelids.") // 4, "the calls and results are counted in the turn"


async def test_the_window_drops_a_tool_turn_group_whole(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__lookup", {"query": "q" * 6000})]), Reply("long one"))
    async with tools_for(mcp.url) as tools:
        engine = tool_engine(store, model, tools, context={"max_tokens": 1200})
        await engine.handle(private("first", ALICE), RecordingChannel())
        await engine.handle(private("second", ALICE), RecordingChannel())

    roles = [m["role"] for m in fake_model.requests[-1]["messages"]]
    assert roles == ["system", "user"], "the tool group did not fit, so neither it nor its question was sent"


async def test_a_confirmation_pending_when_the_process_stopped_counts_as_declined(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    """The message was queued by a process that died while its question waited: the next process
    answers it again, asks nobody, runs nothing, and the model is told why."""
    assert await store.admit(admission(ALICE, queued("note x", user_id=ALICE))) is Verdict.QUEUED
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("I could not write it."))
    channel = ConfirmingChannel(answer=True)
    async with tools_for(mcp.url) as tools:
        engine = tool_engine(store, model, tools)
        engine.attach("telegram", lambda route: channel)
        try:
            async with asyncio.timeout(5):
                while "I could not write it." not in channel.text:
                    await asyncio.sleep(0.02)
        finally:
            engine.close()

    assert channel.questions == [] and mcp.notes.texts == []
    assert fake_model.tool_messages()[1][0]["content"] == PENDING_AT_RESTART


async def test_every_round_counts_against_the_budgets_and_calls_are_in_the_metrics(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    metrics = BridgeMetrics(session_timeout_s=3600)
    calls = [FakeCall("kb__lookup", {"query": "a"}), FakeCall("kb__slow", {"seconds": 30})]
    fake_model.script(ToolCalls(calls), Reply("done"))
    async with tools_for(mcp.url, on_call=metrics.tool_call, timeout_s=0.5) as tools:
        await tool_engine(store, model, tools).handle(private("both", ALICE), RecordingChannel())

    [usage] = await store.usage_by_model(BudgetCalendar(UTC).day_of(time.time()))
    billed = [_usage(body, "done" if n else "") for n, body in enumerate(fake_model.requests)]
    assert usage.prompt_tokens == sum(figures["prompt_tokens"] for figures in billed)
    assert usage.completion_tokens == sum(figures["completion_tokens"] for figures in billed)
    found = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render()[0].decode())
        for sample in family.samples
    }
    assert (
        found[("chatbridge_tool_calls_total", frozenset({("source", "kb"), ("tool", "kb__lookup"), ("outcome", "ok")}))]
        == 1
    )
    assert (
        found[
            ("chatbridge_tool_calls_total", frozenset({("source", "kb"), ("tool", "kb__slow"), ("outcome", "timeout")}))
        ]
        == 1
    )
    assert found[("chatbridge_tool_latency_seconds_count", frozenset({("source", "kb")}))] == 2


async def test_a_request_too_long_after_tools_ran_is_not_retried_so_no_tool_runs_twice(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel, mcp: HttpMcpServer
) -> None:
    too_long = Status(400, {"error": {"message": "maximum context length exceeded", "code": "context_length_exceeded"}})
    async with tools_for(mcp.url, confirm="never") as tools:
        engine = tool_engine(store, model, tools)
        await engine.handle(private("earlier question", ALICE), RecordingChannel())  # some history to trim
        fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "once"})]), too_long)
        channel = RecordingChannel()
        await engine.handle(private("note once", ALICE), channel)

    assert mcp.notes.texts == ["once"]
    assert len(fake_model.requests) == 3, "no second attempt with a trimmed history"
    assert channel.text == texts.MESSAGE_OVER_CONTEXT
