"""A local fake of DingTalk's wire API, for tests, on 127.0.0.1: the Stream gateway (the
``connections/open`` ticket call and the WebSocket with its frames and acknowledgements), the
access token, the robot OpenAPI send endpoints and the sessionWebhooks of the messages it makes.

The production code talks to it through the real dingtalk-stream SDK (its frames, its callback
handler, its acks) and the adapter's own HTTP calls with ``api_base_url`` pointed here. ``sent``
holds what users would see: every message the robot sent, in order, with the path it took.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

CLIENT_ID = "dingtestclient"
CLIENT_SECRET = "test-client-secret-123"
ROBOT_USER = "$:LWCP_v1:$robotSelfId=="
CORP = "dingcorp1"
ROBOT_TOPIC = "/v1.0/im/bot/messages/get"


@dataclass
class Sent:
    """One message the robot sent: the conversation it shows in, and how it got there."""

    conversation: str
    title: str
    text: str
    via: str
    """``webhook`` (a message's sessionWebhook) or ``openapi`` (the robot send endpoints)."""


@dataclass
class Delivery:
    """One robot message pushed over the stream; ``acked`` is set when the bridge acknowledges it."""

    frame_id: str
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ack: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Session:
    conversation: str
    expires_ms: int


class FakeDingTalk:
    """The fake. Tests script failures with ``refuse_credentials``, ``expire_sessions`` and
    ``rate_limit``; ``robot_message`` builds what DingTalk would send."""

    def __init__(self) -> None:
        self.base_url = ""
        self.sent: list[Sent] = []
        self.calls: list[str] = []
        self.tokens: set[str] = set()
        """Every access token the bridge presented."""
        self.tokens_issued: list[str] = []
        self.refuse_credentials = False
        self.token_expire_in_s = 7200
        self.connections_opened = 0
        self.pongs: list[dict[str, Any]] = []
        self._sessions: dict[str, _Session] = {}
        self._private_conversations: dict[str, str] = {}
        self._tickets: set[str] = set()
        self._rate_limits: dict[str, list[str]] = defaultdict(list)
        self._revoked: set[str] = set()
        self._socket: web.WebSocketResponse | None = None
        self._socket_open = asyncio.Event()
        self._deliveries: dict[str, Delivery] = {}
        self._msg_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1.0/gateway/connections/open", self._open_connection)
        app.router.add_get("/connect", self._connect)
        app.router.add_post("/v1.0/oauth2/accessToken", self._access_token)
        app.router.add_post("/v1.0/robot/oToMessages/batchSend", self._send_private)
        app.router.add_post("/v1.0/robot/groupMessages/send", self._send_group)
        app.router.add_post("/robot/sendBySession", self._send_by_session)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting and inspection --------------------------------------------------------------

    def robot_message(
        self,
        text: str,
        *,
        group: bool = False,
        conversation: str | None = None,
        staff_id: str | None = "manager4220",
        sender_id: str = "$:LWCP_v1:$senderA+b/c==",
        in_at_list: bool | None = None,
        at_robot: bool = False,
        msg_id: str | None = None,
        webhook_valid_s: float = 5400.0,
        msgtype: str = "text",
    ) -> dict[str, Any]:
        """A robot message as DingTalk sends it, with a sessionWebhook valid for ``webhook_valid_s``.

        In a group DingTalk has already removed the robot's ``@name`` from the text and says in
        ``isInAtList`` whether the robot was @-ed (``in_at_list`` defaults to ``group``)."""
        conversation = conversation or ("cidGroup1+x/y==" if group else "cidPrivate1+p/q==")
        session = uuid.uuid4().hex
        expires_ms = int((time.time() + webhook_valid_s) * 1000)
        self._sessions[session] = _Session(conversation, expires_ms)
        if not group and staff_id:
            self._private_conversations[staff_id] = conversation
        message: dict[str, Any] = {
            "conversationId": conversation,
            "chatbotCorpId": CORP,
            "chatbotUserId": ROBOT_USER,
            "msgId": msg_id or f"msg{next(self._msg_ids):06d}",
            "senderNick": "Ann",
            "isAdmin": False,
            "sessionWebhookExpiredTime": expires_ms,
            "createAt": int(time.time() * 1000),
            "senderCorpId": CORP,
            "conversationType": "2" if group else "1",
            "senderId": sender_id,
            "sessionWebhook": f"{self.base_url}/robot/sendBySession?session={session}",
            "robotCode": CLIENT_ID,
            "msgtype": msgtype,
        }
        if msgtype == "text":
            message["text"] = {"content": text}
        else:
            message["content"] = {"downloadCode": "dl-code-1"}
        if staff_id:
            message["senderStaffId"] = staff_id
        if group:
            message["conversationTitle"] = "Team"
            message["isInAtList"] = group if in_at_list is None else in_at_list
            if at_robot:
                message["atUsers"] = [{"dingtalkId": ROBOT_USER}]
        return message

    def expire_sessions(self) -> None:
        """Every sessionWebhook handed out so far stops working, whatever its expiry said."""
        self._sessions.clear()

    def revoke_tokens(self) -> None:
        """Every access token issued so far is refused with 401 from now on."""
        self._revoked.update(self.tokens_issued)

    def rate_limit(self, path: str, *answers: str) -> None:
        """The next calls of ``path`` (``webhook``, ``private``, ``group``) are answered with a rate
        limit: ``"429"`` (HTTP 429), ``"qps"`` (403 QpsLimit) or ``"webhook"`` (errcode 130101)."""
        self._rate_limits[path] += list(answers)

    def in_conversation(self, conversation: str) -> list[str]:
        return [sent.text for sent in self.sent if sent.conversation == conversation]

    def count(self, name: str) -> int:
        return self.calls.count(name)

    # --- the stream ----------------------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._socket_open.wait(), timeout)

    async def deliver(self, message: dict[str, Any]) -> Delivery:
        """Push one robot message over the stream, as a CALLBACK frame of the robot topic."""
        assert self._socket is not None, "no stream connection"
        delivery = Delivery(uuid.uuid4().hex)
        self._deliveries[delivery.frame_id] = delivery
        await self._socket.send_str(
            json.dumps(
                {
                    "specVersion": "1.0",
                    "type": "CALLBACK",
                    "headers": {
                        "appId": "app-1",
                        "connectionId": "conn-1",
                        "contentType": "application/json",
                        "messageId": delivery.frame_id,
                        "time": str(int(time.time() * 1000)),
                        "topic": ROBOT_TOPIC,
                    },
                    "data": json.dumps(message, ensure_ascii=False),
                }
            )
        )
        return delivery

    async def ping(self) -> Delivery:
        """A SYSTEM ping; the bridge must answer it with the same data."""
        assert self._socket is not None, "no stream connection"
        delivery = Delivery(uuid.uuid4().hex)
        self._deliveries[delivery.frame_id] = delivery
        await self._socket.send_str(
            json.dumps(
                {
                    "specVersion": "1.0",
                    "type": "SYSTEM",
                    "headers": {"contentType": "application/json", "messageId": delivery.frame_id, "topic": "ping"},
                    "data": json.dumps({"opaque": delivery.frame_id}),
                }
            )
        )
        return delivery

    async def ask_to_reconnect(self) -> None:
        """The SYSTEM ``disconnect`` the gateway sends before it closes a connection."""
        assert self._socket is not None, "no stream connection"
        self._socket_open.clear()
        await self._socket.send_str(
            json.dumps({"specVersion": "1.0", "type": "SYSTEM", "headers": {"topic": "disconnect"}, "data": "{}"})
        )

    async def drop_socket(self) -> None:
        assert self._socket is not None, "no stream connection"
        self._socket_open.clear()
        await self._socket.close()

    async def _open_connection(self, request: web.Request) -> web.Response:
        self.calls.append("connections/open")
        body = await request.json()
        if self.refuse_credentials or (body.get("clientId"), body.get("clientSecret")) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"code": "InvalidAuthentication", "message": "bad credentials"}, status=401)
        topics = {(s.get("type"), s.get("topic")) for s in body.get("subscriptions", [])}
        if ("CALLBACK", ROBOT_TOPIC) not in topics:
            return web.json_response({"code": "InvalidParameter", "message": "no robot subscription"}, status=400)
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        endpoint = self.base_url.replace("http://", "ws://") + "/connect"
        return web.json_response({"endpoint": endpoint, "ticket": ticket})

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=403, text="bad ticket")
        self._tickets.discard(ticket)  # a ticket opens one connection
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        self.connections_opened += 1
        self._socket_open.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self._take_ack(json.loads(message.data))
        return socket

    def _take_ack(self, ack: dict[str, Any]) -> None:
        delivery = self._deliveries.get(str(ack.get("headers", {}).get("messageId", "")))
        if delivery is None:
            return
        delivery.ack = ack
        if json.loads(ack.get("data") or "{}").get("opaque") is not None:
            self.pongs.append(ack)
        delivery.acked.set()

    # --- the OpenAPI ---------------------------------------------------------------------------

    async def _access_token(self, request: web.Request) -> web.Response:
        self.calls.append("accessToken")
        body = await request.json()
        if self.refuse_credentials or (body.get("appKey"), body.get("appSecret")) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"code": "invalidClientIdOrSecret", "message": "bad credentials"}, status=400)
        token = f"token-{len(self.tokens_issued) + 1}-{uuid.uuid4().hex[:8]}"
        self.tokens_issued.append(token)
        return web.json_response({"accessToken": token, "expireIn": self.token_expire_in_s})

    async def _send_private(self, request: web.Request) -> web.Response:
        refused = self._refused(request, "private")
        if refused is not None:
            return refused
        body = await request.json()
        assert body["robotCode"] == CLIENT_ID and body["msgKey"] == "sampleMarkdown"
        param = json.loads(body["msgParam"])
        for staff in body["userIds"]:
            self.sent.append(
                Sent(self._private_conversations.get(staff, staff), param["title"], param["text"], "openapi")
            )
        return web.json_response({"processQueryKey": uuid.uuid4().hex, "flowControlledStaffIdList": []})

    async def _send_group(self, request: web.Request) -> web.Response:
        refused = self._refused(request, "group")
        if refused is not None:
            return refused
        body = await request.json()
        assert body["robotCode"] == CLIENT_ID and body["msgKey"] == "sampleMarkdown"
        param = json.loads(body["msgParam"])
        self.sent.append(Sent(body["openConversationId"], param["title"], param["text"], "openapi"))
        return web.json_response({"processQueryKey": uuid.uuid4().hex})

    def _refused(self, request: web.Request, path: str) -> web.Response | None:
        self.calls.append(path)
        token = request.headers.get("x-acs-dingtalk-access-token", "")
        self.tokens.add(token)
        if token not in self.tokens_issued or token in self._revoked:
            return web.json_response({"code": "InvalidAuthentication", "message": "token invalid"}, status=401)
        if self._rate_limits[path]:
            answer = self._rate_limits[path].pop(0)
            if answer == "429":
                return web.json_response({"code": "Throttling"}, status=429, headers={"Retry-After": "1"})
            return web.json_response({"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "qps"}, status=403)
        return None

    async def _send_by_session(self, request: web.Request) -> web.Response:
        self.calls.append("webhook")
        session = self._sessions.get(request.query.get("session", ""))
        if session is None or session.expires_ms < time.time() * 1000:
            return web.json_response({"errcode": 300001, "errmsg": "session not found or expired"})
        if self._rate_limits["webhook"]:
            self._rate_limits["webhook"].pop(0)
            return web.json_response({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
        body = await request.json()
        assert body["msgtype"] == "markdown"
        self.sent.append(Sent(session.conversation, body["markdown"]["title"], body["markdown"]["text"], "webhook"))
        return web.json_response({"errcode": 0, "errmsg": "ok"})
