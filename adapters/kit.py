"""The contract every platform adapter fulfils, so ``chatbridge run`` can drive them all alike."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from core.engine import Engine


class UpdateTasks:
    """One task per incoming update, so no chat waits for another.

    The set holds a strong reference until each task ends (asyncio keeps only weak ones), and lets an
    adapter wait for its replies in flight when it stops.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every task ends; their errors were theirs to log and are not raised here."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


class AdapterStartupError(Exception):
    """A platform refused us at start-up (bad token, missing permission); the text names the adapter."""


class Adapter(Protocol):
    """``name``, ``run``, ``stop`` and ``check`` are required.

    Optionally an adapter may have a ``ready`` attribute or property (bool) saying whether it is
    connected to its platform right now (gateway up, polling working); ``/readyz`` reports it. An
    adapter without one counts as ready while its ``run`` task is running (see ``adapter_ready``).
    """

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


def adapter_ready(adapter: Adapter) -> bool:
    """The adapter's optional ``ready`` flag; True for adapters that do not report one."""
    return bool(getattr(adapter, "ready", True))
