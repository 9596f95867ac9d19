"""The model's HTTP client: what it leaves behind after a streamed reply."""

from __future__ import annotations

import gc
import weakref

from bots.http_client import model_http_client
from tests.fakes.fake_model import FakeModel


async def test_a_closed_streamed_reply_is_freed_without_the_cyclic_collector(fake_model: FakeModel) -> None:
    """httpx binds a streamed response and its stream to each other; in a burst that made every
    reply garbage for the cyclic collector to find. Once closed, the reply goes as soon as it is
    dropped, with the collector off."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    gc.disable()
    try:
        async with model_http_client(timeout_s=5, max_connections=1) as http:
            async with http.stream("POST", f"{fake_model.base_url}/chat/completions", json=body) as reply:
                streamed = b"".join([chunk async for chunk in reply.aiter_bytes()])
            assert b"data: [DONE]" in streamed
            assert reply.is_closed
            gone = weakref.ref(reply)
            del reply
            assert gone() is None
    finally:
        gc.enable()
