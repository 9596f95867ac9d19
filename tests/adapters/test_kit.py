"""What every adapter shares: updates in flight, a platform's 429, start-up lines, unreachable servers, menus."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import pytest_asyncio

from adapters.kit import (
    AdapterStartupError,
    UpdatesInFlight,
    connection_trouble,
    menu,
    platform_call,
    startup_errors,
    unreachable,
)
from bots.http_client import model_http_client
from core.channel import PlatformRateLimited, PlatformTrouble, PlatformUnavailable
from core.commands import command_list
from core.settings import BotSettings


async def test_waiting_for_updates_returns_once_the_last_one_is_answered() -> None:
    updates = UpdatesInFlight()
    answered: list[str] = []

    async def answer(text: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        answered.append(text)

    updates.spawn(answer("slow", 0.05))
    updates.spawn(answer("fast", 0.0))
    await asyncio.wait_for(updates.wait(), 2)
    assert answered == ["fast", "slow"]
    assert len(updates) == 0


async def test_a_cancelled_wait_cancels_the_updates_it_waits_for() -> None:
    updates = UpdatesInFlight()
    cleaned_up = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned_up.set()

    updates.spawn(hangs())

    async def library_task() -> None:
        with updates.track():
            await asyncio.sleep(3600)

    tracked = asyncio.create_task(library_task())
    await asyncio.sleep(0)
    assert len(updates) == 2
    waiting = asyncio.create_task(updates.wait())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert cleaned_up.is_set()
    assert tracked.cancelled()


async def test_a_platforms_passing_failures_become_the_renderers_signals_and_other_errors_pass() -> None:
    def trouble(error: Exception) -> PlatformTrouble | None:
        if isinstance(error, LookupError):
            return PlatformRateLimited(7.0)
        return PlatformUnavailable("502") if isinstance(error, ConnectionError) else None

    async def failing(error: Exception) -> None:
        raise error

    with pytest.raises(PlatformRateLimited) as raised:
        await platform_call(failing(LookupError("429")), trouble)
    assert raised.value.retry_after_s == 7.0
    with pytest.raises(PlatformUnavailable):
        await platform_call(failing(ConnectionError("502")), trouble)
    with pytest.raises(ValueError):
        await platform_call(failing(ValueError("400")), trouble)


def test_start_up_errors_become_one_line_naming_the_platform() -> None:
    def problem(error: Exception) -> str | None:
        return "the token was refused (adapters.demo.token)" if isinstance(error, PermissionError) else None

    with pytest.raises(AdapterStartupError, match=r"^demo: the token was refused \(adapters\.demo\.token\)$"):
        with startup_errors("demo", problem):
            raise PermissionError("401 with secret-token-inside")
    with pytest.raises(KeyError):
        with startup_errors("demo", problem):
            raise KeyError("not a start-up problem")


REFUSED = "connection refused (nothing listens there)"
TIMED_OUT = "timed out (no answer)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest_asyncio.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server that takes connections and never answers."""
    waiting: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        waiting.append(writer)

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        for writer in waiting:
            writer.close()
        server.close()
        await server.wait_closed()


async def aiohttp_failure(url: str) -> BaseException:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        with pytest.raises(Exception) as raised:
            await session.get(url)
    return raised.value


async def httpx_aiohttp_failure(url: str) -> BaseException:
    """Through the model's client, which reports every failed connection as ``ConnectTimeout``."""
    async with model_http_client(timeout_s=0.3, max_connections=1) as http:
        with pytest.raises(httpx.TransportError) as raised:
            await http.get(url)
    return raised.value


async def test_a_refused_connection_never_reads_as_a_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    renamed = await httpx_aiohttp_failure(url)
    assert isinstance(renamed, httpx.ConnectTimeout)  # what the library says
    assert connection_trouble(renamed) == REFUSED
    assert connection_trouble(await aiohttp_failure(url)) == REFUSED


async def test_a_server_that_does_not_answer_is_a_timeout(silent_url: str) -> None:
    assert connection_trouble(await httpx_aiohttp_failure(silent_url)) == TIMED_OUT
    assert connection_trouble(await aiohttp_failure(silent_url)) == TIMED_OUT


async def test_an_unreachable_server_is_named_by_its_key_without_a_password() -> None:
    port = free_port()
    failure = await aiohttp_failure(f"http://127.0.0.1:{port}/")
    assert unreachable("store.redis_url", f"redis://:hunter2@127.0.0.1:{port}/0", failure) == (
        f"store.redis_url redis://***@127.0.0.1:{port}/0: {REFUSED}"
    )


def test_an_error_that_is_no_connection_failure_is_said_as_it_is() -> None:
    assert connection_trouble(ValueError("bad JSON")) is None
    assert (
        unreachable("model.base_url", "http://h/v1", ValueError("bad JSON"))
        == "model.base_url http://h/v1: ValueError: bad JSON"
    )


def test_the_menu_lists_core_commands_a_platform_accepts_configured_resets_included() -> None:
    commands = command_list(BotSettings(reset_commands=["/reset", "/Forget", "/not-valid!"]))
    listed = menu(commands, re.compile(r"[a-z0-9_]{1,32}"))
    assert [c.name for c in listed] == [
        "reset",
        "new",
        "forget",
        "help",
        "id",
        "model",
        "persona",
        "instructions",
        "usage",
        "admin",
    ]
    assert [c.name for c in listed if c.admin_only] == ["admin"]
    assert all(c.description for c in listed)
