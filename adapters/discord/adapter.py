"""Discord through discord.py 2.x: gateway messages and slash commands in, messages and edits out.

The adapter only translates. A ``discord.Message`` becomes an ``IncomingMessage`` (DMs are private
chats, guild channels are groups, a thread is the ``thread_id`` of its parent channel) and the
engine's reply calls become ``send``/``edit``/typing on Discord. Access, triggers, sessions and
commands are the engine's; splitting long replies and pacing edits are ``core.render``'s, driven by
``LIMITS``.

discord.py already runs every gateway event in its own task, so a slow model call never holds up
other messages; the adapter keeps a set of those tasks only to let replies in flight finish before
the HTTP session closes at shutdown. A gateway disconnect does not touch them either: replies go
over HTTP, discord.py resumes the gateway by itself, and a replayed message is dropped by the
engine's dedupe, so nothing is lost or answered twice.

This module is ``adapters.discord.adapter``; ``import discord`` below is absolute and always means the
discord.py package.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.format import to_discord
from adapters.discord.media import DiscordFiles
from adapters.discord.settings import DiscordSettings
from adapters.downloads import Downloader
from adapters.kit import (
    SPOKEN_FILE_NAME,
    MessageHandler,
    UpdatesInFlight,
    menu,
    platform_call,
    setting,
    startup_error,
    startup_errors,
    unreachable,
)
from adapters.questions import PREFIX, OpenQuestions, button_data, read_button
from core import texts
from core.channel import FIRST_SHOW_DELAY_S, PlatformLimits, PlatformRateLimited, PlatformTrouble, PlatformUnavailable
from core.commands import CommandSpec
from core.events import ChatKind, IncomingMessage

log = logging.getLogger("chatbridge.discord")

PLATFORM = "discord"
LIMITS = PlatformLimits(max_message_chars=1900, min_edit_interval_s=1.0, first_show_delay_s=FIRST_SHOW_DELAY_S)
"""Discord allows 2000 characters a message, counted in code points as Python's ``len`` does
(discord/discord-api-docs#1315); the margin is for the zero-width space ``to_discord`` puts into
each mention the model wrote. Discord publishes no fixed edit rate: each route's bucket comes in the
``X-RateLimit-*`` headers of every answer, and discord.py waits those buckets out itself (a long
wait comes back here, see ``MAX_RATE_LIMIT_WAIT_S``). Message sends and edits in one channel share a
bucket of 5 per 5 seconds in practice, so one call a second per reply stays clear of it."""
MAX_RATE_LIMIT_WAIT_S = 30.0
"""Shorter 429 waits discord.py sits out itself; longer ones (its minimum cut-off) come back to the
renderer as ``PlatformRateLimited`` instead of silently stalling a reply."""
THREAD_NAME_CHARS = 60
INTENT_MISSING = "enable the Message Content intent in the Developer Portal → Bot → Privileged Gateway Intents"
TOKEN_REFUSED = "the bot token was refused; check adapters.discord.token (CHATBRIDGE_ADAPTERS__DISCORD__TOKEN)"
GATEWAY_REFUSALS = {
    4004: "authentication failed; check adapters.discord.token",
    4010: "invalid shard; check adapters.discord.shard_count and shard_ids",
    4011: "this bot is in too many servers for one connection; set adapters.discord.shard_count",
    4012: "invalid gateway version; check adapters.discord.gateway_url",
    4013: "invalid intents",
}
"""Close codes that end the gateway loop for good, said in the bridge's terms (discord.py keeps
only the number)."""
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
)
"""What the bridge does in a guild; the README's invite URL carries the same number."""
EPHEMERAL_COMMANDS = frozenset({"id", "admin"})
"""Slash commands whose answers only the caller sees: identities and admin output are personal."""

_COMMAND_NAME = re.compile(r"[-_a-z0-9]{1,32}")
"""Slash command names Discord accepts (lower case; it allows letters of other scripts too)."""


