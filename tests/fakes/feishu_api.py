"""A local fake of Feishu's wire API, for tests, on 127.0.0.1: the tenant access token, the bot's
own info, replying to a message and patching a card; plus ``event_body``/``event_headers``, which
build event deliveries as Feishu makes them (plain or encrypted, signed).

The production code talks to it through lark-oapi's real client (``domain`` pointed here) and its
real event dispatcher. ``messages`` holds what users would see: every message the bot sent, as its
card's markdown reads after all patches.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from Crypto.Cipher import AES

BOT_OPEN_ID = "ou_" + "b" * 32
USER_OPEN_ID = "ou_" + "a" * 32
OTHER_OPEN_ID = "ou_" + "c" * 32
P2P_CHAT = "oc_" + "1" * 32
GROUP_CHAT = "oc_" + "2" * 32
APP_SECRET = "test-app-secret-456"
VERIFICATION_TOKEN = "test-verification-token"
ENCRYPT_KEY = "test-encrypt-key"


@dataclass
class Posted:
    """One message the bot sent, as it currently reads."""

    message_id: str
    reply_to: str
    chat_id: str
    markdown: str
    edits: int = 0


class FakeFeishu:
    """The fake. ``app_id`` must be unique per test: lark-oapi caches tenant tokens per app id for
    the whole process."""

    def __init__(self) -> None:
        self.base_url = ""
        self.app_id = f"cli_{uuid.uuid4().hex[:16]}"
        self.messages: list[Posted] = []
        self.calls: list[str] = []
        self.tokens: set[str] = set()
        self.tokens_issued: list[str] = []
        self.refuse_credentials = False
        self._revoked: set[str] = set()
        self._chats: dict[str, str] = {}
        self._rate_limits: dict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/open-apis/auth/v3/tenant_access_token/internal", self._tenant_token)
        app.router.add_get("/open-apis/bot/v3/info", self._bot_info)
        app.router.add_post("/open-apis/im/v1/messages/{message_id}/reply", self._reply)
        app.router.add_patch("/open-apis/im/v1/messages/{message_id}", self._patch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting and inspection --------------------------------------------------------------

    def rate_limit(self, call: str, times: int = 1) -> None:
        """The next ``times`` calls of ``reply`` or ``patch`` get HTTP 429, code 99991400."""
        self._rate_limits[call] += times

    def revoke_tokens(self) -> None:
        self._revoked.update(self.tokens_issued)

    def in_chat(self, chat_id: str) -> list[str]:
        return [m.markdown for m in self.messages if m.chat_id == chat_id]

    def count(self, call: str) -> int:
        return self.calls.count(call)

    # --- events --------------------------------------------------------------------------------

    def message_event(
        self,
        text: str,
        *,
        group: bool = False,
        sender: str = USER_OPEN_ID,
        sender_type: str = "user",
        mentions: Sequence[tuple[str, str, str]] = (),
        message_type: str = "text",
        message_id: str | None = None,
        event_id: str | None = None,
        token: str = VERIFICATION_TOKEN,
    ) -> dict[str, Any]:
        """An ``im.message.receive_v1`` event (schema 2.0). ``mentions`` are (key, open_id, name),
        the key being the placeholder in ``text``, e.g. ``@_user_1``."""
        message_id = message_id or f"om_{next(self._ids):08d}"
        chat = GROUP_CHAT if group else P2P_CHAT
        self._chats[message_id] = chat
        content = json.dumps({"text": text}) if message_type == "text" else json.dumps({"image_key": "img_1"})
        return {
            "schema": "2.0",
            "header": {
                "event_id": event_id or uuid.uuid4().hex,
                "token": token,
                "create_time": str(int(time.time() * 1000)),
                "event_type": "im.message.receive_v1",
                "tenant_key": "tenant1",
                "app_id": self.app_id,
            },
            "event": {
                "sender": {
                    "sender_id": {"open_id": sender, "union_id": "on_x", "user_id": "u1"},
                    "sender_type": sender_type,
                    "tenant_key": "tenant1",
                },
                "message": {
                    "message_id": message_id,
                    "create_time": str(int(time.time() * 1000)),
                    "chat_id": chat,
                    "chat_type": "group" if group else "p2p",
                    "message_type": message_type,
                    "content": content,
                    "mentions": [
                        {"key": key, "id": {"open_id": open_id}, "name": name, "tenant_key": "tenant1"}
                        for key, open_id, name in mentions
                    ],
                },
            },
        }

    # --- the API -------------------------------------------------------------------------------

    async def _tenant_token(self, request: web.Request) -> web.Response:
        self.calls.append("tenant_token")
        body = await request.json()
        if self.refuse_credentials or (body.get("app_id"), body.get("app_secret")) != (self.app_id, APP_SECRET):
            return web.json_response({"code": 10014, "msg": "app secret invalid"})
        token = f"t-{uuid.uuid4().hex}"
        self.tokens_issued.append(token)
        return web.json_response({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200})

    def _refused(self, request: web.Request, call: str) -> web.Response | None:
        self.calls.append(call)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.tokens.add(token)
        if token not in self.tokens_issued or token in self._revoked:
            return web.json_response({"code": 99991663, "msg": "Invalid access token for authorization."}, status=400)
        if self._rate_limits[call]:
            self._rate_limits[call] -= 1
            return web.json_response(
                {"code": 99991400, "msg": "request trigger frequency limit"},
                status=429,
                headers={"x-ogw-ratelimit-reset": "1"},
            )
        return None

    async def _bot_info(self, request: web.Request) -> web.Response:
        refused = self._refused(request, "bot_info")
        if refused is not None:
            return refused
        return web.json_response(
            {"code": 0, "msg": "ok", "bot": {"activate_status": 2, "app_name": "chatbridge", "open_id": BOT_OPEN_ID}}
        )

    async def _reply(self, request: web.Request) -> web.Response:
        refused = self._refused(request, "reply")
        if refused is not None:
            return refused
        reply_to = request.match_info["message_id"]
        if reply_to not in self._chats:
            return web.json_response({"code": 230011, "msg": "The message was withdrawn."}, status=400)
        body = await request.json()
        assert body["msg_type"] == "interactive"
        message_id = f"om_bot{next(self._ids):08d}"
        self._chats[message_id] = self._chats[reply_to]
        self.messages.append(Posted(message_id, reply_to, self._chats[reply_to], _card_markdown(body["content"])))
        return web.json_response({"code": 0, "msg": "success", "data": {"message_id": message_id}})

    async def _patch(self, request: web.Request) -> web.Response:
        refused = self._refused(request, "patch")
        if refused is not None:
            return refused
        posted = next((m for m in self.messages if m.message_id == request.match_info["message_id"]), None)
        if posted is None:
            return web.json_response({"code": 230001, "msg": "message not found"}, status=400)
        posted.markdown = _card_markdown((await request.json())["content"])
        posted.edits += 1
        return web.json_response({"code": 0, "msg": "success", "data": {}})


def _card_markdown(content: str) -> str:
    card = json.loads(content)
    assert card["config"]["update_multi"] is True
    (element,) = card["elements"]
    assert element["tag"] == "markdown"
    return str(element["content"])


# --- deliveries as Feishu makes them --------------------------------------------------------------


def encrypted(payload: dict[str, Any], key: str = ENCRYPT_KEY) -> dict[str, Any]:
    """``{"encrypt": ...}``: AES-256-CBC with the SHA-256 of the key, a random IV first, base64."""
    plain = json.dumps(payload).encode()
    pad = AES.block_size - len(plain) % AES.block_size
    iv = os.urandom(AES.block_size)
    cipher = AES.new(hashlib.sha256(key.encode()).digest(), AES.MODE_CBC, iv)
    return {"encrypt": base64.b64encode(iv + cipher.encrypt(plain + bytes([pad]) * pad)).decode()}


def signed_headers(body: bytes, key: str = ENCRYPT_KEY) -> dict[str, str]:
    """``X-Lark-Signature``: SHA-256 hex of timestamp + nonce + encrypt key + body."""
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
    signature = hashlib.sha256((timestamp + nonce + key).encode() + body).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": timestamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": signature,
    }
