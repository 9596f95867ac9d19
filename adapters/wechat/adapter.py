"""WeChat Official Accounts over the official callback protocol (``/wechat/callback``).

The adapter only translates. A callback becomes an ``IncomingMessage`` (``wechat:<openid>`` as both
user and chat: an Official Account talks to each follower privately), and the engine's answer goes
back as the passive reply where WeChat's five-second rule allows (``adapters.wechat.passive``),
otherwise as ``async_reply`` says: customer-service messages, or the user's next message.

What is answered: text messages; voice messages by WeChat's own speech recognition (the
``Recognition`` field, when "接收语音识别结果" is on); a ``subscribe`` event with a welcome and the
command list. Images and other media get a short note that only text is read (media download is
not built yet). Other events (unsubscribe, menu clicks, scans) need no answer.

Dedupe: the MsgId of a message, and FromUserName + CreateTime for events (WeChat's own advice),
are the message id, so the engine's store-backed dedupe drops what another process or an earlier
run saw; the retries of a message still in progress here never reach the engine (``Exchange``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
from aiohttp import web

from adapters.kit import MessageHandler, Routes, UpdatesInFlight, setting, startup_errors
from adapters.wechat.format import to_plain
from adapters.wechat.passive import WECHAT_TIMINGS, Exchange, Outbox, PassiveTimings
from adapters.wechat.settings import WeChatSettings
from adapters.weixin.api import WeixinApi, WeixinApiError
from adapters.weixin.callback import Callback, CallbackOpener, MalformedCallback, xml_document
from adapters.weixin.crypto import CallbackRefused, MessageCipher
from core import texts
from core.channel import LengthUnit, PlatformLimits, PlatformTooLong, Receipt
from core.events import ChatKind, IncomingMessage

log = logging.getLogger("chatbridge.wechat")

PLATFORM = "wechat"
CALLBACK_PATH = "/wechat/callback"
DEFAULT_API_URL = "https://api.weixin.qq.com"
TEXT_BYTES = 2048
"""The longest text WeChat takes in one message (passive or customer-service), in UTF-8 bytes."""
LIMITS = PlatformLimits(
    max_message_chars=1900, min_edit_interval_s=0.0, can_edit=False, length_unit=LengthUnit.UTF8_BYTES
)
"""Messages cannot be edited, so an answer goes out once, complete. 1,900 bytes leave room under
``TEXT_BYTES`` for the "more follows" note of ``on_next_message``."""
CUSTOMER_SERVICE_PATH = "/cgi-bin/message/custom/send"
SUCCESS = "success"
"""What WeChat takes as "no reply, and do not retry"."""

_STARTUP_PROBLEMS = {
    40013: "the app id is not valid (check adapters.wechat.app_id)",
    40125: "the app secret is not valid (check adapters.wechat.app_secret)",
    40001: "the app secret is not valid (check adapters.wechat.app_secret)",
    40164: "this server's IP address is not on the account's IP allow list (IP白名单) in the console",
    61004: "this server's IP address is not on the account's IP allow list (IP白名单) in the console",
}


@dataclass(frozen=True, slots=True)
class Translated:
    """What a callback asks of the bridge: a message for the engine (with a ``preface`` for its
    answer's first part), or a ``direct`` answer that needs no engine."""

    message: IncomingMessage | None = None
    preface: str = ""
    direct: str | None = None


def translate(fields: Mapping[str, str]) -> Translated | None:
    """A callback's fields as what to do with them; None when nothing is to be answered."""
    openid, kind = fields.get("FromUserName", ""), fields.get("MsgType", "")
    identity = f"{PLATFORM}:{openid}"

    def message(message_id: str, text: str) -> IncomingMessage:
        return IncomingMessage(
            platform=PLATFORM,
            message_id=message_id,
            chat_id=identity,
            user_id=identity,
            text=text,
            chat_kind=ChatKind.PRIVATE,
        )

    if kind == "event":
        if fields.get("Event") == "subscribe":
            return Translated(message(f"subscribe:{fields.get('CreateTime', '')}", "/help"), preface=texts.WELCOME)
        return None
    msg_id = fields.get("MsgId", "")
    if kind == "text":
        return Translated(message(msg_id, fields.get("Content", "")))
    if kind == "voice" and fields.get("Recognition", "").strip():
        return Translated(message(msg_id, fields["Recognition"].strip()))
    return Translated(direct=texts.ONLY_TEXT_SUPPORTED)


def passive_reply(fields: Mapping[str, str], text: str, now: float) -> str:
    """The XML of a text reply to the callback ``fields``: to the user, from the account."""
    return xml_document(
        {
            "ToUserName": fields.get("FromUserName", ""),
            "FromUserName": fields.get("ToUserName", ""),
            "CreateTime": int(now),
            "MsgType": "text",
            "Content": text,
        }
    )


SendLater = Callable[[str, str], Awaitable[None]]
"""How a text reaches a user when no passive reply can carry it: (openid, text)."""


class WeChatChannel:
    """The answer to one message: its first part as the passive reply while a delivery still
    listens (``passive``), the rest, and everything when none does, through ``send_later``."""

    limits = LIMITS

    def __init__(
        self, openid: str, message_key: str, send_later: SendLater, passive: Exchange | None = None, preface: str = ""
    ) -> None:
        self._openid = openid
        self._send_later = send_later
        self._passive = passive
        self._preface = preface
        self.route = json.dumps([openid, message_key])

    async def send(self, text: str) -> object:
        plain = to_plain(text)
        if self._preface:
            plain = f"{self._preface}\n\n{plain}"
        if LengthUnit.UTF8_BYTES.measure(plain) > LIMITS.max_message_chars:
            raise PlatformTooLong(f"{LengthUnit.UTF8_BYTES.measure(plain)} bytes as plain text")
        self._preface = ""
        if self._passive is not None and await self._passive.offer(plain):
            return None
        await self._send_later(self._openid, plain)
        return None

    async def edit(self, handle: object, text: str) -> None:
        """WeChat messages cannot be edited; ``can_edit=False`` keeps the renderer from asking."""
        raise NotImplementedError("WeChat messages cannot be edited")

    async def typing(self) -> None:
        """Nothing to show: a passive reply is one message, and the customer-service typing signal
        would spend API quota on every answer."""


class WeChatAdapter:
    name = PLATFORM

    def __init__(
        self,
        settings: WeChatSettings,
        routes: Routes,
        *,
        timings: PassiveTimings = WECHAT_TIMINGS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timings`` is WeChat's clock (tests run it fast); ``clock`` is monotonic."""
        self._settings = settings
        self._timings = timings
        self._clock = clock
        key = settings.encoding_aes_key.get_secret_value()
        cipher = MessageCipher(key, settings.app_id) if key else None
        self._opener = CallbackOpener(settings.token.get_secret_value(), cipher)
        secret = settings.app_secret.get_secret_value()
        self._api = (
            WeixinApi(
                settings.api_base_url or DEFAULT_API_URL,
                "/cgi-bin/token",
                {"grant_type": "client_credential", "appid": settings.app_id, "secret": secret},
            )
            if secret
            else None
        )
        self._outbox = Outbox() if settings.async_reply == "on_next_message" else None
        self._exchanges: dict[str, Exchange] = {}
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
            if self._api is not None:
                await self._fetch_token()
            self._handler = handler
            handler.attach(PLATFORM, self._reopen)
            log.info(
                "taking callbacks on %s for app %s (%s mode, late answers: %s)",
                CALLBACK_PATH,
                self._settings.app_id,
                "safe" if self._opener.encrypts else "plaintext",
                self._settings.async_reply,
            )
            await self._stopped.wait()
        finally:
            try:
                await self._updates.wait()
            finally:
                if self._api is not None:
                    await self._api.aclose()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        mode = "safe mode" if self._opener.encrypts else "plaintext mode"
        if self._api is None:
            return f"app {self._settings.app_id} ({mode}; no app_secret, so late answers come with the next message)"
        try:
            await self._fetch_token()
        finally:
            await self._api.aclose()
        return f"app {self._settings.app_id}: access token fetched ({mode}, late answers: {self._settings.async_reply})"

    async def _fetch_token(self) -> None:
        assert self._api is not None
        with startup_errors(PLATFORM, self._startup_problem):
            await self._api.access_token()

    def _startup_problem(self, error: Exception) -> str | None:
        if isinstance(error, WeixinApiError):
            known = _STARTUP_PROBLEMS.get(error.errcode)
            return known or f"the access token was refused: {error} (check {setting(PLATFORM, 'app_secret')})"
        if isinstance(error, httpx.HTTPError):
            assert self._api is not None
            return f"cannot reach {self._api.base_url}: {type(error).__name__}"
        return None

    # --- callbacks ------------------------------------------------------------------------------

    async def _on_verify(self, request: web.Request) -> web.Response:
        """The console's server check: echo ``echostr`` when the signature is ours."""
        try:
            echo = self._opener.echo_plain(request.query)
        except CallbackRefused as refused:
            log.warning("refused a server check from %s: %s", request.remote, refused)
            return web.Response(status=401, text="bad signature")
        return web.Response(text=echo)

    async def _on_callback(self, request: web.Request) -> web.StreamResponse:
        """A bad signature is 401 and a body that is not a callback 400, both before anything is
        read from it; 503 while not taking messages, or when the store could not take this one."""
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
        translated = translate(callback.fields)
        if translated is None:
            return await self._respond(request, callback, None)
        if translated.direct is not None or translated.message is None:
            return await self._respond(request, callback, translated.direct)
        return await self._take(request, callback, translated.message, translated.preface)

    async def _take(
        self, request: web.Request, callback: Callback, message: IncomingMessage, preface: str
    ) -> web.StreamResponse:
        openid = callback.fields.get("FromUserName", "")
        if not openid or not message.message_id.strip(":"):
            return web.Response(status=400, text="no sender or message id")
        key = message.dedupe_key
        exchange = self._exchanges.get(key)
        if exchange is None:
            if self._outbox is not None and self._outbox.waiting(openid):
                # An answer is waiting for this user's next message: this one only fetches it.
                return await self._respond(request, callback, self._next_part(openid))
            exchange = Exchange(self._timings, self._clock)
            self._exchanges[key] = exchange
            receipt = Receipt(redelivers=True)
            channel = self._channel(openid, key, exchange, preface)
            assert self._handler is not None
            self._updates.spawn(self._answer(self._handler, key, message, channel, exchange, receipt))
            try:
                if not await asyncio.wait_for(receipt.taken(), self._timings.reply_within_s):
                    return web.Response(status=503, text="the message could not be stored; send it again")
            except TimeoutError:
                pass  # still on its way into the store: wait for its answer like any delivery
        return await self._reply_when_ready(request, callback, exchange, openid)

    async def _reply_when_ready(
        self, request: web.Request, callback: Callback, exchange: Exchange, openid: str
    ) -> web.StreamResponse:
        """One delivery's part in the five-second rule (see ``adapters.wechat.passive``)."""
        exchange.deliveries += 1
        arrived = self._clock()
        last = exchange.deliveries >= self._timings.deliveries
        until = arrived + self._timings.reply_within_s
        if self._outbox is None:
            part = await exchange.take(until)
            if part is not None:
                text, written = part
                return await self._respond(request, callback, text, written)
            if last or exchange.done.is_set() or not exchange.open:
                exchange.close()
                return await self._respond(request, callback, None)
        else:
            if await exchange.wait_done(until):
                return await self._respond(request, callback, self._next_part(openid))
            if last:
                exchange.close()
                return await self._respond(request, callback, self._next_part(openid) or texts.ANSWER_WITH_NEXT_MESSAGE)
        await asyncio.sleep(max(arrived + self._timings.hold_s - self._clock(), 0.0))
        return web.Response(text=SUCCESS)

    async def _respond(
        self,
        request: web.Request,
        callback: Callback,
        text: str | None,
        written: asyncio.Future[bool] | None = None,
    ) -> web.StreamResponse:
        """Write the passive reply (``success`` for none) and tell ``written`` whether it got out."""
        delivered = False
        try:
            if text is None:
                response = web.Response(text=SUCCESS)
            else:
                reply = passive_reply(callback.fields, text, time.time())
                body = self._opener.seal(reply) if callback.encrypted else reply
                response = web.Response(text=body, content_type="application/xml")
            await response.prepare(request)
            await response.write_eof()
            delivered = True
            return response
        finally:
            if written is not None and not written.done():
                written.set_result(delivered)

    # --- answers --------------------------------------------------------------------------------

    async def _answer(
        self,
        handler: MessageHandler,
        key: str,
        message: IncomingMessage,
        channel: WeChatChannel,
        exchange: Exchange,
        receipt: Receipt,
    ) -> None:
        try:
            await handler.handle(message, channel, receipt)
        finally:
            exchange.finish()
            if await receipt.taken():
                # Kept while a late retry may still come, so that it finds the answer given.
                wait = max(exchange.deadline - self._clock(), 0.0)
                asyncio.get_running_loop().call_later(wait, self._forget, key, exchange)
            else:
                self._forget(key, exchange)  # not stored: WeChat's retry is a new delivery

    def _forget(self, key: str, exchange: Exchange) -> None:
        if self._exchanges.get(key) is exchange:
            del self._exchanges[key]

    def _channel(self, openid: str, key: str, exchange: Exchange | None, preface: str = "") -> WeChatChannel:
        passive = exchange if self._outbox is None else None
        return WeChatChannel(openid, key, self._send_later, passive, preface)

    def _reopen(self, route: str) -> WeChatChannel:
        openid, key = json.loads(route)
        return self._channel(openid, key, self._exchanges.get(key))

    def _next_part(self, openid: str) -> str | None:
        """The oldest part waiting for this user, with a note when more are waiting behind it."""
        assert self._outbox is not None
        text = self._outbox.take(openid)
        if text is not None and self._outbox.waiting(openid):
            text = f"{text}\n\n{texts.MORE_WITH_NEXT_MESSAGE}"
        return text

    async def _send_later(self, openid: str, text: str) -> None:
        if self._outbox is not None:
            self._outbox.put(openid, text)
            return
        assert self._api is not None  # the settings require app_secret for customer_service
        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        try:
            await self._api.post(CUSTOMER_SERVICE_PATH, body)
        except WeixinApiError as refused:
            # 45015: the user has not written for 48 hours; 45047: over the messages allowed per
            # user message; 48001: the account has no customer-service permission.
            log.warning("WeChat refused a customer-service message: %s", refused)
            raise
