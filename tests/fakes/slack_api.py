"""A local fake of Slack's wire API, for tests: the Web API methods the bridge calls, slash-command
``response_url``s and a Socket Mode WebSocket, on 127.0.0.1.

The production code talks to it through the real ``AsyncWebClient`` (``base_url=fake.api_url``) and
the real Socket Mode client, so the code path is the one that runs against Slack. ``messages`` holds
what a user would see: every message the bot posted, with its current text after all edits.

Files are served as Slack serves them: ``upload`` returns the file object of a ``file_share`` event,
whose ``url_private`` on the API's host answers a request with the right bot token by redirecting
to a second host (another port, standing in for Slack's file CDN), and any other request with the
HTML sign-in page; ``file_requests`` records every request on either host with the Authorization
header it carried, so a test can assert where the token went and that a file was not fetched.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER = "UBOT"
BOT_ID = "BBOT"
ALL_SCOPES = "app_mentions:read,channels:history,chat:write,commands,files:read,files:write,groups:history,im:history"
BOT_TOKEN = "xoxb-test-token"


@dataclass
class SharedFile:
    """A file the bot shared with files_upload_v2 (get an upload URL, post the bytes, complete)."""

    channel: str
    thread_ts: str | None
    filename: str
    data: bytes


@dataclass
class FileRequest:
    host: str
    """"api" (where url_private points) or "files" (where it redirects)."""
    path: str
    authorization: str | None


@dataclass
class Posted:
    """One message the bot posted, as it currently reads."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    edits: int = 0
    blocks: list[dict[str, Any]] | None = None

    def action_ids(self) -> list[str]:
        """The buttons under the message, by ``action_id``."""
        return [
            element["action_id"]
            for block in self.blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements", [])
        ]


@dataclass
class SentEnvelope:
    envelope_id: str
    acked: asyncio.Event = field(default_factory=asyncio.Event)


