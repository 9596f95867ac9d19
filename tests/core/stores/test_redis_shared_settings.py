"""Two bridge processes on one Redis share each chat's model and persona, each user's instructions,
the runtime budgets and the budget counters: what one process stores, the other answers with, and
a budget at its edge is overshot by no more than the messages in flight (design section 9)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import texts
from core.store import ALL_SUBJECTS
from core.stores.redis import RedisStore
from tests.fakes.fake_model import FakeModel, _usage
from tests.fakes.redis_server import RedisServer
from tests.kit.redis_processes import BridgeProcess

ADMIN = "telegram:9"


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
async def local_model() -> AsyncIterator[FakeModel]:
    async with FakeModel() as server:
        yield server


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url, prefix)
    await store.open()
    yield store
    await store.close()


async def start_two(redis_server: RedisServer, prefix: str, model_url: str, **options: object) -> list[BridgeProcess]:
    return list(
        await asyncio.gather(
            *(BridgeProcess.start(redis_server.url, prefix, model_url, **options) for _ in range(2))  # type: ignore[arg-type]
        )
    )


async def test_what_one_process_chooses_the_other_answers_with(
    redis_server: RedisServer, prefix: str, fake_model: FakeModel, local_model: FakeModel
) -> None:
    settings = {"access": {"admins": [ADMIN]}, "personas": {"brief": {"system_prompt": "Answer in one line."}}}
    first, second = await start_two(
        redis_server, prefix, fake_model.base_url, settings=settings, models={"local": local_model.base_url}
    )
    try:
        for tag, text in (("model", "/model local"), ("persona", "/persona brief"), ("mine", "/instructions Be kind.")):
            first.send(tag, "telegram:1", text)
            await first.result(tag)
        first.send("budget", ADMIN, "/admin budget telegram:2 1")
        assert (await first.result("budget"))["replies"] == [texts.BUDGET_SET.format(identity="telegram:2", tokens="1")]

        second.send("ask", "telegram:1", "hello from the other process")
        assert (await second.result("ask"))["replies"] == ["echo: hello from the other process"]
        assert local_model.auth_headers == ["Bearer sk-local"]
        assert [m["content"] for m in local_model.requests[0]["messages"][:2]] == [
            "Answer in one line.",
            f"{texts.INSTRUCTIONS_HEADER}\nBe kind.",
        ]
        assert fake_model.requests == []

        second.send("spend", "telegram:2", "spend my one token")
        await second.result("spend")
        first.send("over", "telegram:2", "and again")
        [refusal] = (await first.result("over"))["replies"]
        assert refusal.startswith("You have used up today's token budget on this bridge (1 tokens a day).")
        assert len(fake_model.requests) == 1
    finally:
        for bridge in (first, second):
            await bridge.kill()


async def test_two_processes_at_the_budgets_edge_overshoot_by_no_more_than_the_messages_in_flight(
    redis_server: RedisServer, prefix: str, store: RedisStore, fake_model: FakeModel
) -> None:
    """Each process answers two users at a time, one message after another, so at most four
    messages are in flight; every message is the first of its own session and costs the same."""
    budget, lanes_per_process, per_lane = 200, 2, 8
    settings = {"limits": {"total_tokens_per_day": budget, "user_messages_per_minute": 0}}
    processes = await start_two(redis_server, prefix, fake_model.base_url, settings=settings)
    in_flight = len(processes) * lanes_per_process
    outcomes: list[str] = []
    refusals: list[str] = []

    async def lane(process: BridgeProcess, name: str) -> None:
        for n in range(per_lane):
            tag = f"{name}-{n}"
            user = f"telegram:{abs(hash(tag)) % 10**9 + 1}"
            process.send(tag, user, f"question {n:02d}")
            result = await process.result(tag)
            outcomes.append(result["outcome"])
            if result["outcome"] == "over_budget":
                refusals.extend(result["replies"])

    try:
        await asyncio.gather(
            *(
                lane(process, f"p{p}l{lane_no}")
                for p, process in enumerate(processes)
                for lane_no in range(lanes_per_process)
            )
        )
    finally:
        for process in processes:
            await process.kill()

    answered = outcomes.count("answered")
    costs = [reported_tokens(body) for body in fake_model.requests]
    [today] = await store.usage_by_day(1, ALL_SUBJECTS)
    used = today.prompt_tokens + today.completion_tokens
    assert len(costs) == answered and used == sum(costs)  # a refused message never reached the model
    assert used >= budget  # the budget was reached...
    assert used < budget + in_flight * max(costs)  # ...and overshot by less than the messages in flight
    assert len(refusals) == len(outcomes) - answered > 0
    expected = f"This bridge has used up today's token budget on this bridge ({budget} tokens a day)."
    assert all(text.startswith(expected) for text in refusals)


def reported_tokens(body: dict[str, Any]) -> int:
    """What the fake model reported for the request ``body`` (its answer echoes the message)."""
    figures = _usage(body, f"echo: {body['messages'][-1]['content']}")
    return figures["prompt_tokens"] + figures["completion_tokens"]
