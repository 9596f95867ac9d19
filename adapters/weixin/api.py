"""Calls to a Weixin server API (WeChat's ``api.weixin.qq.com``, WeCom's ``qyapi.weixin.qq.com``)
with the access token both require, cached and refreshed.

The token comes from the account's id and secret, lives ``expires_in`` seconds (7,200) and is
refreshed ``REFRESH_BEFORE_S`` before that. The platform can still declare it invalid earlier
(another process fetched a new one, or the secret was reset): a call answered with one of
``TOKEN_REJECTED`` drops the token, fetches a new one and is made once more. Fetches are single
flight, so a burst of replies after a refresh costs one token call.

The token travels in the URL's query, as the APIs require. It is not a configured secret, so the
log redaction does not know it; httpx logs request URLs (at debug), and ``_MaskTokens`` masks the
token there.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from adapters.kit import platform_call
from core.channel import PlatformRateLimited, PlatformTrouble, PlatformUnavailable

REFRESH_BEFORE_S = 300.0
TIMEOUT_S = 10.0
TOKEN_REJECTED = frozenset({40001, 40014, 42001})
"""invalid credential, invalid access_token, access_token expired: the same codes on both platforms."""
BUSY = frozenset({-1})
"""system busy: try again."""
THROTTLED = frozenset({45009, 45011, 45033})
"""call frequency or concurrency over the limit."""
THROTTLED_WAIT_S = 30.0
"""Neither platform says how long to wait."""

_QUERY_SECRETS = re.compile(r"((?:access_token|secret|corpsecret)=)[^&\s\"']+")


class WeixinApiError(Exception):
    """The API answered with a non-zero ``errcode``. Its ``errmsg`` names no secret."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class _MaskTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's to report
            return True
        if "=" in message:
            record.msg, record.args = _QUERY_SECRETS.sub(r"\1***", message), None
        return True


_MASK = _MaskTokens()


def trouble(error: Exception) -> PlatformTrouble | None:
    """What ``platform_call`` retries: timeouts, cut connections, 5xx and 429, busy and throttled."""
    if isinstance(error, httpx.TransportError):
        return PlatformUnavailable(type(error).__name__)
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        if status == 429:
            return PlatformRateLimited(float(error.response.headers.get("Retry-After", THROTTLED_WAIT_S)))
        return PlatformUnavailable(f"HTTP {status}") if status >= 500 else None
    if isinstance(error, WeixinApiError):
        if error.errcode in BUSY:
            return PlatformUnavailable(f"errcode {error.errcode}")
        if error.errcode in THROTTLED:
            return PlatformRateLimited(THROTTLED_WAIT_S)
    return None


class WeixinApi:
    """One account's API client. ``token_path`` and ``token_params`` say how its platform hands out
    access tokens (``/cgi-bin/token`` with app id and secret, ``/cgi-bin/gettoken`` with corp id
    and secret)."""

    def __init__(
        self,
        base_url: str,
        token_path: str,
        token_params: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        logging.getLogger("httpx").addFilter(_MASK)
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=TIMEOUT_S)
        self._token_path = token_path
        self._token_params = dict(token_params)
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._fetching: asyncio.Lock | None = None

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def access_token(self) -> str:
        """The cached token, or a new one when it is near its end (``WeixinApiError`` when the id or
        secret is refused)."""
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            if self._token is None or self._clock() >= self._expires_at:
                answer = _checked(await self._get(self._token_path, self._token_params))
                self._token = str(answer["access_token"])
                lifetime = float(answer.get("expires_in", 7200))
                self._expires_at = self._clock() + max(lifetime - REFRESH_BEFORE_S, lifetime / 2)
            return self._token

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON with the access token; a token the platform rejects is replaced
        once. Passing failures come as ``PlatformTrouble``, the platform's refusals as
        ``WeixinApiError``."""
        return await platform_call(self._with_token("POST", path, json=body), trouble)

    async def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET with the access token, as ``post``."""
        return await platform_call(self._with_token("GET", path, params=params), trouble)

    async def _with_token(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        for attempt in range(2):
            token = await self.access_token()
            query = {**(params or {}), "access_token": token}
            response = await self._http.request(method, path, params=query, json=json)
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            if answer.get("errcode", 0) in TOKEN_REJECTED and attempt == 0:
                self._drop(token)
                continue
            return _checked(answer)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _drop(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        response = await self._http.get(path, params=params)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    code = int(answer.get("errcode", 0) or 0)
    if code:
        raise WeixinApiError(code, str(answer.get("errmsg", "")))
    return answer
