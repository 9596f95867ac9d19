"""A local fake of the WeChat Official Account API on 127.0.0.1: access tokens
(``/cgi-bin/token``) and customer-service messages (``/cgi-bin/message/custom/send``).

It answers as WeChat does: HTTP 200 with ``errcode``/``errmsg``, 40125 for a wrong secret, 40001
or 42001 for a token that is not (or no longer) valid, 45002 for a text over 2,048 bytes. Tests
read ``sent`` (what users see, in order) and ``token_fetches``; ``expire_tokens`` makes every
token issued so far invalid, as a token fetched elsewhere or timed out would be.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

APP_ID = "wx5823bf96d3bd56c7"
APP_SECRET = "app-secret-for-tests-0123456789"
MAX_TEXT_BYTES = 2048


@dataclass(frozen=True)
class CustomerMessage:
    touser: str
    content: str


class FakeWeChatApi:
    def __init__(self, app_id: str = APP_ID, app_secret: str = APP_SECRET) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.api_url = ""
        self.sent: list[CustomerMessage] = []
        self.token_fetches = 0
        self.refuse_next: list[int] = []
        """errcodes the next customer-service calls answer with, one each."""
        self._valid: set[str] = set()
        self._serial = itertools.count(1)
        self._runner: web.AppRunner | None = None

    def expire_tokens(self) -> None:
        self._valid.clear()

    def to(self, openid: str) -> list[str]:
        return [message.content for message in self.sent if message.touser == openid]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.api_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("grant_type") != "client_credential":
            return _error(40002, "invalid grant_type")
        if query.get("appid") != self.app_id:
            return _error(40013, "invalid appid")
        if query.get("secret") != self.app_secret:
            return _error(40125, "invalid appsecret")
        self.token_fetches += 1
        token = f"ACCESS_TOKEN_{next(self._serial)}_{'x' * 40}"
        self._valid.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def _custom_send(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        if token not in self._valid:
            return _error(42001 if token.startswith("ACCESS_TOKEN_") else 40001, "access_token expired")
        if self.refuse_next:
            return _error(self.refuse_next.pop(0), "refused as scripted")
        body: dict[str, Any] = json.loads(await request.text())
        content = str(body["text"]["content"])
        if len(content.encode()) > MAX_TEXT_BYTES:
            return _error(45002, "content size out of limit")
        self.sent.append(CustomerMessage(str(body["touser"]), content))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": f"{message} rid: 0000"})
