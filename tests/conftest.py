"""Fixtures shared by every test module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio

from bots.openai_client import OpenAIChatModel
from chatbridge.process import event_loop_factory
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import FakeModel
from tests.fakes.redis_server import RedisCluster, RedisSentinel, RedisServer
from tests.kit.engine import model_settings


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test runs on the event loop chatbridge itself runs on (chatbridge/process.py)."""
    return {"loop": event_loop_factory() or asyncio.new_event_loop}


@pytest_asyncio.fixture
async def fake_model() -> AsyncIterator[FakeModel]:
    """A fake OpenAI-compatible server on a free loopback port, stopped after the test."""
    async with FakeModel() as server:
        yield server


# --- Redis (appended for the redis store; see tests/fakes/redis_server.py) ----------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole run; tests keep apart through their own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may kill and start again (outages)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster for the run (the store's ``redis+cluster://`` form)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A master behind a sentinel for the run (the store's ``redis+sentinel://`` form)."""
    sentinel = RedisSentinel(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


@pytest_asyncio.fixture
async def store() -> AsyncIterator[MemoryStore]:
    """A fresh memory store; test modules about other backends define their own ``store``."""
    store = MemoryStore()
    await store.open()
    yield store
    await store.close()


@pytest_asyncio.fixture
async def model(fake_model: FakeModel) -> AsyncIterator[OpenAIChatModel]:
    """The real model client pointed at the fake model, with quick retries."""
    client = OpenAIChatModel(model_settings(fake_model.base_url, max_retries=2))
    yield client
    await client.aclose()
