"""Telegram through python-telegram-bot: Telegram updates in, the engine's replies out.

What reaches the engine, and why:

- Only ``message`` updates are subscribed to (``allowed_updates``). Edited messages are ignored: the
  question was already answered, and answering an edit again would fork the conversation. Channel
  posts are ignored: a channel has no one to talk to. Messages from bots (anonymous group admins and
  channels posting into a group arrive as bot senders too) are passed on marked ``from_bot``, and the
  engine drops them.
- Mentions come from the message entities, never from a substring match: ``@BotUsername`` mentions
  and ``text_mention`` entities that point at the bot's user id.
- A command entity at the start is normalised: ``/reset@BotUsername`` becomes ``/reset`` and a
  command addressed to another bot (``/reset@OtherBot``) is dropped without reaching the engine.
  ``/start``, which every Telegram client sends when a person opens the bot, means ``/help``.
- In a forum topic the topic is the thread (``thread_id``), and replies go back into it.
- Photos, voice notes, audio files and documents travel as attachments (``adapters.telegram.media``)
  with the caption as the text, and so do those of the message replied to. A photo without a caption
  in a private chat is a message too. An album arrives as one message per item, sharing a
  ``media_group`` (only one of them has the caption), which the engine joins into one question.
- Anything else without text (a sticker, a location, a poll...) is ignored in groups; in a private
  chat the sender gets a short note, once per album, that it is not understood.

Updates are processed concurrently, one task each, so a slow model call in one chat never delays
another chat; ordering within a session is the engine's job. Replies are HTML (see
``adapters.telegram.format``) with a plain-text fallback, and limits are data for ``core.render``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError

from adapters.downloads import Downloader
from adapters.kit import (
    AdapterStartupError,
    MessageHandler,
    Routes,
    UpdatesInFlight,
    menu,
    platform_call,
    setting,
    startup_error,
    startup_errors,
    unreachable,
)
from adapters.questions import OpenQuestions, button_data, read_button
from adapters.telegram.format import markdown_to_html
from adapters.telegram.media import TelegramFiles, file_base_url
from adapters.telegram.polling import Poller, retry_after_s
from adapters.telegram.request import AiohttpRequest
from adapters.telegram.settings import TelegramSettings
from core import texts
from core.channel import (
    FIRST_SHOW_DELAY_S,
    LengthUnit,
    PlatformLimits,
    PlatformRateLimited,
    PlatformTooLong,
    PlatformTrouble,
    PlatformUnavailable,
    Receipt,
)
from core.events import ChatKind, IncomingMessage
from core.render import send_text

log = logging.getLogger("chatbridge.telegram")

PLATFORM = "telegram"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_BASE_URL = "https://api.telegram.org/bot"
UPDATE_TYPES = [Update.MESSAGE, Update.CALLBACK_QUERY]
"""Telegram does not even send what we would ignore (edits, channel posts); callback queries are
the presses of a tool confirmation's buttons."""
WEBHOOK_PORTS = frozenset({443, 80, 88, 8443})
"""The only ports Telegram's own Bot API sets a webhook on, and only for https:// URLs (a local Bot
API server, reached through ``base_url``, takes any)."""

_CHAT_KINDS: dict[str, ChatKind] = {
    ChatType.PRIVATE: ChatKind.PRIVATE,
    ChatType.GROUP: ChatKind.GROUP,
    ChatType.SUPERGROUP: ChatKind.GROUP,
}
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_NOT_MODIFIED = "message is not modified"
_TOO_LONG = "message is too long"
_NOTED_ALBUMS = 256
CONFLICT_REPORTED_S = 35.0
"""How long a 409 Conflict keeps the adapter not ready: polling is retried at most 30 s apart, so a
conflict that lasts is seen again within this."""


