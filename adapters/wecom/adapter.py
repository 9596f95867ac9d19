"""WeCom applications over the official callback protocol (``/wecom/callback``).

The adapter only translates. WeCom posts what a member writes to the application, always
encrypted with the corp id as the receive id; a message becomes an ``IncomingMessage``
(``wecom:<UserID>`` as user and chat: applications receive private messages only) and the answer
goes out through ``message/send`` as WeCom Markdown, in parts under WeCom's limit. The callback is
acknowledged (an empty 200) once the engine has the message in the store, so WeCom's retries (it
waits five seconds, three deliveries in all) are only for messages the bridge did not take, and a
retry of a taken one is dropped by the engine's dedupe on MsgId.

Text is answered; other messages (images, voice, files, locations) get a short note that only text
is read for now. Events (a member opening the application, menu clicks) need no answer.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
from aiohttp import web

from adapters.kit import MessageHandler, Routes, UpdatesInFlight, setting, startup_errors
from adapters.wecom.format import to_wecom_markdown
from adapters.wecom.settings import WeComSettings
from adapters.weixin.api import WeixinApi, WeixinApiError
from adapters.weixin.callback import CallbackOpener, MalformedCallback
from adapters.weixin.crypto import CallbackRefused, MessageCipher
from core import texts
from core.channel import LengthUnit, PlatformLimits, PlatformTooLong, Receipt
from core.events import ChatKind, IncomingMessage
from core.render import send_text

log = logging.getLogger("chatbridge.wecom")

PLATFORM = "wecom"
CALLBACK_PATH = "/wecom/callback"
DEFAULT_API_URL = "https://qyapi.weixin.qq.com"
SEND_PATH = "/cgi-bin/message/send"
CONTENT_BYTES = 2048
"""The longest ``markdown`` (and ``text``) content WeCom takes, in UTF-8 bytes."""
LIMITS = PlatformLimits(
    max_message_chars=1900, min_edit_interval_s=0.0, can_edit=False, length_unit=LengthUnit.UTF8_BYTES
)
"""Application messages cannot be edited, so an answer is sent once, complete, cut a little under
``CONTENT_BYTES`` for what the Markdown conversion adds (inline-code marks around code lines)."""
ACK_BUDGET_S = 4.0
"""How long a callback's answer waits for the store; WeCom delivers again after five seconds."""

_STARTUP_PROBLEMS = {
    40013: f"the corp id is not valid (check {setting(PLATFORM, 'corp_id')})",
    40001: f"the secret is not valid (check {setting(PLATFORM, 'corp_secret')})",
    40091: f"the secret is not valid (check {setting(PLATFORM, 'corp_secret')})",
    60020: "this server's IP address is not among the application's trusted IPs (企业可信IP) in the admin console",
    301002: f"the secret belongs to another application (check {setting(PLATFORM, 'agent_id')})",
    40056: f"the agent id is not valid (check {setting(PLATFORM, 'agent_id')})",
}


def translate(fields: dict[str, str], agent_id: int) -> IncomingMessage | str | None:
    """A callback as the engine's message, as a note to send back (``str``), or None for nothing.
    A callback for another application of the corp is nothing."""
    if fields.get("AgentID", str(agent_id)).strip() != str(agent_id):
        return None
    kind, user = fields.get("MsgType", ""), fields.get("FromUserName", "")
    if kind == "event" or not user:
        return None
    if kind != "text":
        return texts.ONLY_TEXT_SUPPORTED
    identity = f"{PLATFORM}:{user}"
    return IncomingMessage(
        platform=PLATFORM,
        message_id=fields.get("MsgId", ""),
        chat_id=identity,
        user_id=identity,
        text=fields.get("Content", ""),
        chat_kind=ChatKind.PRIVATE,
    )


class WeComChannel:
    """Answers to one member, through ``message/send``."""

    limits = LIMITS

    def __init__(self, api: WeixinApi, user: str, agent_id: int) -> None:
        self._api = api
        self._user = user
        self._agent_id = agent_id
        self.route = json.dumps([user])

    async def send(self, text: str) -> object:
        content = to_wecom_markdown(text)
        if LengthUnit.UTF8_BYTES.measure(content) > CONTENT_BYTES:
            raise PlatformTooLong(f"{LengthUnit.UTF8_BYTES.measure(content)} bytes as WeCom Markdown")
        body = {
            "touser": self._user,
            "msgtype": "markdown",
            "agentid": self._agent_id,
            "markdown": {"content": content},
        }
        try:
            answer = await self._api.post(SEND_PATH, body)
        except WeixinApiError as refused:
            log.warning("WeCom refused a message: %s", refused)
            raise
        if answer.get("invaliduser"):
            # The member left, or is outside the application's visible range (可见范围).
            log.warning("WeCom did not deliver to %s: not a member the application can reach", self._user)
        return None

    async def edit(self, handle: object, text: str) -> None:
        """WeCom messages cannot be edited; ``can_edit=False`` keeps the renderer from asking."""
        raise NotImplementedError("WeCom application messages cannot be edited")

    async def typing(self) -> None:
        """WeCom has no typing signal for applications."""


