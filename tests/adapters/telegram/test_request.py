"""Bot API calls on aiohttp's pool keep python-telegram-bot's error kinds: a refused or cut
connection is a NetworkError, and only a real timeout is TimedOut."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from telegram.error import NetworkError, TimedOut

from adapters.telegram.request import AiohttpRequest

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def getme_url(serve: Serve | None) -> AsyncIterator[str]:
    """The URL of getMe on a loopback server that answers with ``serve``, or on a closed port."""
    if serve is None:
        yield f"http://127.0.0.1:{free_port()}/botT/getMe"
        return
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/botT/getMe"
    finally:
        server.close()
        await server.wait_closed()


async def call(url: str, read_timeout: float = 5.0) -> None:
    request = AiohttpRequest(read_timeout=read_timeout)
    await request.initialize()
    try:
        await request.do_request(url, "POST")
    finally:
        await request.shutdown()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.close()


async def stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)
    writer.close()


@pytest.mark.parametrize("serve", [None, hang_up], ids=["refused", "cut mid-request"])
async def test_a_refused_or_cut_connection_is_a_network_error_not_a_timeout(serve: Serve | None) -> None:
    async with getme_url(serve) as url:
        with pytest.raises(NetworkError) as raised:
            await call(url)
    assert not isinstance(raised.value, TimedOut)


async def test_a_server_that_does_not_answer_in_time_is_a_timeout() -> None:
    async with getme_url(stay_silent) as url:
        with pytest.raises(TimedOut):
            await call(url, read_timeout=0.2)
