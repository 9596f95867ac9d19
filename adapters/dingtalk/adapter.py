"""DingTalk robots through dingtalk-stream: robot messages in, the engine's replies out as markdown.

What reaches the engine, and why:

- Robot messages arrive over the Stream gateway (``adapters.dingtalk.stream``, the default: no
  public URL) or, in HTTP mode, as the robot's outgoing callback on ``/dingtalk/events``, signed
  with the app secret (``timestamp`` and ``sign`` headers; stale or wrong ones get 401).
- A private chat (conversationType 1) triggers on every message. In a group DingTalk sends the
  robot only messages that @ it, and the message says so itself (``isInAtList``, or the robot in
  ``atUsers``); the text is never searched for a name. DingTalk has already removed the robot's
  ``@name`` from the text, so only the space it leaves is trimmed.
- Identities are ``dingtalk:<staffId>``, or the sender id for people outside the organisation, who
  have none; chats are ``dingtalk:<conversationId>``. The ids are base64 and may hold ``+`` and
  ``/``, which would break session keys and ``/admin clear``, so those two become ``-`` and ``_``
  (``safe_id``); the identity card (``/id``) shows the form to use in lists.
- The msgId is the message id, so a redelivery (the gateway sends a message again when its
  acknowledgement is late) is dropped by the engine's dedupe.
- Messages the robot itself sent are marked ``from_bot``; DingTalk does not deliver other robots'
  messages to a robot.
- Pictures, voice and files (media) are not read yet: a private chat gets the note that only text
  is understood, a group nothing.

Replies go through the message's sessionWebhook while it is valid, and through the robot OpenAPI
(``oToMessages/batchSend`` for a private chat, ``groupMessages/send`` for a group, with the app's
access token) once it has expired or was refused, so an answer given after a restart still
arrives. Robot messages cannot be edited, so a reply is sent once it is complete (no streaming;
DingTalk's AI cards need a card template created in the developer console and are not used).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aiohttp
from aiohttp import web
from dingtalk_stream import ChatbotMessage
from websockets import WebSocketException

from adapters.dingtalk.api import TIMEOUT_S, DingTalkApi, DingTalkApiError, trouble
from adapters.dingtalk.format import title, to_dingtalk
from adapters.dingtalk.settings import DingTalkSettings
from adapters.dingtalk.stream import StreamConnection
from adapters.kit import MessageHandler, Routes, UpdatesInFlight, platform_call, setting, startup_errors
from core import texts
from core.channel import PlatformLimits, PlatformTrouble, Receipt
from core.events import ChatKind, IncomingMessage
from core.render import send_text

log = logging.getLogger("chatbridge.dingtalk")

PLATFORM = "dingtalk"
EVENTS_PATH = "/dingtalk/events"

LIMITS = PlatformLimits(max_message_chars=3500, min_edit_interval_s=1.0, can_edit=False)
"""A markdown message takes about 5,000 characters; the conversion adds a few (hard breaks, list
dashes), so messages stay at 3,500. Messages cannot be edited: each one is sent complete, a second
apart (a chat takes about 20 robot messages a minute; more are waited out)."""
ACK_BUDGET_S = 2.0
"""How long a stream message's acknowledgement waits for the store before it is given anyway: the
gateway's redelivery would only find it a duplicate."""
SIGNATURE_MAX_AGE_S = 3600.0
"""DingTalk's rule for the callback ``timestamp``: more than an hour off is not DingTalk."""
WEBHOOK_MARGIN_S = 60.0
"""A sessionWebhook this close to its expiry is not used; the OpenAPI is."""

_PRIVATE, _GROUP = "1", "2"
_TEXT_TYPES = frozenset({"text", "richText"})


def safe_id(raw: str) -> str:
    """A DingTalk id as it appears in identities: base64's ``+`` and ``/`` made ``-`` and ``_``."""
    return raw.replace("+", "-").replace("/", "_")


