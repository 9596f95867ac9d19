"""The process-wide choices of chatbridge/process.py, which every entry point shares."""

from __future__ import annotations

import asyncio

import uvloop

from chatbridge.process import run


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_run_uses_uvloop_where_installed() -> None:
    assert run(_loop_type()) is uvloop.Loop
