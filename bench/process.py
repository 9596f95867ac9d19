"""What the benchmarks need of processes: a module run as a child that says when it is ready, and
this process's memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def module_process(module: str, *args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, bytes]]:
    """``python -m module args`` with pipes to its stdin and stdout, and the first line it prints
    (what it says once ready; empty if it ended first). Closing its stdin tells it to end, which is
    waited for on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        yield process, await process.stdout.readline()
    finally:
        process.stdin.close()
        await process.wait()


def rss_bytes() -> int:
    """This process's resident memory now, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