def signature(timestamp: str, secret: str) -> str:
    """The ``sign`` header DingTalk sends: base64 of HMAC-SHA256(secret, timestamp + "\\n" + secret)."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_by_dingtalk(timestamp: str, sign: str, secret: str, now_s: float) -> bool:
    if not timestamp.isdigit() or abs(now_s - int(timestamp) / 1000) > SIGNATURE_MAX_AGE_S:
        return False
    return hmac.compare_digest(sign.encode(), signature(timestamp, secret).encode())


# --- translation ----------------------------------------------------------------------------------


def translate(message: ChatbotMessage) -> IncomingMessage | None:
    """The engine's message for a text robot message, or None for what it should not see: media,
    an unknown conversation type, a message without the ids a reply needs."""
    sender = message.sender_staff_id or message.sender_id
    kind = {_PRIVATE: ChatKind.PRIVATE, _GROUP: ChatKind.GROUP}.get(str(message.conversation_type))
    if message.message_type not in _TEXT_TYPES or kind is None:
        return None
    if not (message.message_id and message.conversation_id and sender):
        return None
    robot = message.chatbot_user_id
    mentioned = bool(message.is_in_at_list) or (
        robot is not None and any(u.dingtalk_id == robot for u in message.at_users)
    )
    return IncomingMessage(
        platform=PLATFORM,
        message_id=str(message.message_id),
        chat_id=f"{PLATFORM}:{safe_id(str(message.conversation_id))}",
        user_id=f"{PLATFORM}:{safe_id(str(sender))}",
        text="\n".join(message.get_text_list() or []).strip(),
        chat_kind=kind,
        user_name=str(message.sender_nick or ""),
        from_bot=robot is not None and message.sender_id == robot,
        mentioned=mentioned,
    )


# --- replies --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a reply to one conversation needs, also after a restart (the channel's route)."""

    private: bool
    conversation_id: str
    staff_id: str
    """The person a private reply goes to through the OpenAPI; empty for senders outside the
    organisation, who can only be answered while the sessionWebhook lasts."""
    robot_code: str
    webhook: str
    webhook_expires_ms: int

    @classmethod
    def of(cls, message: ChatbotMessage, robot_code: str) -> Target:
        return cls(
            private=str(message.conversation_type) == _PRIVATE,
            conversation_id=str(message.conversation_id),
            staff_id=str(message.sender_staff_id or ""),
            robot_code=str(message.robot_code or robot_code),
            webhook=str(message.session_webhook or ""),
            webhook_expires_ms=int(message.session_webhook_expired_time or 0),
        )


class NoWayToReply(Exception):
    """A private chat with someone outside the organisation whose sessionWebhook has expired."""