class WeComAdapter:
    name = PLATFORM

    def __init__(self, settings: WeComSettings, routes: Routes) -> None:
        self._settings = settings
        cipher = MessageCipher(settings.encoding_aes_key.get_secret_value(), settings.corp_id)
        self._opener = CallbackOpener(settings.token.get_secret_value(), cipher)
        self._api = WeixinApi(
            settings.api_base_url or DEFAULT_API_URL,
            "/cgi-bin/gettoken",
            {"corpid": settings.corp_id, "corpsecret": settings.corp_secret.get_secret_value()},
        )
        self._updates = UpdatesInFlight()
        self._handler: MessageHandler | None = None
        self._stopped = asyncio.Event()
        routes.add_route("GET", CALLBACK_PATH, self._on_verify)
        routes.add_route("POST", CALLBACK_PATH, self._on_callback)

    @property
    def ready(self) -> bool:
        return self._handler is not None and not self._stopped.is_set()

    async def run(self, handler: MessageHandler) -> None:
        try:
            name = await self._agent_name()
            self._handler = handler
            handler.attach(PLATFORM, self._reopen)
            log.info("taking callbacks on %s for the application %s (agent %d)", CALLBACK_PATH, name, self._agent_id)
            await self._stopped.wait()
        finally:
            try:
                await self._updates.wait()
            finally:
                await self._api.aclose()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        try:
            name = await self._agent_name()
        finally:
            await self._api.aclose()
        return f"application {name} (agent {self._agent_id}) of corp {self._settings.corp_id}: access token fetched"

    @property
    def _agent_id(self) -> int:
        return self._settings.agent_id

    async def _agent_name(self) -> str:
        """``agent/get`` checks the token and that the secret is this application's."""
        with startup_errors(PLATFORM, self._startup_problem):
            agent = await self._api.get("/cgi-bin/agent/get", {"agentid": str(self._agent_id)})
        return str(agent.get("name") or self._agent_id)

    def _startup_problem(self, error: Exception) -> str | None:
        if isinstance(error, WeixinApiError):
            known = _STARTUP_PROBLEMS.get(error.errcode)
            return known or f"the access token was refused: {error} (check {setting(PLATFORM, 'corp_secret')})"
        if isinstance(error, httpx.HTTPError):
            return f"cannot reach {self._api.base_url}: {type(error).__name__}"
        return None

    # --- callbacks ------------------------------------------------------------------------------

    async def _on_verify(self, request: web.Request) -> web.Response:
        """The console's URL check: ``echostr`` is encrypted, and the answer is its plaintext."""
        try:
            echo = self._opener.echo_encrypted(request.query)
        except CallbackRefused as refused:
            log.warning("refused a URL check from %s: %s", request.remote, refused)
            return web.Response(status=401, text="bad signature")
        return web.Response(text=echo)

    async def _on_callback(self, request: web.Request) -> web.Response:
        """401 for a bad signature, 400 for what is not a callback, both before anything is read;
        503 while not taking messages, or when the store could not take this one (WeCom retries)."""
        if not self.ready:
            return web.Response(status=503, text="not ready")
        try:
            callback = self._opener.open(request.query, await request.read())
        except MalformedCallback as malformed:
            log.warning("refused a callback from %s: %s", request.remote, malformed)
            return web.Response(status=400, text="not a callback")
        except CallbackRefused as refused:
            log.warning("refused a callback from %s: %s", request.remote, refused)
            return web.Response(status=401, text="bad signature")
        translated = translate(dict(callback.fields), self._agent_id)
        if translated is None:
            return web.Response()
        user = callback.fields.get("FromUserName", "")
        channel = WeComChannel(self._api, user, self._agent_id)
        if isinstance(translated, str):
            self._updates.spawn(self._note(channel, translated))
            return web.Response()
        if not translated.message_id:
            return web.Response(status=400, text="no message id")
        assert self._handler is not None
        receipt = Receipt(redelivers=True)
        self._updates.spawn(self._handler.handle(translated, channel, receipt))
        try:
            taken = await asyncio.wait_for(receipt.taken(), ACK_BUDGET_S)
        except TimeoutError:
            taken = True  # still on its way into the store; WeCom's retry would only be a duplicate
        return web.Response() if taken else web.Response(status=503, text="not stored; send it again")

    async def _note(self, channel: WeComChannel, text: str) -> None:
        try:
            await send_text(channel, text)
        except Exception as error:  # noqa: BLE001 - a courtesy note; the platform's refusal is logged
            log.warning("could not send a note to WeCom: %s", type(error).__name__)

    def _reopen(self, route: str) -> WeComChannel:
        (user,) = json.loads(route)
        return WeComChannel(self._api, user, self._agent_id)