@dataclass(frozen=True, slots=True)
class TelegramLimits:
    """Per chat kind, from Telegram's bot FAQ ("My bot is hitting limits"): in one chat, about one
    message a second, with short bursts allowed; in a group, no more than 20 messages a minute. So a
    private reply streams one call a second and may end with three at once; a group reply streams
    one call every 4 s and may end with five at once, which keeps even a reply streamed for a whole
    minute within 20 calls (16 + 4). 4000 leaves room under the 4096 limit, which Telegram counts in
    UTF-16 code units of the visible text; the HTML conversion never makes the visible text longer
    than the Markdown it was cut from."""

    private: PlatformLimits = PlatformLimits(
        max_message_chars=4000,
        min_edit_interval_s=1.0,
        first_show_delay_s=FIRST_SHOW_DELAY_S,
        length_unit=LengthUnit.UTF16,
        final_burst=3,
    )
    group: PlatformLimits = PlatformLimits(
        max_message_chars=4000,
        min_edit_interval_s=4.0,
        first_show_delay_s=FIRST_SHOW_DELAY_S,
        length_unit=LengthUnit.UTF16,
        final_burst=5,
    )


# --- replies --------------------------------------------------------------------------------------


class TelegramChannel:
    """The reply side of one Telegram message: same chat, same topic, replying to it in groups."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        limits: PlatformLimits,
        thread_id: int | None,
        reply_to: int | None,
        questions: OpenQuestions,
    ) -> None:
        self._bot = bot
        self._questions = questions
        self._chat_id = chat_id
        self._limits = limits
        self._thread_id = thread_id
        self._reply_to = reply_to
        self._route = json.dumps([chat_id, thread_id, reply_to])

    @property
    def limits(self) -> PlatformLimits:
        return self._limits

    @property
    def route(self) -> str:
        """Chat, topic and the message to reply to (only group answers reply to their question)."""
        return self._route

    async def send(self, text: str) -> object:
        """Only the first message of an answer replies to the question; the rest follow it."""
        reply = ReplyParameters(self._reply_to, allow_sending_without_reply=True) if self._reply_to else None
        sent = await platform_call(
            _formatted(
                lambda **body: self._bot.send_message(
                    self._chat_id, message_thread_id=self._thread_id, reply_parameters=reply, **body
                ),
                text,
            ),
            _trouble,
        )
        self._reply_to = None
        return sent.message_id

    async def send_voice(self, audio: bytes, mime_type: str) -> None:
        """A voice note (Telegram plays OGG with Opus inside as one), under the text answer."""
        await platform_call(
            self._bot.send_voice(self._chat_id, voice=audio, message_thread_id=self._thread_id), _trouble
        )

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int)
        try:
            await platform_call(
                _formatted(
                    lambda **body: self._bot.edit_message_text(chat_id=self._chat_id, message_id=handle, **body),
                    text,
                ),
                _trouble,
            )
        except BadRequest as error:
            if _NOT_MODIFIED not in str(error).lower():
                raise

    async def typing(self) -> None:
        await platform_call(
            self._bot.send_chat_action(self._chat_id, ChatAction.TYPING, message_thread_id=self._thread_id),
            _trouble,
        )

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        """An inline keyboard under the question (plain text: it holds the model's arguments);
        the presses arrive as callback queries (``TelegramAdapter._pressed``)."""

        async def post(question_id: str) -> int:
            buttons = [
                InlineKeyboardButton(texts.TOOL_CONFIRM_YES, callback_data=button_data(question_id, True)),
                InlineKeyboardButton(texts.TOOL_CONFIRM_NO, callback_data=button_data(question_id, False)),
            ]
            sent = await platform_call(
                self._bot.send_message(
                    self._chat_id,
                    question,
                    message_thread_id=self._thread_id,
                    reply_markup=InlineKeyboardMarkup([buttons]),
                ),
                _trouble,
            )
            return sent.message_id

        async def settle(message_id: int, decided: str) -> None:
            # Without a reply_markup the edit also takes the keyboard away.
            await platform_call(
                self._bot.edit_message_text(decided, chat_id=self._chat_id, message_id=message_id), _trouble
            )

        return await self._questions.ask(question, asker, timeout_s, post, settle)


async def _formatted(call: Callable[..., Awaitable[Message | bool]], text: str) -> Message:
    """Send ``text`` as HTML; if Telegram rejects the formatting, send it again as plain text, so a
    reply is never lost to markup. "Not modified" is passed up: it is an answer, not a rejection."""
    try:
        result = await call(text=markdown_to_html(text), parse_mode=ParseMode.HTML)
    except BadRequest as error:
        reason = str(error).lower()
        if _NOT_MODIFIED in reason:
            raise
        if _TOO_LONG in reason:
            raise PlatformTooLong(str(error)) from None
        log.info("Telegram rejected the formatted text (%s); sending it as plain text", error)
        try:
            result = await call(text=text)
        except BadRequest as plain_error:
            if _TOO_LONG in str(plain_error).lower():
                raise PlatformTooLong(str(plain_error)) from None
            raise
    assert isinstance(result, Message)
    return result


def _trouble(error: Exception) -> PlatformTrouble | None:
    """A 429 with the wait it asks for (PTB 22 returns an int with a deprecation warning, and a
    timedelta once it switches over); a 5xx, a timeout or a lost connection, which PTB all raise as
    ``NetworkError``. A ``BadRequest`` is one too in PTB's hierarchy, but it is Telegram's answer."""
    if isinstance(error, RetryAfter):
        return PlatformRateLimited(retry_after_s(error))
    if isinstance(error, NetworkError) and not isinstance(error, BadRequest):
        return PlatformUnavailable(str(error))
    return None


# --- updates in -----------------------------------------------------------------------------------


def translate(message: Message, me: User, files: TelegramFiles) -> IncomingMessage | None:
    """The core event for a message with text or files, or None for what the engine should never
    see: messages with neither, chats that are not private chats or groups, commands addressed to
    another bot."""
    kind = _CHAT_KINDS.get(message.chat.type)
    sender = message.from_user
    attachments = files.attachments(message)
    if kind is None or sender is None or (_body(message) is None and not attachments):
        return None
    text = _command_text(message, me)
    if text is None:
        return None
    mentions = _mentions(message, me)
    original = message.reply_to_message
    replied = files.attachments(original) if original is not None and original.forum_topic_created is None else ()
    return IncomingMessage(
        platform=PLATFORM,
        message_id=str(message.message_id),
        chat_id=f"{PLATFORM}:{message.chat.id}",
        user_id=f"{PLATFORM}:{sender.id}",
        text=text,
        chat_kind=kind,
        user_name=sender.full_name,
        from_bot=sender.is_bot,
        mentioned=bool(mentions),
        mention_texts=mentions,
        reply_to_bot=_replies_to(message, me),
        thread_id=None if (topic := _topic(message)) is None else str(topic),
        attachments=attachments,
        replied_attachments=replied,
        media_group=message.media_group_id,
    )


@dataclass(frozen=True, slots=True)
class _Body:
    """A message's text or a file's caption, with its entities and the way to read one."""

    text: str
    entities: tuple[MessageEntity, ...]
    parse: Callable[[MessageEntity], str]


def _body(message: Message) -> _Body | None:
    if message.text is not None:
        return _Body(message.text, message.entities, message.parse_entity)
    if message.caption is not None:
        return _Body(message.caption, message.caption_entities, message.parse_caption_entity)
    return None


def _command_text(message: Message, me: User) -> str | None:
    """The text with a leading command's ``@BotUsername`` removed; None for another bot's command."""
    body = _body(message)
    if body is None:
        return ""
    text = body.text
    for entity in body.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            command = body.parse(entity)
            name, _, target = command.partition("@")
            if target and target.lower() != (me.username or "").lower():
                return None
            name = "/help" if name.lower() == "/start" else name
            return name + text[len(command) :]
    return text


def _mentions(message: Message, me: User) -> tuple[str, ...]:
    """The literal texts of the entities that mention this bot, for the engine to strip."""
    body = _body(message)
    if body is None:
        return ()
    handle = f"@{me.username}".lower()
    found = [
        body.parse(entity)
        for entity in body.entities
        if (entity.type == MessageEntity.MENTION and body.parse(entity).lower() == handle)
        or (entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == me.id)
    ]
    return tuple(dict.fromkeys(found))


def _replies_to(message: Message, me: User) -> bool:
    """In a forum every topic message "replies" to the topic's creation; that is not a reply."""
    original = message.reply_to_message
    if original is None or original.forum_topic_created is not None:
        return False
    return original.from_user is not None and original.from_user.id == me.id


def _topic(message: Message) -> int | None:
    """Only forum topics are threads; in other groups ``message_thread_id`` marks reply chains."""
    return message.message_thread_id if message.is_topic_message else None


# --- the adapter ----------------------------------------------------------------------------------


class TelegramAdapter:
    """Long polling by default; in webhook mode Telegram posts to the bridge's own HTTP server.

    ``limits`` and ``poll_timeout_s`` exist for tests and unusual deployments; the defaults follow
    Telegram's documented limits and recommended long-poll length.
    """

    name = PLATFORM

    def __init__(
        self,
        settings: TelegramSettings,
        routes: Routes,
        *,
        limits: TelegramLimits = TelegramLimits(),
        poll_timeout_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._token = settings.token.get_secret_value()
        self._secret = settings.webhook_secret.get_secret_value().encode()
        self._limits = limits
        self._poll_timeout = dt.timedelta(seconds=poll_timeout_s)
        # python-telegram-bot logs this URL, token included, at DEBUG when the Bot is created.
        logging.getLogger("telegram.Bot").setLevel(logging.INFO)
        self._bot = Bot(
            self._token,
            base_url=settings.base_url or DEFAULT_BASE_URL,
            base_file_url=file_base_url(settings.base_url),
            request=AiohttpRequest(on_unauthorized=self._token_refused),
            get_updates_request=AiohttpRequest(on_unauthorized=self._token_refused),
        )
        self._failure: AdapterStartupError | None = None
        self._conflict_at = float("-inf")
        self._poller: Poller | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._handler: MessageHandler | None = None
        self._listening = False
        self._stopped = asyncio.Event()
        self._updates = UpdatesInFlight()
        self._noted_albums: deque[str] = deque(maxlen=_NOTED_ALBUMS)
        self._downloader = Downloader()
        self.files = TelegramFiles(self._bot, self._downloader)
        """Makes attachments and their fetches; ``files.fetch(source)`` fetches a queued one again."""
        self._questions = OpenQuestions()
        if settings.mode == "webhook":
            routes.add_route("POST", WEBHOOK_PATH, self._on_webhook)

    @property
    def ready(self) -> bool:
        """Connected and taking updates (for the readiness endpoint): not while another poller of
        the same token is answered 409 Conflict, which polling retries for as long as it lasts."""
        conflicted = time.monotonic() - self._conflict_at < CONFLICT_REPORTED_S
        return self._listening and not self._stopped.is_set() and not conflicted

    async def run(self, handler: MessageHandler) -> None:
        """Raises ``AdapterStartupError`` when the token stops being accepted while running, so that
        the process ends (exit status 1) and a supervisor restarts it or alerts."""
        try:
            with startup_errors(PLATFORM, self._startup_problem):
                await self._start(handler)
            await self._stopped.wait()
        finally:
            await self._close()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> str:
        """getMe, and in webhook mode whether Telegram would take ``webhook_url``: setting it here
        would take the updates away from a bridge already running."""
        refusal = self._webhook_refusal()
        if refusal is not None:
            raise startup_error(PLATFORM, refusal)
        with startup_errors(PLATFORM, self._startup_problem):
            try:
                await self._bot.initialize()
                username = self._bot.username
            finally:
                await self._bot.shutdown()
        return f"connected as @{username} ({self._settings.mode})"

    # --- lifecycle ------------------------------------------------------------------------------

    async def _start(self, handler: MessageHandler) -> None:
        await self._bot.initialize()
        await self._bot.set_my_commands(_menu(handler))
        self._handler = handler
        if self._settings.mode == "webhook":
            await self._bot.set_webhook(
                self._settings.webhook_url,
                secret_token=self._settings.webhook_secret.get_secret_value(),
                allowed_updates=UPDATE_TYPES,
            )
        else:
            await self._start_polling()
        self._listening = True
        handler.attach(PLATFORM, self._reopen, self.files.fetch)
        log.info("connected as @%s (%s)", self._bot.username, self._settings.mode)

    async def _start_polling(self) -> None:
        """``polling.Poller``: an update is confirmed to Telegram only once it is in the store."""
        self._poller = Poller(
            self._bot,
            timeout=self._poll_timeout,
            allowed_updates=UPDATE_TYPES,
            on_conflict=self._conflicted,
            on_error=self._polling_failed,
        )
        await self._poller.start()
        self._poll_task = asyncio.create_task(self._poll(self._poller))

    async def _poll(self, poller: Poller) -> None:
        try:
            await poller.run(self._deliver)
        except InvalidToken:
            self._token_refused()

    def _deliver(self, update: Update) -> Receipt:
        receipt = Receipt(redelivers=True)
        self._updates.spawn(self._process(update, receipt))
        return receipt

    async def _close(self) -> None:
        """Stop receiving, let replies in flight end (cancelling ``run`` bounds them), then close.

        Polling ends with one last getUpdates that confirms what was taken, so nothing is fetched
        twice after a restart. A webhook stays set: Telegram keeps updates while we are down.
        """
        self._stopped.set()
        if self._poll_task is not None:
            self._poll_task.cancel()
            await asyncio.wait({self._poll_task})
        try:
            await self._updates.wait()
        finally:
            if self._poller is not None:
                await self._poller.confirm()
            await self._bot.shutdown()
            await self._downloader.close()

    # --- updates --------------------------------------------------------------------------------

    async def _on_webhook(self, request: web.Request) -> web.Response:
        """403 without the configured secret; 503 before start-up and after stop, so Telegram keeps
        the update and delivers it again later."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            log.warning("webhook request without the right secret token from %s refused", request.remote)
            return web.Response(status=403)
        if self._handler is None or self._stopped.is_set():
            return web.Response(status=503)
        try:
            update = Update.de_json(await request.json(), self._bot)
        except Exception as error:  # noqa: BLE001 - any malformed body is the sender's problem
            log.warning("webhook body is not a Telegram update: %s", type(error).__name__)
            return web.Response(status=400)
        receipt = Receipt(redelivers=True)
        self._updates.spawn(self._process(update, receipt))
        # Telegram delivers the update again until it gets a 2xx, so the answer waits until the
        # update is in the store; 503 when the store could not take it.
        return web.Response() if await receipt.taken() else web.Response(status=503)

    async def _process(self, update: Update, receipt: Receipt | None = None) -> None:
        message = update.message
        if update.callback_query is not None:
            if receipt is not None:
                receipt.settle(True)  # a press is acted on at once, or not at all: nothing to store
            await self._pressed(update.callback_query)
            return
        if message is None or self._handler is None:
            if receipt is not None:
                receipt.settle(True)
            return
        channel = self._channel(message)
        try:
            incoming = translate(message, self._bot.bot, self.files)
            if incoming is not None:
                await self._handler.handle(incoming, channel, receipt)
            else:
                if receipt is not None:
                    receipt.settle(True)
                if self._wants_text_note(message):
                    await send_text(channel, texts.ONLY_TEXT_SUPPORTED)
        except (TelegramError, PlatformTrouble) as error:
            log.warning("could not answer Telegram message %s: %s", message.message_id, error)
        except Exception:
            log.exception("unexpected error handling Telegram update %s", update.update_id)
        finally:
            if receipt is not None:
                receipt.settle(True)

    async def _pressed(self, query: CallbackQuery) -> None:
        """A confirmation button: counted only for its asker; everyone is answered, since Telegram
        shows a spinner on the button until the callback query is."""
        button = read_button(query.data or "")
        notice = (
            self._questions.press(button[0], f"{PLATFORM}:{query.from_user.id}", button[1])
            if button is not None
            else texts.TOOL_CONFIRM_EXPIRED
        )
        try:
            await query.answer(notice)
            if notice == texts.TOOL_CONFIRM_EXPIRED and isinstance(query.message, Message):
                await query.message.edit_reply_markup(None)  # a question left from before a restart
        except TelegramError as error:
            log.info("could not answer a button press: %s", error)

    def _channel(self, message: Message) -> TelegramChannel:
        private = message.chat.type == ChatType.PRIVATE
        return TelegramChannel(
            self._bot,
            message.chat.id,
            limits=self._limits.private if private else self._limits.group,
            thread_id=_topic(message),
            reply_to=None if private else message.message_id,
            questions=self._questions,
        )

    def _reopen(self, route: str) -> TelegramChannel:
        chat_id, thread_id, reply_to = json.loads(route)
        return TelegramChannel(
            self._bot,
            chat_id,
            limits=self._limits.private if reply_to is None else self._limits.group,
            thread_id=thread_id,
            reply_to=reply_to,
            questions=self._questions,
        )

    def _wants_text_note(self, message: Message) -> bool:
        """A person sent media in a private chat; an album gets one note, not one per picture."""
        sender = message.from_user
        if message.chat.type != ChatType.PRIVATE or sender is None or sender.is_bot:
            return False
        if message.effective_attachment is None:
            return False  # service messages (a pin, a timer change) need no answer
        album = message.media_group_id
        if album is not None:
            if album in self._noted_albums:
                return False
            self._noted_albums.append(album)
        return True

    # --- errors ---------------------------------------------------------------------------------

    def _polling_failed(self, error: TelegramError) -> None:
        log.warning("polling Telegram failed, retrying: %s", self._redact(str(error)))

    def _conflicted(self) -> None:
        self._conflict_at = time.monotonic()
        log.error("another process polls with this bot token (409 Conflict); not ready until it stops")

    def _token_refused(self) -> None:
        """Any 401 from the Bot API: the token was revoked or replaced. Nothing can work any more."""
        if self._failure is None and self._listening:
            self._failure = startup_error(
                PLATFORM, f"the Bot API no longer accepts the token; set a valid {setting(PLATFORM, 'token')}"
            )
            self._stopped.set()

    def _startup_problem(self, error: Exception) -> str | None:
        """What went wrong at start-up, in the bridge's terms; never the token, which some PTB
        messages contain."""
        if isinstance(error, InvalidToken):
            return f"the Bot API rejected the token ({setting(PLATFORM, 'token')})"
        if isinstance(error, BadRequest):
            return f"the Bot API refused start-up: {self._redact(str(error))}"
        if isinstance(error, NetworkError):
            where = self._settings.base_url or DEFAULT_BASE_URL
            return f"cannot reach the Bot API: {self._redact(unreachable(setting(PLATFORM, 'base_url'), where, error))}"
        if isinstance(error, TelegramError):
            return f"start-up failed: {self._redact(str(error))}"
        return None

    def _webhook_refusal(self) -> str | None:
        """Why Telegram's setWebhook would refuse ``webhook_url``, which would stop ``run`` at start-up."""
        if self._settings.mode != "webhook" or self._settings.base_url:
            return None
        url = urlsplit(self._settings.webhook_url)
        try:
            port = url.port or 443
        except ValueError:
            port = None
        if url.scheme == "https" and port in WEBHOOK_PORTS:
            return None
        return (
            f"the Bot API sets webhooks only on https:// URLs with port 443, 80, 88 or 8443; "
            f"change {setting(PLATFORM, 'webhook_url')}"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text


def _menu(handler: MessageHandler) -> list[BotCommand]:
    """Telegram's menu shows every user the same list, so admin commands stay out of it; commands
    whose names Telegram refuses still work when typed."""
    return [BotCommand(c.name, c.description) for c in menu(handler.commands, _COMMAND_NAME) if not c.admin_only]