class _NoVoiceWarnings(logging.Filter):
    """The bridge never joins voice, so discord.py's start-up warnings about missing voice
    libraries (PyNaCl, davey) would only mislead whoever reads the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


logging.getLogger("discord.client").addFilter(_NoVoiceWarnings())


# --- endpoints and client ---------------------------------------------------------------------


@contextlib.contextmanager
def _endpoints(settings: DiscordSettings) -> Iterator[None]:
    """Point discord.py at ``api_base_url`` / ``gateway_url`` when set (a proxy, a local fake).

    The library reads both from class attributes, so they are set for the life of the client and
    put back afterwards; empty settings leave Discord's own endpoints untouched.
    """
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    if settings.api_base_url:
        Route.BASE = settings.api_base_url.rstrip("/")
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def _intents() -> discord.Intents:
    """Only what the bridge reads: guild and channel metadata, guild and DM messages, their text."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


def _build_client(settings: DiscordSettings) -> discord.Client:
    """One gateway connection, or ``shard_ids`` (default: all) of ``shard_count`` shards.

    ``AllowedMentions.none()`` is the client-wide default that every send and edit inherits, so
    nothing the model writes (``@everyone``, ``<@id>``, ``<@&role>``) ever pings anyone.
    """
    intents, mentions = _intents(), discord.AllowedMentions.none()
    if settings.shard_count is None:
        return discord.Client(intents=intents, allowed_mentions=mentions, max_ratelimit_timeout=MAX_RATE_LIMIT_WAIT_S)
    return discord.AutoShardedClient(
        intents=intents,
        allowed_mentions=mentions,
        max_ratelimit_timeout=MAX_RATE_LIMIT_WAIT_S,
        shard_count=settings.shard_count,
        shard_ids=settings.shard_ids or None,  # type: ignore[arg-type]  # None means all, as the library's default
    )


async def _login(client: discord.Client, settings: DiscordSettings) -> None:
    """Log in over HTTP (who we are, which application), turning failures into one clear line."""
    with startup_errors(PLATFORM, _login_problem):
        await client.login(settings.token.get_secret_value())


def _login_problem(error: Exception) -> str | None:
    if isinstance(error, discord.LoginFailure):
        return TOKEN_REFUSED
    if isinstance(error, aiohttp.ClientConnectionError | OSError | TimeoutError):
        return f"cannot log in: {unreachable(setting(PLATFORM, 'api_base_url'), Route.BASE, error)}"
    if isinstance(error, discord.DiscordException | aiohttp.ClientError):
        return f"cannot log in: {type(error).__name__}: {error}"
    return None


def _gateway_problem(error: Exception) -> str | None:
    """Why the gateway loop gave up for good, in the bridge's terms (see ``GATEWAY_REFUSALS``)."""
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return INTENT_MISSING
    if isinstance(error, discord.ConnectionClosed):
        hint = GATEWAY_REFUSALS.get(error.code, "see Discord's gateway close codes")
        return f"the gateway closed the connection ({error.code}): {hint}"
    return None


def _has_message_content_intent(client: discord.Client) -> bool:
    flags = client.application_flags
    return flags.gateway_message_content or flags.gateway_message_content_limited


# --- translation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a message was written, in engine terms."""

    chat_id: str
    kind: ChatKind
    thread_id: str | None = None


def _place(channel: discord.abc.Snowflake, in_guild: bool) -> _Place:
    """A thread is part of its parent channel's chat, so allow lists and ``scope: chat`` see one
    chat, and ``scope: thread`` gives each thread its own session. (A thread discord.py has not
    cached, which only happens if Discord never announced it, counts as a channel of its own.)"""
    if not in_guild:
        return _Place(f"{PLATFORM}:{channel.id}", ChatKind.PRIVATE)
    if isinstance(channel, discord.Thread):
        return _Place(f"{PLATFORM}:{channel.parent_id}", ChatKind.GROUP, str(channel.id))
    return _Place(f"{PLATFORM}:{channel.id}", ChatKind.GROUP)


