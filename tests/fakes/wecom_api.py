"""A local fake of the WeCom server API on 127.0.0.1: access tokens (``/cgi-bin/gettoken``),
``/cgi-bin/agent/get`` and application messages (``/cgi-bin/message/send``).

It answers as WeCom does: HTTP 200 with ``errcode``/``errmsg``, 40013 for a wrong corp id, 40001
for a wrong secret, 42001 for a token that expired, 301002 for another application's agent id,
45002 for content over 2,048 bytes. Tests read ``sent`` and ``token_fetches``; ``expire_tokens``
ends every token issued so far.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CORP_ID = "ww1436e0e65a779aee"
CORP_SECRET = "corp-secret-for-tests-0123456789"
AGENT_ID = 1000002
AGENT_NAME = "chatbridge"
MAX_CONTENT_BYTES = 2048


@dataclass(frozen=True)
class AppMessage:
    touser: str
    msgtype: str
    content: str


class FakeWeComApi:
    def __init__(self) -> None:
        self.api_url = ""
        self.sent: list[AppMessage] = []
        self.token_fetches = 0
        self._valid: set[str] = set()
        self._serial = itertools.count(1)
        self._runner: web.AppRunner | None = None

    def expire_tokens(self) -> None:
        self._valid.clear()

    def to(self, user: str) -> list[str]:
        return [message.content for message in self.sent if message.touser == user]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._token)
        app.router.add_get("/cgi-bin/agent/get", self._agent)
        app.router.add_post("/cgi-bin/message/send", self._send)
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
        if request.query.get("corpid") != CORP_ID:
            return _error(40013, "invalid corpid")
        if request.query.get("corpsecret") != CORP_SECRET:
            return _error(40001, "invalid credential")
        self.token_fetches += 1
        token = f"WECOM_TOKEN_{next(self._serial)}_{'y' * 40}"
        self._valid.add(token)
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

    def _token_problem(self, request: web.Request) -> web.Response | None:
        if request.query.get("access_token", "") not in self._valid:
            return _error(42001, "access_token expired")
        return None

    async def _agent(self, request: web.Request) -> web.Response:
        if (problem := self._token_problem(request)) is not None:
            return problem
        if request.query.get("agentid") != str(AGENT_ID):
            return _error(301002, "not allow operate another agent with this accesstoken.")
        return web.json_response({"errcode": 0, "errmsg": "ok", "agentid": AGENT_ID, "name": AGENT_NAME})

    async def _send(self, request: web.Request) -> web.Response:
        if (problem := self._token_problem(request)) is not None:
            return problem
        body: dict[str, Any] = json.loads(await request.text())
        if body.get("agentid") != AGENT_ID:
            return _error(301002, "not allow operate another agent with this accesstoken.")
        kind = str(body["msgtype"])
        content = str(body[kind]["content"])
        if len(content.encode()) > MAX_CONTENT_BYTES:
            return _error(45002, "content size out of limit")
        self.sent.append(AppMessage(str(body["touser"]), kind, content))
        return web.json_response({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": f"m{len(self.sent)}"})


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": f"{message}, hint: [0000]"})
