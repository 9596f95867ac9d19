"""The model client spreads requests over several small connection pools."""

from __future__ import annotations

import asyncio

from bots.http_pool import POOL_SIZE, PooledClients
from bots.model import ChatMessage
from bots.openai_client import OpenAIChatModel
from tests.fakes.fake_model import FakeModel
from tests.kit.engine import model_settings


async def test_pools_cover_the_configured_connections_and_take_turns() -> None:
    pools = PooledClients(timeout_s=5, max_connections=1000)
    try:
        handed = [pools.next() for _ in range(40)]
        distinct = list(dict.fromkeys(handed))
        assert len(distinct) == -(-1000 // POOL_SIZE)
        assert handed[: len(distinct)] == distinct
        assert handed[len(distinct) : 2 * len(distinct)] == distinct
    finally:
        await pools.aclose()


async def test_many_concurrent_replies_all_arrive(fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 0.2
    model = OpenAIChatModel(model_settings(fake_model.base_url, max_connections=300))
    try:
        replies = await asyncio.gather(*(model.reply([ChatMessage("user", f"n{n}")]) for n in range(300)))
    finally:
        await model.aclose()
    assert [reply.text for reply in replies] == [f"echo: n{n}" for n in range(300)]
