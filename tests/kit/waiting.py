"""Waiting in adapter tests: for something the platform fake will see, or long enough that nothing
more should happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def settled(seconds: float = 0.3) -> None:
    """Let anything that might still (wrongly) answer do so before asserting it did not."""
    await asyncio.sleep(seconds)