class DingTalkChannel:
    """Replies to one conversation: markdown messages, each sent once, complete."""

    limits = LIMITS

    def __init__(self, api: DingTalkApi, target: Target, clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._target = target
        self._clock = clock
        self._webhook_refused = False
        self.route = json.dumps(asdict(target))

    async def send(self, text: str) -> object:
        heading, body = title(text), to_dingtalk(text)
        if self._webhook_valid():
            try:
                await platform_call(self._api.send_by_session(self._target.webhook, heading, body), trouble)
                return None
            except DingTalkApiError as error:
                log.info("the sessionWebhook refused a reply (%s); sending through the OpenAPI", error.code)
                self._webhook_refused = True
        await platform_call(self._send_openapi(heading, body), trouble)
        return None

    async def edit(self, handle: object, text: str) -> None:
        """Robot messages cannot be edited (``can_edit`` is False, so the renderer never asks)."""
        await self.send(text)

    async def typing(self) -> None:
        """DingTalk shows robots no typing signal."""

    def _webhook_valid(self) -> bool:
        expires_s = self._target.webhook_expires_ms / 1000
        return bool(self._target.webhook) and not self._webhook_refused and self._clock() < expires_s - WEBHOOK_MARGIN_S

    async def _send_openapi(self, heading: str, body: str) -> None:
        target = self._target
        if not target.private:
            await self._api.send_group(target.robot_code, target.conversation_id, heading, body)
        elif target.staff_id:
            await self._api.send_private(target.robot_code, target.staff_id, heading, body)
        else:
            raise NoWayToReply("the sessionWebhook expired and the sender has no staff id for the OpenAPI")


# --- the adapter ----------------------------------------------------------------------------------


class DingTalkAdapter:
    """Stream mode by default; in HTTP mode DingTalk posts to the bridge's own HTTP server."""

    name = PLATFORM

    def __init__(self, settings: DingTalkSettings, routes: Routes) -> None:
        self._settings = settings
        self._secret = settings.client_secret.get_secret_value()
        self._api = DingTalkApi(settings.api_base_url, settings.client_id, self._secret)
        self._stream: StreamConnection | None = None
        if settings.mode == "stream":
            self._stream = StreamConnection(self._api, settings.client_id, self._secret, self._on_stream_message)
        else:
            routes.add_route("POST", EVENTS_PATH, self._on_callback)
        self._handler: MessageHandler | None = None
        self._stopped = asyncio.Event()
        self._updates = UpdatesInFlight()

    @property
    def ready(self) -> bool:
        if self._handler is None or self._stopped.is_set():
            return False
        return self._stream is None or self._stream.connected

    @property
    def stream_connections(self) -> int:
        """How many times the stream has connected (tests watch it reconnect)."""
        return 0 if self._stream is None else self._stream.connections

    async def run(self, handler: MessageHandler) -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        self._api.use(session)
        receiving: asyncio.Task[None] | None = None
        try:
            await self._connect()
            self._handler = handler
            handler.attach(PLATFORM, self._reopen)
            if self._stream is not None:
                receiving = asyncio.create_task(self._stream.run())
            log.info("receiving robot messages for app %s (%s mode)", self._settings.client_id, self._settings.mode)
            await self._stopped.wait()
        finally:
            self._stopped.set()
            try:
                if self._stream is not None:
                    await self._stream.close()
                if receiving is not None:
                    await receiving
                await self._updates.wait()
            finally:
                self._api.use(None)
                await session.close()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        await self._connect(probe=True)
        return f"credentials accepted for app {self._settings.client_id} ({self._settings.mode} mode)"

    # --- start-up -------------------------------------------------------------------------------

    async def _connect(self, *, probe: bool = False) -> None:
        """The access token proves the credentials; stream mode then opens its connection (or, for
        ``check``, only fetches a ticket, which proves the app may use the gateway)."""
        with startup_errors(PLATFORM, lambda error: self._startup_problem("the access token", error)):
            await self._api.access_token()
        if self._stream is None:
            return
        with startup_errors(PLATFORM, lambda error: self._startup_problem("the stream connection", error)):
            if probe:
                await self._api.stream_ticket()
            else:
                await self._stream.open()

    def _startup_problem(self, step: str, error: Exception) -> str | None:
        """One line naming the keys to fix; DingTalk's error code, never its message or a secret."""
        if isinstance(error, DingTalkApiError):
            keys = f"{setting(PLATFORM, 'client_id')} and {setting(PLATFORM, 'client_secret')}"
            return f"DingTalk refused {step} ({error.code or f'HTTP {error.status}'}); check {keys}"
        if isinstance(error, aiohttp.ClientError | OSError | TimeoutError | WebSocketException):
            return f"cannot reach {self._api.base_url} for {step}: {type(error).__name__}"
        return None

    # --- receiving ------------------------------------------------------------------------------

    async def _on_stream_message(self, message: ChatbotMessage) -> bool:
        """True once the message may be acknowledged (see ``ACK_BUDGET_S``); False leaves it
        unacknowledged, so the gateway delivers it again."""
        receipt = self._accept(message, Receipt(redelivers=True))
        if receipt is None:
            return self._handler is not None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(receipt.taken(), ACK_BUDGET_S)
        return True

    async def _on_callback(self, request: web.Request) -> web.Response:
        """401 without DingTalk's signature; 503 while not receiving or when the store could not
        take the message. DingTalk is not known to post a callback again, so the engine asks the
        user to send it again in that case."""
        timestamp, sign = request.headers.get("timestamp", ""), request.headers.get("sign", "")
        if not signed_by_dingtalk(timestamp, sign, self._secret, time.time()):
            log.warning("a callback without a valid DingTalk signature was refused (from %s)", request.remote)
            return web.Response(status=401)
        if not self.ready:
            return web.Response(status=503)
        try:
            payload = await request.json()
            message = ChatbotMessage.from_dict(payload)
        except Exception as error:  # noqa: BLE001 - any malformed body is the sender's problem
            log.warning("callback body is not a robot message: %s", type(error).__name__)
            return web.Response(status=400)
        receipt = self._accept(message, Receipt(redelivers=False))
        if receipt is not None and not await receipt.taken():
            return web.Response(status=503)
        return web.json_response({})

    def _accept(self, message: ChatbotMessage, receipt: Receipt) -> Receipt | None:
        """Hand a robot message to the engine in a task of its own; the receipt to wait for, or
        None when there is nothing to wait for (not a message for the engine)."""
        if self._handler is None:
            return None
        channel = DingTalkChannel(self._api, Target.of(message, self._settings.client_id))
        incoming = translate(message)
        if incoming is None:
            if str(message.conversation_type) == _PRIVATE and message.message_type not in _TEXT_TYPES:
                self._updates.spawn(self._note_only_text(channel))
            return None
        self._updates.spawn(self._handler.handle(incoming, channel, receipt))
        return receipt

    async def _note_only_text(self, channel: DingTalkChannel) -> None:
        try:
            await send_text(channel, texts.ONLY_TEXT_SUPPORTED)
        except (DingTalkApiError, NoWayToReply, PlatformTrouble) as error:
            log.warning("could not send the only-text note: %s", error)

    def _reopen(self, route: str) -> DingTalkChannel:
        return DingTalkChannel(self._api, Target(**json.loads(route)))
