"""Feishu/Lark through lark-oapi: message events in over HTTP, the engine's replies out as cards.

What reaches the engine, and why:

- Events arrive on ``/feishu/events`` (event subscription v2). lark-oapi's dispatcher answers the
  URL verification challenge, checks the verification token, decrypts an encrypted body
  (AES-256-CBC, key the SHA-256 of ``encrypt_key``) and checks ``X-Lark-Signature``; what it
  refuses gets 401 and is not processed. Only ``im.message.receive_v1`` is handled.
- A private chat (``chat_type`` p2p) triggers on every message; a group only when ``mentions``
  holds the bot's own open_id (read once at start-up from ``bot/v3/info``), never a text match.
  The bot's placeholder (``@_user_1``) is stripped by the engine; other people's placeholders
  become their names, so the model reads who was meant.
- Identities are ``feishu:<open_id>``, chats ``feishu:<chat_id>``; the message_id is the message id,
  so a retried event (Feishu retries when it gets no 200 within 3 s) is dropped by the engine's
  dedupe, across processes too.
- Messages from bots and apps (``sender_type`` other than user) are marked ``from_bot``.
- Only text messages are read (media has not landed): a private chat gets the only-text note.

An event is acknowledged (200) once the engine has it in the store, at most ``ACK_BUDGET_S`` after
it arrived, so Feishu's 3-second limit holds with a slow model; one the store could not take gets
500, and Feishu delivers it again.

Replies answer the message with an interactive card holding the answer as card markdown, and the
card is patched as the answer streams in, at most once a second (``min_edit_interval_s``).

lark-oapi's async calls fetch the tenant access token with a blocking ``requests`` call when its
cache is empty; each call therefore first makes sure of the token in a worker thread
(``_token_ready``), so the event loop never waits on Feishu. Its long-connection client cannot
run inside the bridge at all (docs/platforms/feishu.md), so there is no websocket mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import lark_oapi as lark
import requests
from aiohttp import web
from lark_oapi.api.im.v1 import (
    P2ImMessageReceiveV1,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.const import (
    FEISHU_DOMAIN,
    LARK_REQUEST_NONCE,
    LARK_REQUEST_SIGNATURE,
    LARK_REQUEST_TIMESTAMP,
)
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.model import RawRequest
from lark_oapi.core.token.manager import TokenManager

from adapters.feishu.format import card
from adapters.feishu.settings import FeishuSettings
from adapters.kit import (
    MessageHandler,
    Routes,
    UpdatesInFlight,
    platform_call,
    setting,
    startup_error,
    startup_errors,
)
from core import texts
from core.channel import (
    FIRST_SHOW_DELAY_S,
    PlatformLimits,
    PlatformRateLimited,
    PlatformTrouble,
    PlatformUnavailable,
    Receipt,
)
from core.events import ChatKind, IncomingMessage
from core.render import send_text

log = logging.getLogger("chatbridge.feishu")

PLATFORM = "feishu"
EVENTS_PATH = "/feishu/events"
MESSAGE_EVENT = "im.message.receive_v1"
TIMEOUT_S = 15.0
ACK_BUDGET_S = 2.5
"""Feishu wants a 200 within 3 s; past this an event is acknowledged anyway, since a retry would
only find it a duplicate."""

LIMITS = PlatformLimits(max_message_chars=4000, min_edit_interval_s=1.0, first_show_delay_s=FIRST_SHOW_DELAY_S)
"""A card holds up to 30 KB of JSON (4,000 characters of Chinese are about 12 KB); a message may be
patched about five times a second, and once a second leaves room for the app's other messages."""

