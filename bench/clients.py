"""What each platform library's HTTP client costs per request, against a bare aiohttp request of
the same call to the same fake platform (the floor), at two sizes of burst.

The question (issue 15, item 2) is whether a library pays something per request that grows with
the number of connections it holds, as python-telegram-bot's stock httpx client did (httpcore walks
its whole pool on every request). If so, its CPU per send grows with the burst while the floor's
stays flat. Every send goes to its own chat, on connections kept alive from a first batch, the way
a running bridge sends. The fakes run in this process, so both sides include the fake's work.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

ANSWER = "an answer"

Send = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class FloorCall:
    """The one HTTP request a library's send makes, for aiohttp to make bare."""

    url: Callable[[int], str]
    headers: dict[str, str]
    body: Callable[[int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ClientCost:
    platform: str
    sends: int
    library_cpu_s: float
    floor_cpu_s: float

    @property
    def ratio(self) -> float:
        return self.library_cpu_s / self.floor_cpu_s


@asynccontextmanager
async def telegram() -> AsyncIterator[tuple[Send, FloorCall]]:
    from telegram import Bot

    from adapters.telegram.request import AiohttpRequest
    from tests.fakes.telegram_api import TOKEN, FakeTelegram

    fake = FakeTelegram()
    await fake.start()
    request = AiohttpRequest(read_timeout=30.0, connect_timeout=30.0, connections=1_000)
    try:
        async with Bot(TOKEN, base_url=fake.base_url, request=request) as bot:
            yield (
                lambda n: bot.send_message(1_000 + n, ANSWER),
                FloorCall(
                    lambda n: f"{fake.base_url}{TOKEN}/sendMessage",
                    {},
                    lambda n: {"chat_id": 1_000 + n, "text": ANSWER},
                ),
            )
    finally:
        await fake.stop()


@asynccontextmanager
async def discord() -> AsyncIterator[tuple[Send, FloorCall]]:
    from discord.http import HTTPClient, Route, handle_message_parameters

    from tests.fakes.discord_api import TOKEN, FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    saved, Route.BASE = Route.BASE, fake.api_base_url
    http = HTTPClient(asyncio.get_running_loop(), connector=aiohttp.TCPConnector(limit=0))
    try:
        await http.static_login(TOKEN)

        def send(n: int) -> Awaitable[object]:
            return http.send_message(5_000 + n, params=handle_message_parameters(content=ANSWER))

        yield (
            send,
            FloorCall(
                lambda n: f"{fake.api_base_url}/channels/{5_000 + n}/messages",
                {"Authorization": f"Bot {TOKEN}"},
                lambda n: {"content": ANSWER},
            ),
        )
    finally:
        await http.close()
        Route.BASE = saved
        await fake.stop()


@asynccontextmanager
async def slack() -> AsyncIterator[tuple[Send, FloorCall]]:
    from slack_sdk.web.async_client import AsyncWebClient

    from tests.fakes.slack_api import FakeSlack

    fake = FakeSlack()
    await fake.start()
    token = "xoxb-bench"
    # As the adapter does: one session for every call (slack-sdk opens one per call without it).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = AsyncWebClient(token=token, base_url=fake.api_url, session=session)
    try:
        yield (
            lambda n: client.chat_postMessage(channel=f"C{n:06d}", text=ANSWER),
            FloorCall(
                lambda n: f"{fake.api_url}chat.postMessage",
                {"Authorization": f"Bearer {token}"},
                lambda n: {"channel": f"C{n:06d}", "text": ANSWER},
            ),
        )
    finally:
        await session.close()
        await fake.stop()


PLATFORMS: dict[str, Callable[[], AbstractAsyncContextManager[tuple[Send, FloorCall]]]] = {
    "telegram (python-telegram-bot on AiohttpRequest)": telegram,
    "discord (discord.py)": discord,
    "slack (slack-sdk, one shared session)": slack,
}


async def client_costs(sizes: tuple[int, ...] = (50, 400), rounds: int = 3) -> list[ClientCost]:
    """The median CPU seconds of a burst of each size, through the library and bare, alternating."""
    costs = []
    for platform, opened in PLATFORMS.items():
        async with opened() as (send, floor_call):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

                def bare(
                    n: int, session: aiohttp.ClientSession = session, call: FloorCall = floor_call
                ) -> Awaitable[None]:
                    return _post(session, call, n)

                await _burst(send, max(sizes))  # open the connections both sides then keep
                await _burst(bare, max(sizes))
                for size in sizes:
                    library, floor = [], []
                    for _ in range(rounds):
                        library.append(await _burst(send, size))
                        floor.append(await _burst(bare, size))
                    costs.append(ClientCost(platform, size, statistics.median(library), statistics.median(floor)))
    return costs


async def _post(session: aiohttp.ClientSession, call: FloorCall, n: int) -> None:
    async with session.post(call.url(n), json=call.body(n), headers=call.headers) as response:
        response.raise_for_status()
        await response.read()


async def _burst(send: Send, size: int) -> float:
    cpu = time.process_time()
    await asyncio.gather(*(send(n) for n in range(size)))
    return time.process_time() - cpu
