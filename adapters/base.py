"""The contract every platform adapter fulfils, so ``chatbridge run`` can drive them all alike."""

from __future__ import annotations

from typing import Protocol

from core.engine import Engine


class AdapterStartupError(Exception):
    """A platform refused us at start-up (bad token, missing permission); the text names the adapter."""


class Adapter(Protocol):
    name: str

    async def run(self, engine: Engine) -> None:
        """Receive messages and hand each to ``engine.handle`` until ``stop`` is called or input ends."""
        ...

    async def stop(self) -> None:
        """Stop receiving new messages; replies already in flight are the engine's to finish."""
        ...

    async def check(self) -> str:
        """Reach the platform once and describe who we are there (for ``chatbridge check``)."""
        ...
