"""The fake Bot API every Telegram adapter test talks to, started on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.telegram_api import FakeTelegram


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    api = FakeTelegram()
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
