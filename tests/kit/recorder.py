"""What reached the engine from an adapter, with the real engine still answering it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from core.channel import Receipt, Reopen, ReplyChannel
from core.commands import CommandSpec
from core.engine import Engine
from core.events import IncomingMessage, Refetch


class Recorder:
    """A ``MessageHandler`` that keeps each message it is given and hands it on to the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.messages: list[IncomingMessage] = []
        self._arrived = asyncio.Condition()

    @property
    def commands(self) -> Sequence[CommandSpec]:
        return self.engine.commands

    def attach(self, platform: str, reopen: Reopen, refetch: Refetch | None = None) -> None:
        self.engine.attach(platform, reopen, refetch)

    async def handle(self, message: IncomingMessage, channel: ReplyChannel, receipt: Receipt | None = None) -> object:
        async with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()
        return await self.engine.handle(message, channel, receipt)

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[IncomingMessage]:
        """Until ``count`` messages have arrived; returns them all."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return self.messages
