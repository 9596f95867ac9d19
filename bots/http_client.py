"""The HTTP client of the model server: httpx's API on aiohttp's connection pool.

httpx's own pool (httpcore) walks every one of its connections on each request and each release
(``_assign_requests_to_connections``, encode/httpcore#1035), so with hundreds of concurrent model
calls its bookkeeping cost more than the calls themselves, and even a single request costs it far
more than aiohttp (848 against 539 us for the same request in ``bench/``). The ``httpx-aiohttp``
transport, written by an httpx maintainer and offered by the OpenAI Python SDK for the same reason,
keeps httpx's API, and with it ``httpx-sse``, over aiohttp's connector.

One thing it gets wrong for us: it maps every aiohttp connection error to ``httpx.ConnectTimeout``,
a refused connection and a server that hung up mid-reply included. Users are told different things
for a timeout and for an unreachable server, so ``is_timeout`` looks at what was actually raised.

Two things httpx does cost a burst, and ``_ModelHttpClient`` undoes them. A response and its
stream refer to each other (``BoundAsyncStream``), so every reply, streamed or not, with the aiohttp
response and headers it holds, was garbage only the cyclic collector could free; ``_UnboundOnClose``
lets go when the response closes. And every response went through urllib's cookie jar, Set-Cookie
or not: about 50 us of a streamed model call's 1 ms of CPU in ``bench/``; ``_Cookies`` asks the jar
only when there is a cookie to store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient


def model_http_client(*, timeout_s: float, max_connections: int) -> httpx.AsyncClient:
    """One pool for every model call; connections beyond ``max_connections`` wait for a free one.
    Proxies from the environment (``HTTPS_PROXY``) apply as with plain httpx."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return _ModelHttpClient(timeout=httpx.Timeout(timeout_s), limits=limits)


class _ModelHttpClient(HttpxAiohttpClient):
    """httpx-aiohttp's client, with the two costs of the module docstring taken out."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._set_cookies = _Cookies(options.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        return self._set_cookies

    @cookies.setter
    def cookies(self, cookies: httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]) -> None:
        self._set_cookies = _Cookies(cookies)

    async def send(self, request: httpx.Request, *, stream: bool = False, **options: Any) -> httpx.Response:
        """httpx's ``send``, the body read here when not streamed (as httpx reads it), so that a
        non-streamed response is unbound too."""
        response = await super().send(request, stream=True, **options)
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _UnboundOnClose(response.stream)
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


class _UnboundOnClose(httpx.AsyncByteStream):
    """A response's stream that drops httpx's own once closed, and with it the reference back to the
    response: a burst of 1,000 replies then leaves no cyclic garbage, where it left some 20 objects
    per reply before."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream: httpx.AsyncByteStream | None = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            raise httpx.StreamClosed()
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()


class _Cookies(httpx.Cookies):
    """httpx's cookies, stored as ever where a response sets one (a load balancer's sticky session,
    say). Without a Set-Cookie header urllib's jar would store nothing: it ignores Set-Cookie2
    unless told to read RFC 2965 cookies, which httpx never tells it."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def is_timeout(error: httpx.TimeoutException) -> bool:
    """Whether a timeout httpx reports really was one: raised by httpx itself, or by aiohttp as one
    of its timeout errors (which are ``TimeoutError``s), not some other connection error."""
    cause = error.__cause__
    return cause is None or isinstance(cause, TimeoutError) or type(cause).__module__.startswith("httpcore")
