"""A local fake of Discord, for driving the real discord.py client in tests.

One aiohttp server on 127.0.0.1 serves both halves of Discord's wire API:

- the REST API under ``/api/v10`` (login, application info, slash command sync, channel messages,
  edits, typing, threads, interaction callbacks and their follow-up webhook), answering with
  ``Content-Type: application/json`` exactly, as discord.py only decodes JSON under that header;
- the gateway websocket at ``/gateway`` (HELLO, IDENTIFY, heartbeats and their ACK, READY,
  GUILD_CREATE, RESUME, RECONNECT and dispatches), in plain JSON text frames.

The world is small and fixed: one guild with a text channel, a thread in it and the bot's managed
role; a DM channel; two people and another bot. Tests make people write with ``say`` and ``slash``
and read what the bridge posted with ``bot_messages`` and ``followups``; ``calls`` records every
REST request with its JSON body, so tests can also assert on the wire (``allowed_mentions``).

Files are served the way Discord's CDN serves them: ``upload`` stores bytes and returns the
attachment object, whose signed ``url`` (``/attachments/<channel>/<id>/<name>?ex=..&hm=..``) needs
no token; ``cdn_requests`` lists each path fetched, so a test can assert that a file was not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

TOKEN = "fake-bot-token"
TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"
MESSAGE_CONTENT_INTENT = 1 << 15
APP_FLAG_MESSAGE_CONTENT_LIMITED = 1 << 19
EPHEMERAL_FLAG = 64
VOICE_MESSAGE_FLAG = 1 << 13

BOT_ID = 1100000000000000001
APP_ID = BOT_ID
ALICE_ID = 1100000000000000002
BOB_ID = 1100000000000000003
OTHER_BOT_ID = 1100000000000000004
GUILD_ID = 1100000000000000010
CHANNEL_ID = 1100000000000000011
THREAD_ID = 1100000000000000012
DM_CHANNEL_ID = 1100000000000000013
BOT_ROLE_ID = 1100000000000000014


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


BOT = user(BOT_ID, "chatbridge", bot=True)
ALICE = user(ALICE_ID, "alice")
BOB = user(BOB_ID, "bob")
OTHER_BOT = user(OTHER_BOT_ID, "otherbot", bot=True)


def _json(data: Any, status: int = 200) -> web.Response:
    """discord.py decodes a body only when the header is exactly ``application/json`` (no charset)."""
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return _json({"message": message, "code": code}, status)


def _thread(thread_id: int, name: str, owner_id: int) -> dict[str, Any]:
    return {
        "id": str(thread_id),
        "type": 11,
        "guild_id": str(GUILD_ID),
        "parent_id": str(CHANNEL_ID),
        "owner_id": str(owner_id),
        "name": name,
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": TIMESTAMP,
            "locked": False,
        },
    }


def _role(role_id: int, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(role_id),
        "name": name,
        "permissions": "0",
        "position": 0,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
        **extra,
    }


_BODY: web.RequestKey[Any] = web.RequestKey("body", object)
"""A request's body as ``_recorded`` read it (JSON, or a multipart message's ``payload_json``)."""


@dataclass
class Upload:
    """A file the bot sent with a message."""

    channel_id: int
    filename: str
    data: bytes


@dataclass
class Call:
    """One REST request as the bridge made it."""

    method: str
    path: str
    body: Any


@dataclass
class Interaction:
    """A slash command sent to the bridge, and how it was answered."""

    id: int
    token: str
    callback: dict[str, Any] | None = None
    followups: list[dict[str, Any]] = field(default_factory=list)
    original_deleted: bool = False
    kind: int = 2
    """2: a slash command; 3: a press of a message's button (a message component)."""
    message_id: int | None = None