def _opens_thread(message: discord.Message, auto_thread: bool) -> bool:
    """``auto_thread`` applies to messages in a plain text channel; threads and DMs stay as they are."""
    return auto_thread and isinstance(message.channel, discord.TextChannel)


def _replies_to(message: discord.Message, me: discord.ClientUser) -> bool:
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    return isinstance(resolved, discord.Message) and resolved.author.id == me.id


def translate(
    message: discord.Message, me: discord.ClientUser, files: DiscordFiles, *, auto_thread: bool
) -> IncomingMessage | None:
    """The engine's view of a gateway message; ``None`` for system messages (joins, pins, boosts).
    Its files, and those of the message it replies to, are attachments (``adapters.discord.media``).

    ``mentioned`` is a mention of the bot user or of its managed role, never ``@everyone``
    (``mentioned_in`` would count that). A message that will open an auto-thread already carries the
    thread's id, which Discord makes equal to the message's, so the question and the follow-ups in
    the thread share one session under ``scope: thread``.
    """
    if message.is_system():
        return None
    place = _place(message.channel, message.guild is not None)
    thread_id = str(message.id) if _opens_thread(message, auto_thread) else place.thread_id
    role = message.guild.self_role if message.guild is not None else None
    mention_texts = (f"<@{me.id}>", f"<@!{me.id}>") + ((f"<@&{role.id}>",) if role is not None else ())
    reference = message.reference
    original = reference.resolved if reference is not None else None
    return IncomingMessage(
        platform=PLATFORM,
        message_id=str(message.id),
        chat_id=place.chat_id,
        user_id=f"{PLATFORM}:{message.author.id}",
        text=message.content,
        chat_kind=place.kind,
        user_name=message.author.display_name,
        from_bot=message.author.bot or message.webhook_id is not None,
        mentioned=me in message.mentions or (role is not None and role.id in message.raw_role_mentions),
        mention_texts=mention_texts,
        reply_to_bot=_replies_to(message, me),
        thread_id=thread_id,
        attachments=files.attachments(message),
        replied_attachments=files.attachments(original) if isinstance(original, discord.Message) else (),
    )


def translate_command(interaction: discord.Interaction, text: str) -> IncomingMessage:
    """A slash command as the text command it stands for (``/admin clear all``)."""
    assert interaction.channel is not None  # Discord sends the channel with every command
    place = _place(interaction.channel, interaction.guild_id is not None)
    return IncomingMessage(
        platform=PLATFORM,
        message_id=str(interaction.id),
        chat_id=place.chat_id,
        user_id=f"{PLATFORM}:{interaction.user.id}",
        text=text,
        chat_kind=place.kind,
        user_name=interaction.user.display_name,
        thread_id=place.thread_id,
    )


# --- replies ----------------------------------------------------------------------------------


def _trouble(error: Exception) -> PlatformTrouble | None:
    """A long 429 is the renderer's to wait out (see ``MAX_RATE_LIMIT_WAIT_S``); a 5xx or a lost
    connection it retries."""
    if isinstance(error, discord.RateLimited):
        return PlatformRateLimited(error.retry_after)
    if isinstance(error, discord.DiscordServerError | aiohttp.ClientError | TimeoutError | OSError):
        return PlatformUnavailable(f"{type(error).__name__}: {error}")
    return None


def _thread_name(message: discord.Message) -> str:
    first_line = message.clean_content.strip().split("\n", 1)[0].strip()
    return first_line[:THREAD_NAME_CHARS] or "chat"