_RATE_LIMITED = frozenset({99991400, 230020, 11232})
"""Feishu's codes for "too many requests": the app's frequency limit, and a chat's message rate."""
_SIGNATURE_HEADERS = (LARK_REQUEST_TIMESTAMP, LARK_REQUEST_NONCE, LARK_REQUEST_SIGNATURE)
_TOKEN_REFUSED = frozenset({99991661, 99991663, 99991668})
"""Feishu's codes for a missing, invalid or expired tenant access token."""
_REFUSED_BY_DISPATCHER = ("verification_token", "signature", "encrypt_key")
"""Words of lark-oapi's refusals (a wrong token, signature or key), which mean the request is not
from Feishu: 401. Any other failure of the dispatcher is a malformed body: 400."""


class FeishuApiError(Exception):
    def __init__(self, status: int, code: int, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(f"HTTP {status}, code {code}: {message}")
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


def _trouble(error: Exception) -> PlatformTrouble | None:
    if isinstance(error, FeishuApiError):
        if error.status == 429 or error.code in _RATE_LIMITED:
            return PlatformRateLimited(error.retry_after_s)
        return PlatformUnavailable(str(error)) if error.status >= 500 else None
    if isinstance(error, httpx.HTTPError | OSError | TimeoutError):
        return PlatformUnavailable(type(error).__name__)
    return None


def _checked(response: Any) -> Any:
    """A lark-oapi response, or ``FeishuApiError`` when Feishu refused the call."""
    if response.success():
        return response
    status = response.raw.status_code if response.raw is not None else 0
    headers = response.raw.headers if response.raw is not None else {}
    reset = headers.get("x-ogw-ratelimit-reset") or headers.get("Retry-After") or "1"
    raise FeishuApiError(status, int(response.code or 0), str(response.msg or ""), float(reset))


@dataclass(frozen=True, slots=True)
class BotIdentity:
    open_id: str
    name: str


# --- translation ----------------------------------------------------------------------------------


def translate(event: P2ImMessageReceiveV1, bot: BotIdentity) -> IncomingMessage | None:
    """The engine's message for a text message event, or None for anything else."""
    data = event.event
    message, sender = (data.message, data.sender) if data is not None else (None, None)
    if message is None or sender is None or sender.sender_id is None:
        return None
    kind = {"p2p": ChatKind.PRIVATE, "group": ChatKind.GROUP}.get(str(message.chat_type))
    if kind is None or message.message_type != "text" or not (message.message_id and message.chat_id):
        return None
    try:
        text = str(json.loads(message.content or "{}").get("text") or "")
    except ValueError:
        return None
    ours: list[str] = []
    for mention in message.mentions or []:
        key = str(mention.key or "")
        if mention.id is not None and mention.id.open_id == bot.open_id:
            ours.append(key)
        elif key:
            text = text.replace(key, f"@{mention.name or ''}")
    author = sender.sender_id.open_id or ""
    return IncomingMessage(
        platform=PLATFORM,
        message_id=str(message.message_id),
        chat_id=f"{PLATFORM}:{message.chat_id}",
        user_id=f"{PLATFORM}:{author}",
        text=text,
        chat_kind=kind,
        from_bot=sender.sender_type != "user" or author == bot.open_id,
        mentioned=bool(ours),
        mention_texts=tuple(dict.fromkeys(ours)),
    )


# --- replies --------------------------------------------------------------------------------------


class FeishuApi:
    """The message calls, through lark-oapi's client, each after ``token_ready``."""

    def __init__(self, client: lark.Client) -> None:
        self._client = client
        self._config = client._config  # the token manager needs the client's own configuration

    async def token_ready(self) -> None:
        """lark-oapi gets a missing or expired tenant token with blocking ``requests`` inside its async
        calls; getting it here in a thread first leaves those calls a cache hit."""
        await asyncio.to_thread(TokenManager.get_self_tenant_token, self._config)

    def forget_token(self) -> None:
        """Feishu refused the cached token (revoked, or the secret changed); the next call gets a new one."""
        TokenManager.cache.set(f"self_tenant_token:{self._config.app_id}", "", 0)

    async def reply(self, message_id: str, markdown: str) -> str:
        body = ReplyMessageRequestBody.builder().msg_type("interactive").content(card(markdown)).build()
        request = ReplyMessageRequest.builder().message_id(message_id).request_body(body).build()
        response = await self._call(lambda: self._client.im.v1.message.areply(request))
        return str(response.data.message_id)

    async def patch(self, message_id: str, markdown: str) -> None:
        body = PatchMessageRequestBody.builder().content(card(markdown)).build()
        request = PatchMessageRequest.builder().message_id(message_id).request_body(body).build()
        await self._call(lambda: self._client.im.v1.message.apatch(request))

    async def bot(self) -> BotIdentity:
        request = (
            lark.BaseRequest.builder()
            .http_method(lark.HttpMethod.GET)
            .uri("/open-apis/bot/v3/info")
            .token_types({lark.AccessTokenType.TENANT})
            .build()
        )
        response = await self._call(lambda: self._client.arequest(request))
        bot = json.loads(response.raw.content).get("bot") or {}
        return BotIdentity(open_id=str(bot.get("open_id") or ""), name=str(bot.get("app_name") or "?"))

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        for attempt in (1, 2):
            await self.token_ready()
            try:
                return _checked(await call())
            except FeishuApiError as error:
                if error.code not in _TOKEN_REFUSED or attempt == 2:
                    raise
                self.forget_token()
        raise AssertionError("unreachable")


class FeishuChannel:
    """Replies to one message: a card answering it, patched as the answer grows."""

    limits = LIMITS

    def __init__(self, api: FeishuApi, message_id: str) -> None:
        self._api = api
        self._message_id = message_id
        self.route = json.dumps([message_id])

    async def send(self, text: str) -> object:
        return await platform_call(self._api.reply(self._message_id, text), _trouble)

    async def edit(self, handle: object, text: str) -> None:
        await platform_call(self._api.patch(str(handle), text), _trouble)

    async def typing(self) -> None:
        """Feishu shows bots no typing signal; the first words show within a second instead."""


# --- the adapter ----------------------------------------------------------------------------------


class FeishuAdapter:
    name = PLATFORM

    def __init__(self, settings: FeishuSettings, routes: Routes) -> None:
        self._settings = settings
        _quiet_lark_logger()
        self._client = (
            lark.Client.builder()
            .app_id(settings.app_id)
            .app_secret(settings.app_secret.get_secret_value())
            .domain((settings.api_base_url or FEISHU_DOMAIN).rstrip("/"))
            .timeout(TIMEOUT_S)
            .build()
        )
        self._api = FeishuApi(self._client)
        self._events: list[P2ImMessageReceiveV1] = []
        self._dispatcher = (
            lark.EventDispatcherHandler.builder(
                settings.encrypt_key.get_secret_value(), settings.verification_token.get_secret_value()
            )
            .register_p2_im_message_receive_v1(self._events.append)
            .build()
        )
        self._signed = bool(settings.encrypt_key.get_secret_value())
        """With an encrypt key Feishu signs every event; lark-oapi fails on a missing signature header
        with a TypeError, which is a refusal all the same."""
        routes.add_route("POST", EVENTS_PATH, self._on_event)
        self._bot: BotIdentity | None = None
        self._handler: MessageHandler | None = None
        self._stopped = asyncio.Event()
        self._updates = UpdatesInFlight()

    @property
    def ready(self) -> bool:
        return self._handler is not None and not self._stopped.is_set()

    async def run(self, handler: MessageHandler) -> None:
        try:
            self._bot = await self._identify()
            self._handler = handler
            handler.attach(PLATFORM, self._reopen)
            log.info("receiving events as %s (%s mode)", self._bot.name, self._settings.mode)
            await self._stopped.wait()
        finally:
            self._stopped.set()
            await self._updates.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        bot = await self._identify()
        return f"{bot.name} ({bot.open_id}, {self._settings.mode} mode)"

    async def _identify(self) -> BotIdentity:
        def problem(error: Exception) -> str | None:
            keys = f"{setting(PLATFORM, 'app_id')} and {setting(PLATFORM, 'app_secret')}"
            if isinstance(error, ObtainAccessTokenException):
                return f"Feishu refused the tenant access token (code {error.code}); check {keys}"
            if isinstance(error, FeishuApiError):
                return f"bot/v3/info failed (code {error.code}); enable the bot capability and check {keys}"
            # the token is fetched with requests (see the module docstring), the rest with httpx
            if isinstance(error, httpx.HTTPError | requests.RequestException | OSError | TimeoutError):
                where = self._settings.api_base_url or FEISHU_DOMAIN
                return f"cannot reach {where}: {type(error).__name__}"
            return None

        with startup_errors(PLATFORM, problem):
            bot = await self._api.bot()
        if not bot.open_id:
            raise startup_error(PLATFORM, "bot/v3/info named no bot; enable the bot capability of the app")
        return bot

    # --- receiving ------------------------------------------------------------------------------

    async def _on_event(self, request: web.Request) -> web.Response:
        raw = RawRequest()
        raw.uri = request.path
        raw.headers = request.headers  # lark-oapi reads headers by name; aiohttp's ignore case
        raw.body = await request.read()
        # The dispatcher is synchronous: it decrypts, verifies and calls self._events.append in one go,
        # so no other request's event can land in the list in between.
        self._events.clear()
        answer = self._dispatcher.do(raw)
        events = self._events.copy()
        self._events.clear()
        if answer.status_code != 200:
            reason = json.loads(answer.content or b"{}").get("msg", "")
            unsigned = self._signed and not all(request.headers.get(name) for name in _SIGNATURE_HEADERS)
            refused = unsigned or any(word in reason for word in _REFUSED_BY_DISPATCHER)
            log.warning("event refused (%s) from %s", "not from Feishu" if refused else "malformed", request.remote)
            return web.Response(status=401 if refused else 400)
        if not events:  # the URL verification challenge, or an event we do not handle
            return web.Response(body=answer.content, content_type="application/json")
        if not self.ready or self._bot is None:
            return web.Response(status=503)
        taken = True
        for event in events:
            receipt = self._accept(event, self._bot, self._handler)
            if receipt is not None:
                with contextlib.suppress(TimeoutError):
                    taken = await asyncio.wait_for(receipt.taken(), ACK_BUDGET_S) and taken
        return web.json_response({"msg": "success"}) if taken else web.Response(status=500)

    def _accept(self, event: P2ImMessageReceiveV1, bot: BotIdentity, handler: MessageHandler | None) -> Receipt | None:
        data = event.event
        message = data.message if data is not None else None
        if handler is None or message is None or not message.message_id:
            return None
        channel = FeishuChannel(self._api, str(message.message_id))
        incoming = translate(event, bot)
        if incoming is None:
            if message.chat_type == "p2p" and message.message_type != "text":
                self._updates.spawn(self._note_only_text(channel))
            return None
        receipt = Receipt(redelivers=True)
        self._updates.spawn(handler.handle(incoming, channel, receipt))
        return receipt

    async def _note_only_text(self, channel: FeishuChannel) -> None:
        try:
            await send_text(channel, texts.ONLY_TEXT_SUPPORTED)
        except (FeishuApiError, PlatformTrouble) as error:
            log.warning("could not send the only-text note: %s", error)

    def _reopen(self, route: str) -> FeishuChannel:
        (message_id,) = json.loads(route)
        return FeishuChannel(self._api, message_id)


def _quiet_lark_logger() -> None:
    """lark-oapi gives its logger a handler of its own that prints to stdout, past the bridge's log
    format and level; without it the records go where every other library's go."""
    lark_logger = logging.getLogger("Lark")
    for lark_handler in list(lark_logger.handlers):
        lark_logger.removeHandler(lark_handler)