class FakeSlack:
    """The fake. Tests script failures with ``auth_error``, ``scopes`` and ``rate_limit``."""

    def __init__(self) -> None:
        self.api_url = ""
        self.base_url = ""
        self.auth_error: str | None = None
        self.app_token_error: str | None = None
        self.scopes = ALL_SCOPES
        self.messages: list[Posted] = []
        self.ephemeral: list[str] = []
        self.ephemeral_to: list[tuple[str, str]] = []
        """``chat.postEphemeral`` notes: (user, text)."""
        self.calls: list[str] = []
        self.tokens: set[str] = set()
        self.files_url = ""
        self.file_requests: list[FileRequest] = []
        self.shared_files: list[SharedFile] = []
        self._uploading: dict[str, tuple[str, bytes | None]] = {}
        self._files: dict[str, bytes] = {}
        self._rate_limits: dict[str, list[float]] = defaultdict(list)
        self._ts = itertools.count(1)
        self._socket: web.WebSocketResponse | None = None
        self._socket_open = asyncio.Event()
        self._envelopes: dict[str, SentEnvelope] = {}
        self._runner: web.AppRunner | None = None

    # --- scripting and inspection --------------------------------------------------------------

    def rate_limit(self, method: str, retry_after_s: float, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get 429 with ``Retry-After``."""
        self._rate_limits[method] += [retry_after_s] * times

    def in_thread(self, channel: str, thread_ts: str | None) -> list[str]:
        """The bot's messages in a thread (``None``: top level of the channel), in order."""
        return [m.text for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def count(self, method: str) -> int:
        return self.calls.count(method)

    def upload(self, data: bytes, name: str, mimetype: str, *, subtype: str | None = None) -> dict[str, Any]:
        """A file someone shared, as it appears in the event's ``files``."""
        file_id = f"F{len(self._files) + 1}"
        self._files[file_id] = data
        url = f"{self.base_url}files-pri/T1-{file_id}/{name}"
        file: dict[str, Any] = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rpartition(".")[2],
            "size": len(data),
            "url_private": url,
            "url_private_download": f"{url}?download=1",
        }
        return file | ({"subtype": subtype} if subtype else {})

    def with_buttons(self) -> list[Posted]:
        return [m for m in self.messages if m.action_ids()]

    def press_payload(self, posted: Posted, action_id: str, user: str) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` presses a button under ``posted``;
        Slack only sends the ids of buttons the message has."""
        assert action_id in posted.action_ids(), f"no button {action_id!r}: {posted.action_ids()}"
        message: dict[str, Any] = {"type": "message", "user": BOT_USER, "ts": posted.ts, "text": posted.text}
        message |= {"blocks": posted.blocks} | ({"thread_ts": posted.thread_ts} if posted.thread_ts else {})
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": "T1"},
            "api_app_id": "A1",
            "token": "legacy",
            "container": {"type": "message", "message_ts": posted.ts, "channel_id": posted.channel},
            "trigger_id": uuid.uuid4().hex,
            "team": {"id": "T1", "domain": "test"},
            "channel": {"id": posted.channel, "name": "general"},
            "message": message,
            "response_url": f"{self.base_url}respond/{uuid.uuid4().hex}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "b1",
                    "value": action_id,
                    "text": {"type": "plain_text", "text": "button"},
                    "action_ts": "1700000000.000001",
                }
            ],
        }

    async def press(self, posted: Posted, action_id: str, user: str) -> SentEnvelope:
        """A press over Socket Mode (an ``interactive`` envelope)."""
        return await self.send_envelope(self.press_payload(posted, action_id, user), kind="interactive")

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/respond/{hook}", self._respond)
        app.router.add_get("/socket", self._socket_handler)
        app.router.add_get("/files-pri/{team_file}/{name}", self._private_file)
        app.router.add_get("/files-tmb/{file}/{name}", self._file_content)
        app.router.add_post("/upload/{file}", self._upload)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        for _ in range(2):  # the API's host and the files host: one app on two ports
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        (host, port), (files_host, files_port) = (address[:2] for address in self._runner.addresses)
        self.base_url = f"http://{host}:{port}/"
        self.api_url = f"{self.base_url}api/"
        self.files_url = f"http://{files_host}:{files_port}/"

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Socket Mode ---------------------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._socket_open.wait(), timeout)

    async def drop_socket(self) -> None:
        """Close the connection from Slack's side, as Slack does every few hours."""
        assert self._socket is not None, "no Socket Mode connection"
        self._socket_open.clear()
        await self._socket.close()

    async def send_envelope(
        self, payload: dict[str, Any], kind: str = "events_api", retry_attempt: int = 0, retry_reason: str = ""
    ) -> SentEnvelope:
        """Deliver one envelope the way Slack does; ``acked`` is set when the bridge acknowledges it."""
        assert self._socket is not None, "no Socket Mode connection"
        envelope = SentEnvelope(uuid.uuid4().hex)
        self._envelopes[envelope.envelope_id] = envelope
        message = {
            "envelope_id": envelope.envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            message |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        await self._socket.send_str(json.dumps(message))
        return envelope

    async def _socket_handler(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}))
        self._socket_open.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                envelope = self._envelopes.get(json.loads(message.data).get("envelope_id", ""))
                if envelope is not None:
                    envelope.acked.set()
        return socket

    # --- Web API -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        self.tokens.add(request.headers.get("Authorization", ""))
        args = await _arguments(request)
        if self._rate_limits[method]:
            retry_after = self._rate_limits[method].pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        return await handler(args)

    async def _auth_test(self, args: dict[str, Any]) -> web.Response:
        if self.auth_error:
            return web.json_response({"ok": False, "error": self.auth_error})
        body = {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test Team",
            "user": "chatbridge",
            "team_id": "T1",
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }
        return web.json_response(body, headers={"x-oauth-scopes": self.scopes})

    async def _apps_connections_open(self, args: dict[str, Any]) -> web.Response:
        if self.app_token_error:
            return web.json_response({"ok": False, "error": self.app_token_error})
        return web.json_response({"ok": True, "url": f"ws://{self.base_url.removeprefix('http://')}socket"})

    async def _chat_postMessage(self, args: dict[str, Any]) -> web.Response:
        ts = f"1700000000.{next(self._ts):06d}"
        blocks = _json_field(args.get("blocks"))
        self.messages.append(Posted(args["channel"], ts, args.get("thread_ts") or None, args["text"], blocks=blocks))
        return web.json_response({"ok": True, "channel": args["channel"], "ts": ts, "message": {"text": args["text"]}})

    async def _chat_update(self, args: dict[str, Any]) -> web.Response:
        posted = self._find(args["channel"], args["ts"])
        if posted is None:
            return web.json_response({"ok": False, "error": "message_not_found"})
        posted.text = args["text"]
        posted.edits += 1
        if "blocks" in args:  # without blocks an update keeps the message's own
            posted.blocks = _json_field(args["blocks"])
        return web.json_response({"ok": True, "channel": args["channel"], "ts": args["ts"], "text": args["text"]})

    async def _chat_delete(self, args: dict[str, Any]) -> web.Response:
        posted = self._find(args["channel"], args["ts"])
        if posted is None:
            return web.json_response({"ok": False, "error": "message_not_found"})
        self.messages.remove(posted)
        return web.json_response({"ok": True, "channel": args["channel"], "ts": args["ts"]})

    async def _files_getUploadURLExternal(self, args: dict[str, Any]) -> web.Response:
        if "files:write" not in self.scopes.split(","):
            return web.json_response({"ok": False, "error": "missing_scope", "needed": "files:write"})
        file_id = f"FU{len(self._uploading) + 1}"
        self._uploading[file_id] = (str(args["filename"]), None)
        upload_url = f"{self.files_url}upload/{file_id}"
        return web.json_response({"ok": True, "upload_url": upload_url, "file_id": file_id})

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file"]
        if file_id not in self._uploading:
            return web.Response(status=404, text="no such upload")
        self._uploading[file_id] = (self._uploading[file_id][0], await request.read())
        return web.Response(text="OK - 1")

    async def _files_completeUploadExternal(self, args: dict[str, Any]) -> web.Response:
        files = json.loads(args["files"])
        for file in files:
            filename, data = self._uploading.pop(file["id"])
            assert data is not None, "completed before the bytes were uploaded"
            self.shared_files.append(SharedFile(args["channel_id"], args.get("thread_ts") or None, filename, data))
        return web.json_response({"ok": True, "files": [{"id": file["id"]} for file in files]})

    async def _private_file(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        self.file_requests.append(FileRequest("api", request.path, authorization))
        file_id = request.match_info["team_file"].partition("-")[2]
        if authorization != f"Bearer {BOT_TOKEN}" or file_id not in self._files:
            return web.Response(
                text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>", content_type="text/html"
            )
        raise web.HTTPFound(f"{self.files_url}files-tmb/{file_id}/{request.match_info['name']}?sig=s1")

    async def _file_content(self, request: web.Request) -> web.Response:
        self.file_requests.append(FileRequest("files", request.path, request.headers.get("Authorization")))
        data = self._files.get(request.match_info["file"])
        if data is None or request.query.get("sig") != "s1":
            return web.Response(status=403, text="expired")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _chat_postEphemeral(self, args: dict[str, Any]) -> web.Response:
        self.ephemeral_to.append((args["user"], args["text"]))
        return web.json_response({"ok": True, "message_ts": f"1700000000.{next(self._ts):06d}"})

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body.get("response_type") == "ephemeral"
        self.ephemeral.append(body["text"])
        return web.Response(text="ok")

    def _find(self, channel: str, ts: str) -> Posted | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)


def _json_field(value: Any) -> Any:
    """A structured argument: a list in a JSON body, its JSON text in form fields."""
    return json.loads(value) if isinstance(value, str) else value


async def _arguments(request: web.Request) -> dict[str, Any]:
    """slack_sdk sends some methods as JSON and others as form fields."""
    if request.content_type == "application/json":
        return dict(await request.json())
    return {**request.query, **(await request.post())}
