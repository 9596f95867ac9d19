"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.fake_model import FakeModel


@pytest_asyncio.fixture
async def fake_model() -> AsyncIterator[FakeModel]:
    """A fake OpenAI-compatible server on a free loopback port, stopped after the test."""
    server = FakeModel()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
