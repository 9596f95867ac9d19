"""Slack through slack-bolt's ``AsyncApp``, in Socket Mode or over the HTTP Events API.

The adapter only translates. Slack events become ``IncomingMessage`` (ids ``slack:U…``/``slack:C…``,
the message ``ts`` as message id so that the ``app_mention`` and the ``message`` event of one post
share a dedupe key) and the engine's reply stream becomes ``chat.postMessage``/``chat.update`` calls
in the thread of the triggering message. Access, sessions, commands and dedupe are the engine's.

Every event is acknowledged once the engine has it in the store, and before the model is called
(Bolt's ``process_before_response=True``, with a listener that translates, spawns the reply and
waits only for its receipt, at most ``ACK_BUDGET_S``), so Slack gets its answer within 3 seconds
and an event the store could not take is answered with an error, which Slack retries.

Retries: Slack resends an event it thinks we missed, marking it with ``X-Slack-Retry-Num`` (Socket
Mode mirrors its ``retry_attempt`` there, and sends "0" on a first delivery, so the value counts, not
the header). A retry because we acked too late (reason ``http_timeout``/``timeout``) means a bridge
process already has the event and is answering it, so it is dropped here. Any other retry may be the
first delivery that ever reached us, so it goes to the engine, whose store-backed dedupe on the
message ts drops it if another process, or this one, saw the original.

Thread follow-up: Slack does not say in a reply event whether the bot took part in the thread, and
asking (``conversations.replies``) per message would spend a rate-limited call on every thread reply
in every channel. So the adapter remembers the threads it answered in, in a bounded recently-used
set. The set is per process: with several processes, a follow-up that lands on a process that did
not answer the thread needs a mention (README, Slack section).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.downloads import Downloader
from adapters.kit import (
    SPOKEN_FILE_NAME,
    MessageHandler,
    Routes,
    UpdatesInFlight,
    platform_call,
    setting,
    startup_error,
    startup_errors,
    unreachable,
)
from adapters.questions import PREFIX, OpenQuestions, button_data, read_button
from adapters.slack.format import to_mrkdwn
from adapters.slack.media import SlackFiles
from adapters.slack.settings import SlackSettings
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

log = logging.getLogger("chatbridge.slack")

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
INTERACTIVE_PATH = "/slack/interactive"
"""Where Slack posts button presses in HTTP mode (the app's Interactivity Request URL)."""
DEFAULT_API_URL = "https://slack.com/api/"

THREAD_LIMITS = PlatformLimits(max_message_chars=3500, min_edit_interval_s=1.2, first_show_delay_s=FIRST_SHOW_DELAY_S)
"""chat.update is Tier 3 (about 50 a minute); texts near 4,000 characters start failing in practice,
and the mrkdwn conversion may add a few characters, so messages stay at 3,500."""
EPHEMERAL_LIMITS = PlatformLimits(max_message_chars=3500, min_edit_interval_s=0.0, can_edit=False)
"""Ephemeral answers cannot be edited, so they are sent once, complete."""

PLACEHOLDER = f"_{texts.REPLY_PLACEHOLDER}_"
"""Shown the moment the model starts, then replaced by the streamed answer (Slack bots have no typing
indicator in the Web API)."""

REQUIRED_SCOPES = ("app_mentions:read", "chat:write", "channels:history", "im:history")
MEDIA_SCOPE = "files:read"
"""Without it files cannot be downloaded; start-up warns instead of refusing, since text still works."""
FOLLOWED_THREADS = 10_000
ACK_BUDGET_S = 2.0
"""How long an event's acknowledgement waits for the store; Slack retries what is not acked in 3 s."""
"""Threads remembered for follow-ups; old ones are forgotten first. A few hundred kB at most."""

_KEPT_SUBTYPES = frozenset({"file_share", "thread_broadcast", "bot_message"})
"""Message subtypes that are messages someone wrote; edits, deletions, joins and the rest are not."""
_LATE_RETRY_REASONS = frozenset({"http_timeout", "timeout"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot token belongs to, from ``auth.test``."""

    user_id: str
    bot_id: str
    name: str
    team: str


# --- translation: Slack payloads -> IncomingMessage ---------------------------------------------


def translate_event(
    event: Mapping[str, Any], bot: BotIdentity, files: SlackFiles, *, mention_event: bool, in_followed_thread: bool
) -> IncomingMessage | None:
    """A ``message`` or ``app_mention`` event as the engine's message, or None when it is not one.
    Shared files (subtype ``file_share``) are its attachments (``adapters.slack.media``).

    In a channel the reply goes to the message's thread (a new one under a top-level message), so
    ``thread_id`` is never empty there; in a DM the bot answers in place and only a DM thread has one.
    """
    subtype = event.get("subtype")
    ts, channel, text = event.get("ts"), event.get("channel"), event.get("text") or ""
    author = event.get("user") or event.get("bot_id")
    if (subtype is not None and subtype not in _KEPT_SUBTYPES) or not (ts and channel and author):
        return None
    private = event.get("channel_type") == "im"
    thread_ts = event.get("thread_ts")
    mentions = tuple(dict.fromkeys(re.findall(rf"<@{re.escape(bot.user_id)}(?:\|[^>]*)?>", text)))
    return IncomingMessage(
        platform=PLATFORM,
        message_id=ts,
        chat_id=f"{PLATFORM}:{channel}",
        user_id=f"{PLATFORM}:{author}",
        text=text,
        chat_kind=ChatKind.PRIVATE if private else ChatKind.GROUP,
        from_bot=subtype == "bot_message" or bool(event.get("bot_id")) or author == bot.user_id,
        mentioned=mention_event or bool(mentions),
        mention_texts=mentions,
        reply_to_bot=in_followed_thread and not private,
        thread_id=thread_ts if private else (thread_ts or ts),
        attachments=files.attachments(event),
    )


def translate_command(command: Mapping[str, Any]) -> IncomingMessage:
    """``/chatbridge reset`` becomes the engine's ``/reset``; a bare ``/chatbridge`` asks for ``/help``.

    The trigger id is unique per invocation, so it serves as the message id (Slack does not retry
    slash commands, but the engine dedupes on it all the same).
    """
    words = str(command.get("text") or "").strip().lstrip("/")
    channel = str(command["channel_id"])
    return IncomingMessage(
        platform=PLATFORM,
        message_id=f"command:{command['trigger_id']}",
        chat_id=f"{PLATFORM}:{channel}",
        user_id=f"{PLATFORM}:{command['user_id']}",
        text=f"/{words}" if words else "/help",
        chat_kind=ChatKind.PRIVATE if channel.startswith("D") else ChatKind.GROUP,
        user_name=str(command.get("user_name") or ""),
    )


def is_late_retry(headers: Mapping[str, Sequence[str]]) -> bool:
    """A redelivery caused by our own slow ack (see the module docstring)."""
    attempt = (headers.get("x-slack-retry-num") or ["0"])[0]
    reason = (headers.get("x-slack-retry-reason") or [""])[0]
    return attempt.isdigit() and int(attempt) > 0 and reason in _LATE_RETRY_REASONS


# --- replies --------------------------------------------------------------------------------------


class EventNotTaken(Exception):
    """Raised from a listener so that Bolt answers with an error and Slack delivers the event again."""


def _trouble(error: Exception) -> PlatformTrouble | None:
    """Slack's 429 carries the wait in its ``Retry-After`` header; a 5xx or a lost connection is
    retried."""
    if isinstance(error, SlackApiError):
        status = error.response.status_code
        if status == 429:
            return PlatformRateLimited(float(error.response.headers.get("Retry-After", "1")))
        return PlatformUnavailable(f"HTTP {status}") if status >= 500 else None
    if isinstance(error, aiohttp.ClientError | TimeoutError | OSError):
        return PlatformUnavailable(type(error).__name__)
    return None


class ThreadChannel:
    """Replies in one conversation thread: a placeholder first, then the answer edited into it.

    The placeholder goes out on the engine's first ``typing`` call, so it appears only when a model
    call actually starts (a command answer or a refusal is posted directly). The first ``send``
    takes it over with ``chat.update``; later chunks of a long answer are further thread messages.
    """

    limits = THREAD_LIMITS

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        on_posted: Callable[[tuple[str, str]], None],
        questions: OpenQuestions,
    ) -> None:
        """``on_posted`` learns each (channel, thread) the bot posts into, for thread follow-ups."""
        self._client = client
        self._questions = questions
        self._channel = channel
        self._thread_ts = thread_ts
        self._on_posted = on_posted
        self.route = json.dumps([channel, thread_ts])
        self._placeholder: asyncio.Task[str] | None = None
        self._placeholder_taken = False

    async def typing(self) -> None:
        if self._placeholder is None:
            self._placeholder = asyncio.ensure_future(self._post(PLACEHOLDER))
        await asyncio.shield(self._placeholder)

    async def send(self, text: str) -> object:
        placeholder = await self._unused_placeholder()
        if placeholder is not None and await self._take_over(placeholder, text):
            return placeholder
        return await self._post(to_mrkdwn(text))

    async def edit(self, handle: object, text: str) -> None:
        await platform_call(
            self._client.chat_update(channel=self._channel, ts=str(handle), text=to_mrkdwn(text)), _trouble
        )

    async def send_voice(self, audio: bytes, mime_type: str) -> None:
        """The spoken answer as an audio file in the answer's thread (needs the ``files:write`` scope)."""
        upload = self._client.files_upload_v2(
            channel=self._channel, thread_ts=self._thread_ts, file=audio, filename=SPOKEN_FILE_NAME
        )
        await platform_call(upload, _trouble)

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        """Block Kit buttons under the question, in the thread; presses come back as block_actions
        (``SlackAdapter._pressed``). The texts are plain_text: they hold the model's arguments."""

        async def post(question_id: str) -> str:
            buttons = [
                _button(texts.TOOL_CONFIRM_YES, button_data(question_id, True), "primary"),
                _button(texts.TOOL_CONFIRM_NO, button_data(question_id, False), "danger"),
            ]
            blocks = [_plain_section(question), {"type": "actions", "elements": buttons}]
            response = await platform_call(
                self._client.chat_postMessage(
                    channel=self._channel, thread_ts=self._thread_ts, text=question, blocks=blocks
                ),
                _trouble,
            )
            return str(response["ts"])

        async def settle(ts: str, decided: str) -> None:
            update = self._client.chat_update(
                channel=self._channel, ts=ts, text=decided, blocks=[_plain_section(decided)]
            )
            await platform_call(update, _trouble)

        return await self._questions.ask(question, asker, timeout_s, post, settle)

    async def discard_placeholder(self) -> None:
        """Remove a placeholder no answer took over (the turn was cancelled at shutdown, say)."""
        ts = await self._unused_placeholder()
        if ts is not None:
            self._placeholder_taken = True
            await self._client.chat_delete(channel=self._channel, ts=ts)

    async def _take_over(self, placeholder: str, text: str) -> bool:
        """Edit the first answer text into the placeholder. A 429 propagates with the placeholder still
        unused, so the renderer's retry takes it over; a placeholder that cannot be edited (someone
        deleted it) is given up and the answer posted instead."""
        try:
            await self.edit(placeholder, text)
        except SlackApiError as error:
            self._placeholder_taken = True
            log.warning("could not edit the placeholder (%s); posting the answer instead", error.response.get("error"))
            return False
        self._placeholder_taken = True
        return True

    async def _unused_placeholder(self) -> str | None:
        """The placeholder's ts while no answer has taken it over; None when there is none to take."""
        if self._placeholder is None or self._placeholder_taken:
            return None
        try:
            return await asyncio.shield(self._placeholder)
        except Exception:  # noqa: BLE001 - typing() already reported it; the answer is simply posted
            return None

    async def _post(self, mrkdwn: str) -> str:
        response = await platform_call(
            self._client.chat_postMessage(channel=self._channel, thread_ts=self._thread_ts, text=mrkdwn), _trouble
        )
        if self._thread_ts is not None:
            self._on_posted((self._channel, self._thread_ts))
        return str(response["ts"])


def _button(label: str, action_id: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": action_id,
        "style": style,
    }


def _plain_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "plain_text", "text": text[:3000]}}


class EphemeralChannel:
    """Answers to a slash command, visible only to the caller, through the command's ``response_url``
    (it works in channels the bot has not joined, unlike ``chat.postEphemeral``)."""

    limits = EPHEMERAL_LIMITS
    route = ""
    """Slash commands are answered at once, never queued, so they need no way back."""

    def __init__(self, respond: AsyncRespond) -> None:
        self._respond = respond

    async def send(self, text: str) -> object:
        await self._respond(text=to_mrkdwn(text), response_type="ephemeral")
        return None

    async def edit(self, handle: object, text: str) -> None:
        """Ephemeral messages cannot be edited; a changed text arrives as a new one."""
        await self.send(text)

    async def typing(self) -> None:
        """Slack shows nothing for a command still being answered; the answer comes once, complete."""


class _RecentSet:
    """A set that forgets its least recently used entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, item: tuple[str, str]) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._items


# --- the adapter ----------------------------------------------------------------------------------


class SlackAdapter:
    name = PLATFORM

    def __init__(self, settings: SlackSettings, routes: Routes) -> None:
        self._settings = settings
        self._client = AsyncWebClient(
            token=settings.bot_token.get_secret_value(),
            base_url=_api_url(settings.api_base_url),
            logger=logging.getLogger("chatbridge.slack.api"),
        )
        http = settings.mode == "http"
        self._app = AsyncApp(
            name="chatbridge",
            client=self._client,
            logger=logging.getLogger("chatbridge.slack.bolt"),
            signing_secret=settings.signing_secret.get_secret_value(),
            # Socket Mode messages come over our own authenticated socket and carry no signature.
            request_verification_enabled=http,
            process_before_response=True,
        )
        self._downloader = Downloader()
        self.files = SlackFiles(
            self._downloader, settings.bot_token.get_secret_value(), _api_url(settings.api_base_url)
        )
        """Makes attachments and their fetches; ``files.fetch(source)`` fetches a queued one again."""
        self._register_listeners()
        if http:
            routes.add_route("POST", EVENTS_PATH, self._serve_http)
            routes.add_route("POST", INTERACTIVE_PATH, self._serve_http)
        self._threads = _RecentSet(FOLLOWED_THREADS)
        self._handler: MessageHandler | None = None
        self._bot: BotIdentity | None = None
        self._updates = UpdatesInFlight()
        self._socket: AsyncSocketModeHandler | None = None
        self._stopped = asyncio.Event()
        self._questions = OpenQuestions()

    @property
    def ready(self) -> bool:
        """Whether events are being received right now (``/readyz``): started, not stopping, and in
        Socket Mode with a live connection (the client reconnects on its own when it drops)."""
        if self._bot is None or self._stopped.is_set():
            return False
        if self._settings.mode == "http":
            return True
        if self._socket is None:
            return False
        session = self._socket.client.current_session
        return session is not None and not session.closed and not self._socket.client.stale

    async def run(self, handler: MessageHandler) -> None:
        # One connection pool for every Web API call (Bolt's per-request clients share it too);
        # without it slack_sdk opens a new connection, TLS handshake included, for each call.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._client.timeout))
        self._client.session = session
        try:
            bot = await self._identify()
            # Set before connecting: Slack may send queued events the moment the socket opens.
            self._handler, self._bot = handler, bot
            if self._settings.mode == "socket":
                self._socket = await self._open_socket()
            log.info("receiving events as @%s in %s (%s mode)", bot.name, bot.team, self._settings.mode)
            handler.attach(PLATFORM, self._reopen, self.files.fetch)
            await self._stopped.wait()
        finally:
            try:
                if self._socket is not None:
                    await self._socket.close_async()
                # Waiting for the replies in flight (cancelling run bounds the wait) lets an unused
                # placeholder still be removed before the session closes.
                await self._updates.wait()
            finally:
                await session.close()
                await self._downloader.close()

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        bot = await self._identify()
        if self._settings.mode == "socket":
            await self._socket_url()
        return f"@{bot.name} in {bot.team} ({self._settings.mode} mode)"

    # --- start-up -------------------------------------------------------------------------------

    async def _identify(self) -> BotIdentity:
        """``auth.test`` checks the bot token; its ``x-oauth-scopes`` header shows what was granted."""
        response = await self._startup_call("auth.test", "bot_token", self._client.auth_test())
        granted = response.headers.get("x-oauth-scopes")
        if granted is not None:
            scopes = {scope.strip() for scope in granted.split(",")}
            missing = sorted(set(REQUIRED_SCOPES) - scopes)
            if missing:
                raise startup_error(
                    PLATFORM, f"the bot token lacks the scope(s) {', '.join(missing)}; add them and reinstall the app"
                )
            if MEDIA_SCOPE not in scopes:
                log.warning(
                    "the bot token lacks %s, so files people share cannot be read; add it and reinstall", MEDIA_SCOPE
                )
        return BotIdentity(
            user_id=str(response["user_id"]),
            bot_id=str(response.get("bot_id") or ""),
            name=str(response.get("user") or response["user_id"]),
            team=str(response.get("team") or response.get("team_id") or "?"),
        )

    async def _socket_url(self) -> str:
        app_token = self._settings.app_token.get_secret_value()
        response = await self._startup_call(
            "apps.connections.open", "app_token", self._client.apps_connections_open(app_token=app_token)
        )
        return str(response["url"])

    async def _open_socket(self) -> AsyncSocketModeHandler:
        """Connect with a URL fetched here, so a bad app token fails start-up instead of being retried
        forever; after that the Socket Mode client reconnects on its own."""
        url = await self._socket_url()
        handler = AsyncSocketModeHandler(
            self._app,
            app_token=self._settings.app_token.get_secret_value(),
            logger=logging.getLogger("chatbridge.slack.socket"),
        )
        handler.client.wss_uri = url
        await handler.connect_async()
        return handler

    async def _startup_call(
        self, method: str, key: str, call: Coroutine[Any, Any, AsyncSlackResponse]
    ) -> AsyncSlackResponse:
        def problem(error: Exception) -> str | None:
            if isinstance(error, SlackApiError):
                reason = error.response.get("error") or f"HTTP {error.response.status_code}"
                return f"{method} failed: {reason} (check {setting(PLATFORM, key)})"
            if isinstance(error, aiohttp.ClientError | OSError | TimeoutError):
                endpoint = setting(PLATFORM, "api_base_url")
                return f"cannot reach the Web API: {unreachable(endpoint, self._client.base_url, error)}"
            return None

        with startup_errors(PLATFORM, problem):
            return await call

    # --- receiving ------------------------------------------------------------------------------

    def _register_listeners(self) -> None:
        """Bolt injects listener arguments by parameter name, so the listeners are plain functions."""

        async def on_mention(event: dict[str, Any], request: AsyncBoltRequest) -> None:
            await self._accept_event(event, request, mention_event=True)

        async def on_message(event: dict[str, Any], request: AsyncBoltRequest) -> None:
            await self._accept_event(event, request, mention_event=False)

        async def on_command(
            ack: Callable[[], Awaitable[None]], command: dict[str, Any], respond: AsyncRespond
        ) -> None:
            await ack()
            if self._handler is not None:
                self._updates.spawn(self._handler.handle(translate_command(command), EphemeralChannel(respond)))

        async def on_press(ack: Callable[[], Awaitable[None]], body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self._pressed(body, action)

        self._app.action(re.compile(f"^{re.escape(PREFIX)}"))(on_press)
        self._app.event("app_mention")(on_mention)
        self._app.event("message")(on_message)
        self._app.command(self._settings.command)(on_command)

    async def _serve_http(self, request: web.Request) -> web.StreamResponse:
        """Bolt verifies the signature (401 when bad or older than 5 minutes), acks and spawns the work.

        While not receiving (starting, or stopping) the answer is 503, so Slack retries, possibly
        on another process.
        """
        if not self.ready:
            return web.Response(status=503, text="not ready")
        response = await self._app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def _accept_event(self, event: Mapping[str, Any], request: AsyncBoltRequest, *, mention_event: bool) -> None:
        """Returns when the event may be acknowledged; raises (Bolt then answers 500, and Slack
        delivers the event again) when the store could not take it."""
        if self._handler is None or self._bot is None:
            return
        if is_late_retry(request.headers):
            log.debug("dropped a retry of an event we acked late (ts %s)", event.get("ts"))
            return
        thread_ts = event.get("thread_ts")
        followed = bool(
            self._settings.thread_follow and thread_ts and (event.get("channel"), thread_ts) in self._threads
        )
        message = translate_event(
            event, self._bot, self.files, mention_event=mention_event, in_followed_thread=followed
        )
        if message is None:
            return
        channel = ThreadChannel(
            self._client, str(event["channel"]), message.thread_id, self._threads.add, self._questions
        )
        receipt = Receipt(redelivers=True)
        self._updates.spawn(self._answer(self._handler, message, channel, receipt))
        with contextlib.suppress(TimeoutError):
            # Past the budget the event is acked anyway: Slack's retry would only find it a duplicate.
            if not await asyncio.wait_for(receipt.taken(), ACK_BUDGET_S):
                raise EventNotTaken(f"the store could not take the event of {message.dedupe_key}")

    async def _pressed(self, body: Mapping[str, Any], action: Mapping[str, Any]) -> None:
        """A confirmation button (Socket Mode and HTTP alike): counted only for its asker; anyone
        else, or a press on a question this process does not know (it restarted), gets a note
        only they can see."""
        button = read_button(str(action.get("action_id") or ""))
        user = str((body.get("user") or {}).get("id") or "")
        notice = (
            self._questions.press(button[0], f"{PLATFORM}:{user}", button[1])
            if button is not None
            else texts.TOOL_CONFIRM_EXPIRED
        )
        if notice is None:
            return
        channel = str((body.get("channel") or {}).get("id") or "")
        message = body.get("message") or {}
        try:
            await self._client.chat_postEphemeral(
                channel=channel, user=user, text=notice, thread_ts=message.get("thread_ts")
            )
            if notice == texts.TOOL_CONFIRM_EXPIRED and message.get("ts"):  # left from before a restart
                text = str(message.get("text") or "")
                await self._client.chat_update(
                    channel=channel, ts=message["ts"], text=text, blocks=[_plain_section(text)]
                )
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            log.info("could not tell a presser about their press: %s", type(error).__name__)

    def _reopen(self, route: str) -> ThreadChannel:
        channel, thread_ts = json.loads(route)
        return ThreadChannel(self._client, channel, thread_ts, self._threads.add, self._questions)

    async def _answer(
        self, handler: MessageHandler, message: IncomingMessage, channel: ThreadChannel, receipt: Receipt
    ) -> None:
        try:
            await handler.handle(message, channel, receipt)
        finally:
            try:
                await channel.discard_placeholder()
            except Exception as error:  # noqa: BLE001 - cosmetic clean-up must not raise from a task
                log.warning("could not remove a placeholder: %s", type(error).__name__)


def _api_url(configured: str) -> str:
    """slack_sdk joins method names onto the base URL, which therefore must end with a slash."""
    url = configured or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"