class _ChannelReplies(ABC):
    """What both kinds of reply to a channel message share: the first message answers (references)
    the question, the rest follow it; where they go is the subclass's ``_destination``."""

    limits = LIMITS

    def __init__(self, route: str, questions: OpenQuestions) -> None:
        self.route = route
        self._questions = questions
        self._reference: discord.MessageReference | None = None

    async def send(self, text: str) -> object:
        target = await self._destination()
        reference, self._reference = self._reference, None
        content = to_discord(text)
        sending = target.send(content) if reference is None else target.send(content, reference=reference)
        return await platform_call(sending, _trouble)

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, discord.Message)
        await platform_call(handle.edit(content=to_discord(text)), _trouble)

    async def send_voice(self, audio: bytes, mime_type: str) -> None:
        """The spoken answer as an audio file where the text answer went (the app plays it inline)."""
        target = await self._destination()
        await platform_call(target.send(file=discord.File(io.BytesIO(audio), filename=SPOKEN_FILE_NAME)), _trouble)

    async def typing(self) -> None:
        target = await self._destination()
        await platform_call(target.typing(), _trouble)

    async def confirm(self, question: str, asker: str, timeout_s: float) -> bool:
        """Two button components under the question; the presses arrive as component interactions
        (``DiscordAdapter._on_interaction``). The question holds the model's arguments, so it pings
        nobody."""

        async def post(question_id: str) -> discord.Message:
            target = await self._destination()
            view = _buttons(question_id)
            sending = target.send(question, view=view, allowed_mentions=discord.AllowedMentions.none())
            sent = await platform_call(sending, _trouble)
            view.stop()  # the presses are read in on_interaction, not by the view
            return sent

        async def settle(message: discord.Message, decided: str) -> None:
            await platform_call(message.edit(content=decided, view=None), _trouble)

        return await self._questions.ask(question, asker, timeout_s, post, settle)

    @abstractmethod
    async def _destination(self) -> discord.abc.Messageable: ...


class MessageReplies(_ChannelReplies):
    """The reply side of one gateway message: in its channel, or in a thread opened on it.

    With ``auto_thread`` the thread is opened on the trigger the first time the engine shows
    anything (typing or a message), so messages the bot does not answer open nothing. A thread that
    cannot be opened (no permission) is logged and the reply goes to the channel instead.
    """

    def __init__(self, trigger: discord.Message, *, open_thread: bool, questions: OpenQuestions) -> None:
        super().__init__(json.dumps([trigger.channel.id, trigger.id]), questions)
        self._trigger = trigger
        self._open_thread = open_thread
        self._choosing: asyncio.Future[discord.abc.Messageable] | None = None

    async def _destination(self) -> discord.abc.Messageable:
        """Decided once, by a task of its own that both the typing signal and the first message
        wait for: the typing signal is cancelled when the answer is complete, and cancelling a
        thread's creation halfway would leave discord.py's request (and the answer) hanging."""
        if self._choosing is None:
            self._choosing = asyncio.ensure_future(self._choose())
        return await asyncio.shield(self._choosing)

    async def _choose(self) -> discord.abc.Messageable:
        thread = await self._new_thread() if self._open_thread else None
        if thread is None:
            self._reference = self._trigger.to_reference(fail_if_not_exists=False)
        return thread or self._trigger.channel

    async def _new_thread(self) -> discord.Thread | None:
        try:
            return await self._trigger.create_thread(name=_thread_name(self._trigger))
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning(
                "could not open a thread in channel %s (%s); answering in the channel", self._trigger.channel.id, exc
            )
            return None


class ReopenedReplies(_ChannelReplies):
    """Answers to a message received before a restart (or by another process): in its channel,
    replying to it, with no thread opened, since the question may already have one."""

    def __init__(self, client: discord.Client, route: str, questions: OpenQuestions) -> None:
        super().__init__(route, questions)
        channel_id, message_id = json.loads(route)
        self._target = client.get_partial_messageable(channel_id)
        self._reference = discord.MessageReference(
            message_id=message_id, channel_id=channel_id, fail_if_not_exists=False
        )

    async def _destination(self) -> discord.abc.Messageable:
        return self._target


