"""DingTalk's HTTP APIs as the bridge uses them: the access token, the Stream gateway's
connection ticket, and sending a markdown message through a sessionWebhook or the robot OpenAPI.

The dingtalk-stream SDK makes these calls with blocking ``requests`` from inside its event loop and
reads its endpoint from an environment variable at import time, so they are made here, on the
bridge's own aiohttp session, against ``adapters.dingtalk.api_base_url``. The SDK still parses the
messages and speaks the stream protocol (``adapters.dingtalk.stream``).

Nothing here logs a URL or a body: a sessionWebhook URL is a credential for its chat, and the
access token travels in a header.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from core.channel import PlatformRateLimited, PlatformTrouble, PlatformUnavailable

DEFAULT_API_URL = "https://api.dingtalk.com"
ROBOT_TOPIC = "/v1.0/im/bot/messages/get"
"""The stream topic robot messages arrive on (``dingtalk_stream.ChatbotMessage.TOPIC``)."""
TOKEN_MARGIN_S = 300.0
"""A token is renewed this long before DingTalk says it expires, as the SDK does."""
TIMEOUT_S = 15.0

_WEBHOOK_RATE_LIMITED = frozenset({130101, 660026})
"""sessionWebhook error codes for "sending too fast" (a chat takes about 20 robot messages a minute)."""
WEBHOOK_RATE_WAIT_S = 3.0
QPS_LIMIT_WAIT_S = 1.0


class DingTalkApiError(Exception):
    """DingTalk refused a call. ``code`` is its error code (OpenAPI ``code`` or webhook ``errcode``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if code else f"HTTP {status}")
        self.status = status
        self.code = code
        self.message = message


class DingTalkRateLimited(DingTalkApiError):
    def __init__(self, status: int, code: str, message: str, retry_after_s: float) -> None:
        super().__init__(status, code, message)
        self.retry_after_s = retry_after_s


def trouble(error: Exception) -> PlatformTrouble | None:
    """What a failed send means to the shared renderer: a rate limit waited out, a 5xx or a lost
    connection retried, anything else DingTalk's final word."""
    if isinstance(error, DingTalkRateLimited):
        return PlatformRateLimited(error.retry_after_s)
    if isinstance(error, DingTalkApiError):
        return PlatformUnavailable(str(error)) if error.status >= 500 else None
    if isinstance(error, aiohttp.ClientError | TimeoutError | OSError):
        return PlatformUnavailable(type(error).__name__)
    return None


@dataclass(frozen=True, slots=True)
class StreamTicket:
    endpoint: str
    ticket: str


class DingTalkApi:
    """One app's calls, on a session the adapter owns (``use``) or one made per call (``check``)."""

    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self.base_url = (base_url or DEFAULT_API_URL).rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    def use(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session

    # --- credentials ----------------------------------------------------------------------------

    async def access_token(self) -> str:
        """The app's access token, fetched again shortly before it expires or after a 401."""
        async with self._token_lock:
            if not self._token or time.monotonic() >= self._token_expires:
                body = await self._post(
                    "/v1.0/oauth2/accessToken", {"appKey": self._client_id, "appSecret": self._client_secret}
                )
                self._token = str(body["accessToken"])
                self._token_expires = time.monotonic() + float(body.get("expireIn", 7200)) - TOKEN_MARGIN_S
            return self._token

    def forget_token(self, token: str) -> None:
        """DingTalk refused ``token``; the next call fetches a new one (unless another did already)."""
        if self._token == token:
            self._token = ""

    async def stream_ticket(self) -> StreamTicket:
        """A one-use ticket for the Stream gateway, subscribed to robot messages only (the SDK's
        ``open_connection``, awaited instead of blocking the loop)."""
        body = await self._post(
            "/v1.0/gateway/connections/open",
            {
                "clientId": self._client_id,
                "clientSecret": self._client_secret,
                "subscriptions": [{"type": "CALLBACK", "topic": ROBOT_TOPIC}],
                "ua": "chatbridge (dingtalk-stream)",
                "localIp": _local_ip(),
            },
        )
        return StreamTicket(str(body["endpoint"]), str(body["ticket"]))

    # --- sending --------------------------------------------------------------------------------

    async def send_by_session(self, webhook: str, title: str, text: str) -> None:
        """Reply through the message's own sessionWebhook: no token, but valid only for a while."""
        body = await self._request(webhook, {"msgtype": "markdown", "markdown": {"title": title, "text": text}})
        errcode = int(body.get("errcode") or 0)
        if errcode in _WEBHOOK_RATE_LIMITED:
            raise DingTalkRateLimited(200, str(errcode), str(body.get("errmsg", "")), WEBHOOK_RATE_WAIT_S)
        if errcode:
            raise DingTalkApiError(200, str(errcode), str(body.get("errmsg", "")))

    async def send_private(self, robot_code: str, staff_id: str, title: str, text: str) -> None:
        body = await self._robot_call(
            "/v1.0/robot/oToMessages/batchSend", {"robotCode": robot_code, "userIds": [staff_id]}, title, text
        )
        if staff_id in (body.get("flowControlledStaffIdList") or []):
            raise DingTalkRateLimited(200, "flowControlled", "the recipient gets too many messages", QPS_LIMIT_WAIT_S)

    async def send_group(self, robot_code: str, conversation_id: str, title: str, text: str) -> None:
        await self._robot_call(
            "/v1.0/robot/groupMessages/send",
            {"robotCode": robot_code, "openConversationId": conversation_id},
            title,
            text,
        )

    async def _robot_call(self, path: str, target: dict[str, Any], title: str, text: str) -> dict[str, Any]:
        message = {
            "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": title, "text": text}, ensure_ascii=False),
        }
        for attempt in (1, 2):
            token = await self.access_token()
            try:
                return await self._post(path, target | message, token=token)
            except DingTalkApiError as error:
                if error.status != 401 or attempt == 2:
                    raise
                self.forget_token(token)
        raise AssertionError("unreachable")

    # --- HTTP -----------------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], *, token: str = "") -> dict[str, Any]:
        return await self._request(self.base_url + path, body, token=token)

    async def _request(self, url: str, body: dict[str, Any], *, token: str = "") -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["x-acs-dingtalk-access-token"] = token
        session = self._session
        own = session is None
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            async with session.post(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers) as reply:
                text = await reply.text()
                return _answer(reply.status, reply.headers, text)
        finally:
            if own:
                await session.close()


def _answer(status: int, headers: Any, text: str) -> dict[str, Any]:
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status < 400:
        return body
    code, message = str(body.get("code") or ""), str(body.get("message") or "")
    if status == 429:
        raise DingTalkRateLimited(status, code, message, float(headers.get("Retry-After", QPS_LIMIT_WAIT_S)))
    if status == 403 and "QpsLimit" in code:
        raise DingTalkRateLimited(status, code, message, QPS_LIMIT_WAIT_S)
    raise DingTalkApiError(status, code, message)


def _local_ip() -> str:
    """The address the gateway is told we have (the SDK sends it too); no packet is sent."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
    except OSError:
        return ""
