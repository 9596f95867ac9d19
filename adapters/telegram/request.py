"""python-telegram-bot's HTTP requests on aiohttp's connection pool, as the model's already are.

PTB sends every Bot API call through an ``httpx.AsyncClient``, whose pool (httpcore) walks all its
connections on each request and each release (``bots.http_client`` says more). With a few hundred
chats answered at once that bookkeeping cost more CPU than the calls: 200 private chats at once took
7.1 s and 6.4 CPU seconds on the stock client, 1.7 s and 0.7 s on this one (issue 15's measurement).
The same ``httpx-aiohttp`` client the model uses keeps PTB's request code, and so its error mapping,
unchanged, with one correction: that transport reports every aiohttp connection error as a
``ConnectTimeout``, which PTB would turn into ``TimedOut``; a refused or cut connection is a
``NetworkError`` here, as it is on the stock client.

It also reports a 401 to its owner: the Bot API answers 401 only when the token is not (or no
longer) valid, which PTB's polling loop treats as the end of polling without telling anyone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from telegram._utils.types import ODVInput  # the type of do_request's timeouts; PTB exports it nowhere else
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from bots.http_client import is_timeout

UNAUTHORIZED = 401


class AiohttpPoolRequest(HTTPXRequest):
    def __init__(self, *args: Any, on_unauthorized: Callable[[], None] | None = None, **kwargs: Any) -> None:
        """HTTPXRequest's own arguments, and who to tell about a 401."""
        super().__init__(*args, **kwargs)
        self._on_unauthorized = on_unauthorized

    def _build_client(self) -> httpx.AsyncClient:
        return HttpxAiohttpClient(**self._client_kwargs)

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        try:
            status, body = await super().do_request(
                url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
            )
        except TimedOut as error:
            cause = error.__cause__
            if isinstance(cause, httpx.TimeoutException) and not is_timeout(cause):
                raise NetworkError(f"connection error: {type(cause.__cause__).__name__}") from cause
            raise
        if status == UNAUTHORIZED and self._on_unauthorized is not None:
            self._on_unauthorized()
        return status, body