class FakeDiscord:
    """The fake. ``message_content_enabled=False`` plays an application whose Message Content
    intent is off in the Developer Portal: the gateway then closes with 4014 when asked for it.
    ``may_create_threads=False`` plays a bot without the Create Public Threads permission, and
    ``refuse_identify = (code, reason)`` a gateway that closes the connection on IDENTIFY."""

    def __init__(self, *, message_content_enabled: bool = True) -> None:
        self.message_content_enabled = message_content_enabled
        self.may_create_threads = True
        self.refuse_identify: tuple[int, str] | None = None
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.identifies: list[dict[str, Any]] = []
        self.resumes = 0
        self.interactions: dict[str, Interaction] = {}
        self.commands: list[dict[str, Any]] = []
        self.threads: dict[int, dict[str, Any]] = {THREAD_ID: _thread(THREAD_ID, "a thread", ALICE_ID)}
        self.api_base_url = ""
        self.gateway_url = ""
        self.cdn_requests: list[str] = []
        self.uploads: list[Upload] = []
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(int(time.time() * 1000 - 1420070400000) << 22)
        self._seq = 0
        self._socket: web.WebSocketResponse | None = None
        self._ready = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{name}", self._cdn)
        api = "/api/v10"
        routes = [
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/gateway/bot", self._gateway_bot),
            ("PUT", "/applications/{app}/commands", self._sync_commands),
            ("POST", "/channels/{channel}/messages", self._create_message),
            ("PATCH", "/channels/{channel}/messages/{message}", self._edit_message),
            ("POST", "/channels/{channel}/typing", self._typing),
            ("POST", "/channels/{channel}/messages/{message}/threads", self._create_thread),
            ("POST", "/interactions/{id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app}/{token}", self._followup),
            ("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._edit_followup),
            ("DELETE", "/webhooks/{app}/{token}/messages/@original", self._delete_original),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, self._recorded(handler))
        app.router.add_route("*", "/{tail:.*}", self._recorded(self._unknown))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.api_base_url = f"http://{host}:{port}{api}"
        self.gateway_url = f"ws://{host}:{port}/gateway"

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests do --------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Until a client has identified (or resumed) and has been sent READY and the guild."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def upload(
        self, data: bytes, filename: str, content_type: str | None, *, channel_id: int = CHANNEL_ID, voice: bool = False
    ) -> dict[str, Any]:
        """An attachment object for ``say``, its bytes kept for the CDN."""
        attachment_id = str(next(self._ids))
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        self._files[path] = data
        base = self.api_base_url.removesuffix("/api/v10")
        attachment: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": f"{base}{path}?ex=68000000&is=67ff0000&hm=abc123&",
            "proxy_url": f"{base}{path}",
        }
        if content_type is not None:
            attachment["content_type"] = content_type
        if voice:
            attachment |= {"duration_secs": 2.5, "waveform": "AAAA", "flags": 0}
        return attachment

    async def say(
        self,
        content: str,
        *,
        author: dict[str, Any] = ALICE,
        channel_id: int = CHANNEL_ID,
        mentions: tuple[dict[str, Any], ...] = (),
        role_mentions: tuple[int, ...] = (),
        reply_to: dict[str, Any] | None = None,
        message_type: int | None = None,
        webhook_id: int | None = None,
        attachments: tuple[dict[str, Any], ...] = (),
        voice_message: bool = False,
    ) -> dict[str, Any]:
        """Someone writes a message; the bridge receives it as MESSAGE_CREATE."""
        message = self._message(channel_id, author, content, reply_to=reply_to, message_type=message_type)
        message["attachments"] = list(attachments)
        if voice_message:
            message["flags"] = VOICE_MESSAGE_FLAG
        message["mentions"] = list(mentions)
        message["mention_roles"] = [str(role) for role in role_mentions]
        message["mention_everyone"] = "@everyone" in content or "@here" in content
        if webhook_id is not None:
            message["webhook_id"] = str(webhook_id)
        await self._dispatch("MESSAGE_CREATE", message)
        return message

    async def slash(
        self, name: str, *, args: str | None = None, author: dict[str, Any] = ALICE, channel_id: int = CHANNEL_ID
    ) -> Interaction:
        """Someone runs a slash command; the bridge receives it as INTERACTION_CREATE."""
        interaction = Interaction(next(self._ids), f"interaction-token-{len(self.interactions)}")
        self.interactions[interaction.token] = interaction
        command = next(command for command in self.commands if command["name"] == name)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1}
        if args is not None:
            data["options"] = [{"name": "args", "type": 3, "value": args}]
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(APP_ID),
            "type": 2,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "channel": self._channel(channel_id),
            "locale": "en-US",
            "app_permissions": "0",
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
        }
        if channel_id == DM_CHANNEL_ID:
            payload |= {"user": author, "context": 1}
        else:
            payload |= {
                "guild_id": str(GUILD_ID),
                "guild_locale": "en-US",
                "context": 0,
                "member": self._member(author),
            }
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    def with_buttons(self, channel_id: int = CHANNEL_ID) -> list[dict[str, Any]]:
        return [m for m in self.bot_posts(channel_id) if m.get("components")]

    async def press(self, message: dict[str, Any], custom_id: str, *, author: dict[str, Any] = ALICE) -> Interaction:
        """Someone presses the button ``custom_id`` under ``message``: an INTERACTION_CREATE of
        type 3, as Discord sends it. Discord only sends the ids of buttons the message has."""
        buttons = [c["custom_id"] for row in message.get("components") or [] for c in row.get("components", [])]
        assert custom_id in buttons, f"no button {custom_id!r}: {buttons}"
        interaction = Interaction(
            next(self._ids), f"interaction-token-{len(self.interactions)}", kind=3, message_id=int(message["id"])
        )
        self.interactions[interaction.token] = interaction
        channel_id = int(message["channel_id"])
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(APP_ID),
            "type": 3,
            "token": interaction.token,
            "version": 1,
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": message,
            "channel_id": str(channel_id),
            "channel": self._channel(channel_id),
            "locale": "en-US",
            "app_permissions": "0",
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
        }
        if channel_id == DM_CHANNEL_ID:
            payload |= {"user": author, "context": 1}
        else:
            payload |= {
                "guild_id": str(GUILD_ID),
                "guild_locale": "en-US",
                "context": 0,
                "member": self._member(author),
            }
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def redeliver(self, message: dict[str, Any]) -> None:
        """Send a MESSAGE_CREATE again, as a gateway replay after a reconnect can."""
        await self._dispatch("MESSAGE_CREATE", message)

    async def reconnect(self) -> None:
        """Ask the client to reconnect (op 7), as Discord does when it moves a session."""
        assert self._socket is not None
        self._ready.clear()
        await self._socket.send_json({"op": 7, "d": None})

    def bot_posts(self, channel_id: int = CHANNEL_ID) -> list[dict[str, Any]]:
        """Every message the bot posted in a channel, oldest first, edits applied."""
        return [
            m for m in self.messages.values() if m["author"]["id"] == str(BOT_ID) and m["channel_id"] == str(channel_id)
        ]

    def bot_messages(self, channel_id: int = CHANNEL_ID) -> list[str]:
        """The current text of every message the bot posted in a channel, oldest first."""
        return [m["content"] for m in self.bot_posts(channel_id)]

    def calls_to(self, method: str, path_part: str) -> list[Call]:
        return [call for call in self.calls if call.method == method and path_part in call.path]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; the bot posted {[m['content'] for m in self.messages.values() if m['author'] == BOT]}"
                )
            await asyncio.sleep(0.01)

    # --- gateway --------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for frame in socket:
            if frame.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            match payload["op"]:
                case 1:
                    await socket.send_json({"op": 11, "d": None})
                case 2:
                    await self._identify(socket, payload["d"])
                case 6:
                    await self._resume(socket)
        return socket

    async def _identify(self, socket: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        self.identifies.append(identify)
        if identify["token"] != TOKEN:
            await socket.close(code=4004, message=b"Authentication failed.")
            return
        if identify.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.message_content_enabled:
            await socket.close(code=4014, message=b"Disallowed intent(s).")
            return
        if self.refuse_identify is not None:
            code, reason = self.refuse_identify
            await socket.close(code=code, message=reason.encode())
            return
        self._socket = socket
        ready = {
            "v": 10,
            "user": BOT,
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": f"session-{len(self.identifies)}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": self._app_flags()},
        }
        if "shard" in identify:
            ready["shard"] = identify["shard"]
        await self._dispatch("READY", ready)
        await self._dispatch("GUILD_CREATE", self._guild())
        self._ready.set()

    async def _resume(self, socket: web.WebSocketResponse) -> None:
        self.resumes += 1
        self._socket = socket
        await self._dispatch("RESUMED", {})
        self._ready.set()

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Events go to the connected gateway session; with none (a REST-only client, as in
        bench/clients.py) there is nobody to tell, as on Discord."""
        if self._socket is None:
            return
        self._seq += 1
        await self._socket.send_json({"op": 0, "t": event, "s": self._seq, "d": data})

    # --- REST -----------------------------------------------------------------------------------

    def _recorded(self, handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def record(request: web.Request) -> web.StreamResponse:
            if request.content_type == "multipart/form-data":
                body = await self._multipart(request)
            else:
                body = await request.json() if request.can_read_body else None
            request[_BODY] = body
            self.calls.append(Call(request.method, request.path, body))
            authorised = request.path.startswith(("/api/v10/webhooks/", "/api/v10/interactions/"))
            if not authorised and request.headers.get("Authorization") != f"Bot {TOKEN}":
                return _error(401, "401: Unauthorized")
            return await handler(request)

        return record

    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_requests.append(request.path)
        data = self._files.get(request.path)
        if data is None or "hm" not in request.query:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _unknown(self, request: web.Request) -> web.Response:
        return _error(404, f"404: Not Found ({request.method} {request.path})")

    async def _me(self, request: web.Request) -> web.Response:
        return _json({**BOT, "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APP_ID),
                "name": "chatbridge",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": ALICE,
                "verify_key": "0" * 64,
                "flags": self._app_flags(),
                "summary": "",
                "rpc_origins": [],
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _sync_commands(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.commands = [
            {"id": str(next(self._ids)), "application_id": str(APP_ID), "version": "1", "type": 1, **command}
            for command in body
        ]
        return _json(self.commands)

    async def _multipart(self, request: web.Request) -> Any:
        """A message with files, as discord.py sends one: ``payload_json`` and ``files[n]``; the
        files are kept in ``uploads``."""
        form = await request.post()
        for name, value in form.items():
            if name.startswith("files[") and isinstance(value, web.FileField):
                self.uploads.append(Upload(int(request.match_info["channel"]), value.filename, value.file.read()))
        return json.loads(str(form["payload_json"]))

    async def _create_message(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        channel_id = int(request.match_info["channel"])
        reference = body.get("message_reference")
        replied = self.messages.get(int(reference["message_id"])) if reference else None
        message = self._message(channel_id, BOT, body.get("content", ""), reply_to=replied)
        if body.get("components"):
            message["components"] = body["components"]
        await self._dispatch("MESSAGE_CREATE", message)
        return _json(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message"]))
        if message is None:
            return _error(404, "Unknown Message", 10008)
        body = await request.json()
        message["content"] = body.get("content", message["content"])
        if "components" in body:  # an empty list takes the buttons away
            message["components"] = body["components"]
        message["edited_timestamp"] = TIMESTAMP
        return _json(message)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _create_thread(self, request: web.Request) -> web.Response:
        """A thread started on a message takes the message's id, as on Discord."""
        if not self.may_create_threads:
            return _error(403, "Missing Permissions", 50013)
        body = await request.json()
        thread = _thread(int(request.match_info["message"]), body["name"], BOT_ID)
        self.threads[int(thread["id"])] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, 201)

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions[request.match_info["token"]]
        interaction.callback = await request.json()
        data = interaction.callback.get("data") or {}
        flags = data.get("flags", 0)
        if interaction.callback["type"] == 7 and interaction.message_id is not None:  # UPDATE_MESSAGE
            updated = self.messages[interaction.message_id]
            updated["content"] = data.get("content", updated["content"])
            if "components" in data:
                updated["components"] = data["components"]
        return _json(
            {
                "interaction": {
                    "id": str(interaction.id),
                    "type": interaction.kind,
                    "response_message_loading": interaction.callback["type"] == 5,
                    "response_message_ephemeral": bool(flags & EPHEMERAL_FLAG),
                },
                "resource": {"type": interaction.callback["type"]},
            }
        )

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self.interactions[request.match_info["token"]]
        body = await request.json()
        message = {
            **self._message(CHANNEL_ID, BOT, body.get("content", ""), store=False),
            "webhook_id": str(APP_ID),
            "flags": body.get("flags", 0),
            "allowed_mentions": body.get("allowed_mentions"),
        }
        interaction.followups.append(message)
        return _json(message)

    async def _edit_followup(self, request: web.Request) -> web.Response:
        interaction = self.interactions[request.match_info["token"]]
        wanted = request.match_info["message"]
        message = next(m for m in interaction.followups if m["id"] == wanted)
        message["content"] = (await request.json()).get("content", message["content"])
        return _json(message)

    async def _delete_original(self, request: web.Request) -> web.Response:
        self.interactions[request.match_info["token"]].original_deleted = True
        return web.Response(status=204)

    # --- the world ------------------------------------------------------------------------------

    def _app_flags(self) -> int:
        return APP_FLAG_MESSAGE_CONTENT_LIMITED if self.message_content_enabled else 0

    def _message(
        self,
        channel_id: int,
        author: dict[str, Any],
        content: str,
        *,
        reply_to: dict[str, Any] | None = None,
        message_type: int | None = None,
        store: bool = True,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(next(self._ids)),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": message_type if message_type is not None else (19 if reply_to else 0),
            "flags": 0,
        }
        if channel_id != DM_CHANNEL_ID:
            message["guild_id"] = str(GUILD_ID)
        if reply_to is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
            }
            message["referenced_message"] = reply_to
        if store:
            self.messages[int(message["id"])] = message
        return message

    def _channel(self, channel_id: int) -> dict[str, Any]:
        if channel_id == DM_CHANNEL_ID:
            return {"id": str(DM_CHANNEL_ID), "type": 1, "recipients": [ALICE], "last_message_id": None}
        if channel_id in self.threads:
            return self.threads[channel_id]
        return {
            "id": str(CHANNEL_ID),
            "type": 0,
            "guild_id": str(GUILD_ID),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
        }

    @staticmethod
    def _member(person: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": person,
            "roles": [],
            "joined_at": TIMESTAMP,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
            "permissions": "0",
        }

    def _guild(self) -> dict[str, Any]:
        return {
            "id": str(GUILD_ID),
            "name": "Test guild",
            "owner_id": str(ALICE_ID),
            "roles": [
                _role(GUILD_ID, "@everyone"),
                _role(BOT_ROLE_ID, "chatbridge", managed=True, tags={"bot_id": str(BOT_ID)}),
            ],
            "channels": [self._channel(CHANNEL_ID)],
            "threads": list(self.threads.values()),
            "members": [self._member(BOT) | {"roles": [str(BOT_ROLE_ID)]}],
            "member_count": 4,
            "emojis": [],
            "stickers": [],
            "features": [],
            "large": False,
            "unavailable": False,
            "joined_at": TIMESTAMP,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
