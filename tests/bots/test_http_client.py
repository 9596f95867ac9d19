"""The model's HTTP client: what it leaves behind after a streamed reply, and the cookies it keeps."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web

from bots.http_client import model_http_client
from tests.fakes.fake_model import FakeModel


async def test_a_closed_reply_is_freed_without_the_cyclic_collector(fake_model: FakeModel) -> None:
    """httpx binds a response and its stream to each other; in a burst that made every reply
    garbage for the cyclic collector to find. Once closed, a reply, streamed or not, goes as soon
    as it is dropped, with the collector off."""
    url = f"{fake_model.base_url}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    gc.disable()
    try:
        async with model_http_client(timeout_s=5, max_connections=1) as http:
            async with http.stream("POST", url, json={**body, "stream": True}) as streamed:
                text = b"".join([chunk async for chunk in streamed.aiter_bytes()])
            assert b"data: [DONE]" in text
            assert streamed.is_closed
            whole = await http.post(url, json=body)
            assert whole.json()["choices"][0]["message"]["content"]
            assert whole.is_closed
            gone = weakref.ref(streamed), weakref.ref(whole)
            del streamed, whole
            assert [ref() for ref in gone] == [None, None]
    finally:
        gc.enable()


@pytest_asyncio.fixture
async def sticky_server() -> AsyncIterator[str]:
    """A server behind a load balancer that pins clients with a cookie: /pin sets it (and only
    /pin does), /seen tells which Cookie header came with the request."""

    async def pin(_: web.Request) -> web.Response:
        response = web.Response(text="pinned")
        response.set_cookie("backend", "b7")
        return response

    async def seen(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", "none"))

    app = web.Application()
    app.router.add_get("/pin", pin)
    app.router.add_get("/seen", seen)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_cookie_the_server_sets_comes_back_with_the_next_requests(sticky_server: str) -> None:
    async with model_http_client(timeout_s=5, max_connections=1) as http:
        assert (await http.get(f"{sticky_server}/seen")).text == "none"
        await http.get(f"{sticky_server}/pin")
        assert (await http.get(f"{sticky_server}/seen")).text == "backend=b7"
        assert (await http.get(f"{sticky_server}/seen")).text == "backend=b7"