def _buttons(question_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for label, yes, style in (
        (texts.TOOL_CONFIRM_YES, True, discord.ButtonStyle.success),
        (texts.TOOL_CONFIRM_NO, False, discord.ButtonStyle.danger),
    ):
        view.add_item(discord.ui.Button(label=label, style=style, custom_id=button_data(question_id, yes)))
    return view


class InteractionReplies:
    """The reply side of a slash command, answered through the interaction's follow-up webhook.

    The adapter defers the interaction before the engine runs (Discord wants an answer within 3 s,
    and a ``/reset`` waits for a reply in flight), so every message here is a follow-up; the first
    one replaces the "thinking…" placeholder, which is also the only typing signal there is.
    """

    limits = LIMITS
    route = ""
    """Slash commands are answered at once, never queued, so they need no way back."""

    def __init__(self, interaction: discord.Interaction, *, ephemeral: bool) -> None:
        self._interaction = interaction
        self._ephemeral = ephemeral
        self.sent = 0

    async def send(self, text: str) -> object:
        message = await self._interaction.followup.send(to_discord(text), ephemeral=self._ephemeral, wait=True)
        self.sent += 1
        return message

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, discord.WebhookMessage)
        await handle.edit(content=to_discord(text))

    async def typing(self) -> None:
        """The deferred response already shows "thinking…"."""


# --- the adapter ------------------------------------------------------------------------------


