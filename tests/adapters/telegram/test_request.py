"""Bot API calls on aiohttp's pool keep python-telegram-bot's error kinds: a refused or cut
connection is a NetworkError, and only a real timeout is TimedOut."""

from __future__ import annotations

import asyncio
import socket

import pytest
from telegram.error import NetworkError, TimedOut

from adapters.telegram.request import AiohttpPoolRequest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_is_a_network_error_not_a_timeout() -> None:
    request = AiohttpPoolRequest()
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await request.do_request(f"http://127.0.0.1:{free_port()}/botT/getMe", "POST")
        assert not isinstance(raised.value, TimedOut)
    finally:
        await request.shutdown()


async def test_a_connection_cut_mid_request_is_a_network_error_not_a_timeout() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpPoolRequest()
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await request.do_request(f"http://127.0.0.1:{port}/botT/getMe", "POST")
        assert not isinstance(raised.value, TimedOut)
    finally:
        await request.shutdown()
        server.close()
        await server.wait_closed()


async def test_a_server_that_does_not_answer_in_time_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpPoolRequest(read_timeout=0.2)
    await request.initialize()
    try:
        with pytest.raises(TimedOut):
            await request.do_request(f"http://127.0.0.1:{port}/botT/getMe", "POST")
    finally:
        await request.shutdown()
        server.close()
        await server.wait_closed()
