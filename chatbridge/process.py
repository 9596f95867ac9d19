"""How a chatbridge process runs its event loop: the two process-wide choices every long-running entry
point (``chatbridge``, the benchmarks, the test suite's bridge processes) makes the same way.

Both were measured in ``bench/`` (see bench/RESULTS.md): a bridge spends much of each message in
the event loop and the garbage collector, not in its own code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("chatbridge.process")

YOUNG_OBJECTS_BEFORE_GC = 50_000
"""CPython starts a collection every 700 new objects by default; one message makes hundreds."""


def tune_garbage_collector() -> None:
    """Collect less often, and never again look at what start-up loaded.

    The cyclic collector walks every tracked object of the generations it collects, and a bridge
    holds a great many long-lived ones (modules, the libraries of four platforms) plus a burst of
    short-lived ones per message. Freezing what exists after start-up takes the former out of every
    later walk, and a larger first threshold makes the walks rarer. With 1,000 sessions answered at
    once this took 2.06 s down to 1.8 s in ``bench/``; the memory cost is a few megabytes of young
    objects at most. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_GC, older, oldest)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (everywhere but Windows), else None for asyncio's own.

    Every message is a handful of socket round trips (the platform, the model, a shared store), and
    uvloop runs the loop and its sockets in C: in ``bench/`` a round trip to Redis and a request to
    the model each cost tens of microseconds less. The test suite runs on the same loop.
    """
    try:
        import uvloop
    except ImportError:  # no build for this platform: asyncio's loop does the same work, slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop of ``event_loop_factory``."""
    factory = event_loop_factory()
    log.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