class DiscordAdapter:
    """Runs one discord.py client (or a range of shards) and feeds the engine.

    ``stop`` stops taking new messages at once; the client, and with it the HTTP session replies
    are sent on, closes only after the replies in flight have finished (cancelling ``run`` bounds
    how long that takes).
    """

    name = PLATFORM

    def __init__(self, settings: DiscordSettings) -> None:
        self._settings = settings
        self._stopping = asyncio.Event()
        self._updates = UpdatesInFlight()
        self._client: discord.Client | None = None
        self._downloader = Downloader()
        self.files = DiscordFiles(self._downloader)
        """Makes attachments and their fetches; ``files.fetch(source)`` fetches a queued one again."""
        self._questions = OpenQuestions()

    @property
    def ready(self) -> bool:
        """For ``/readyz``: every gateway connection this process runs is open right now."""
        client = self._client
        if client is None or client.is_closed():
            return False
        if isinstance(client, discord.AutoShardedClient):
            return bool(client.shards) and not any(shard.is_closed() for shard in client.shards.values())
        return client.ws is not None and client.ws.open

    async def run(self, handler: MessageHandler) -> None:
        with _endpoints(self._settings):
            self._client = client = _build_client(self._settings)
            tree = app_commands.CommandTree(client)
            self._register(client, tree, handler)
            try:
                await _login(client, self._settings)
                await self._sync_commands(tree)
                await self._serve(client)
            finally:
                await client.close()
                await self._downloader.close()

    async def stop(self) -> None:
        self._stopping.set()

    async def check(self) -> str:
        with _endpoints(self._settings):
            client = _build_client(self._settings)
            try:
                await _login(client, self._settings)
                if not _has_message_content_intent(client):
                    raise startup_error(PLATFORM, INTENT_MISSING)
                assert client.user is not None and client.application_id is not None
                invite = discord.utils.oauth_url(
                    client.application_id, permissions=INVITE_PERMISSIONS, scopes=("bot", "applications.commands")
                )
                return f"logged in as {client.user} (id {client.user.id}), Message Content intent on; invite: {invite}"
            finally:
                await client.close()

    # --- running --------------------------------------------------------------------------------

    async def _serve(self, client: discord.Client) -> None:
        """Stay connected until ``stop``, then let the replies in flight finish."""
        connection = asyncio.create_task(self._connect(client))
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if connection.done():
                connection.result()
                return
            await self._updates.wait()
        finally:
            stopping.cancel()
            connection.cancel()
            await asyncio.wait({connection, stopping})

    @staticmethod
    async def _connect(client: discord.Client) -> None:
        """The gateway loop; discord.py reconnects and resumes by itself after a drop, and gives up
        only on a close that retrying cannot fix (bad intents, sharding required, invalid shard)."""
        with startup_errors(PLATFORM, _gateway_problem):
            await client.connect()

    @staticmethod
    async def _sync_commands(tree: app_commands.CommandTree) -> None:
        """Publish the slash commands (a bulk overwrite, so restarts do not pile them up). A failure
        only costs the slash forms; the text commands still work."""
        try:
            await tree.sync()
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("could not register the slash commands (%s); text commands still work", exc)

    def _register(self, client: discord.Client, tree: app_commands.CommandTree, handler: MessageHandler) -> None:
        async def on_message(message: discord.Message) -> None:
            await self._on_message(client, handler, message)

        async def on_ready() -> None:
            handler.attach(PLATFORM, lambda route: ReopenedReplies(client, route, self._questions), self.files.fetch)

        async def on_interaction(interaction: discord.Interaction) -> None:
            await self._on_interaction(interaction)

        client.event(on_message)
        client.event(on_ready)
        client.event(on_interaction)
        for spec in menu(handler.commands, _COMMAND_NAME):
            tree.add_command(self._slash_command(handler, spec))

    def _slash_command(self, handler: MessageHandler, spec: CommandSpec) -> app_commands.Command[Any, ..., None]:
        """A callback of its own per command: discord.py reads the parameters off its signature."""
        if spec.args_hint:

            async def with_args(interaction: discord.Interaction, args: str = "") -> None:
                await self._on_slash(handler, interaction, spec.name, args)

            callback: Callable[..., Coroutine[Any, Any, None]] = app_commands.describe(args=spec.args_hint)(with_args)
        else:

            async def bare(interaction: discord.Interaction) -> None:
                await self._on_slash(handler, interaction, spec.name, "")

            callback = bare
        return app_commands.Command(name=spec.name, description=spec.description, callback=callback)

    # --- one event ------------------------------------------------------------------------------

    async def _on_message(self, client: discord.Client, handler: MessageHandler, message: discord.Message) -> None:
        if self._stopping.is_set():
            return
        assert client.user is not None  # set by login, before the gateway delivers anything
        incoming = translate(message, client.user, self.files, auto_thread=self._settings.auto_thread)
        if incoming is None:
            return
        replies = MessageReplies(
            message, open_thread=_opens_thread(message, self._settings.auto_thread), questions=self._questions
        )
        await self._handle(handler, incoming, replies)

    async def _on_slash(self, handler: MessageHandler, interaction: discord.Interaction, name: str, args: str) -> None:
        if self._stopping.is_set():
            return
        ephemeral = name in EPHEMERAL_COMMANDS
        incoming = translate_command(interaction, f"/{name} {args}".strip())
        replies = InteractionReplies(interaction, ephemeral=ephemeral)
        try:
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        except discord.NotFound:
            log.warning("slash command /%s expired before it could be answered", name)
            return
        await self._handle(handler, incoming, replies)
        if not replies.sent:
            # The engine chose silence (a denied user under on_denied: ignore): drop "thinking…".
            # Cosmetic: left alone, Discord ends it itself when the interaction expires (15 min).
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()

    async def _on_interaction(self, interaction: discord.Interaction) -> None:
        """A confirmation button: counted only for its asker. Discord wants every interaction
        answered within 3 s: the asker's press with a silent acknowledgement (the question is then
        edited to the decision), anyone else's with a note only they see; a press on a question this
        process does not know (it restarted) is told so, and the buttons are taken away."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id") or "")
        if not custom_id.startswith(PREFIX):
            return  # not a button of ours
        button = read_button(custom_id)
        presser = f"{PLATFORM}:{interaction.user.id}"
        notice = self._questions.press(button[0], presser, button[1]) if button else texts.TOOL_CONFIRM_EXPIRED
        try:
            if notice is None:
                await interaction.response.defer()
            elif notice == texts.TOOL_CONFIRM_EXPIRED:
                await interaction.response.edit_message(view=None)
                await interaction.followup.send(notice, ephemeral=True)
            else:
                await interaction.response.send_message(notice, ephemeral=True)
        except (discord.HTTPException, discord.RateLimited) as error:
            log.info("could not answer a button press: %s", error)

    async def _handle(
        self, handler: MessageHandler, incoming: IncomingMessage, replies: MessageReplies | InteractionReplies
    ) -> None:
        """Track the event's task (discord.py made one per event) so shutdown can wait for it."""
        with self._updates.track():
            await handler.handle(incoming, replies)
