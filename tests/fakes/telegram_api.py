"""A local fake of the Telegram Bot API, for driving the real python-telegram-bot in tests.

It serves ``/bot<token>/<method>`` on 127.0.0.1 the way Telegram does: form-encoded bodies whose
non-string values are JSON, ``{"ok": ..., "result": ...}`` answers, 401 for a wrong token, 429 with
``parameters.retry_after``, HTML entity parsing with "can't parse entities", "message is not
modified" and the 4096-character limit counted after parsing. ``getUpdates`` long-polls and is
released when the server stops. Tests put user messages in with ``user_message`` (for polling) or
build them with ``update`` (for posting to a webhook), and read what users see in ``sent``.

Files work as in the Bot API: ``upload`` stores bytes under a ``file_id``, ``getFile`` answers with
a ``file_path``, and ``/file/bot<token>/<file_path>`` serves the bytes (401 for a wrong token);
``downloads`` lists each file path fetched, so a test can assert that a file was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token-abc"
BOT_ID = 999
BOT_USERNAME = "ChatBridgeBot"
MAX_TEXT = 4096

_STRING_FIELDS = {"text", "parse_mode", "url", "secret_token", "action"}
_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
    "span",
}


@dataclass
class Sent:
    """One message the bot posted, as a user sees it now (``text`` is after entity parsing)."""

    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    thread_id: int | None
    reply_to: int | None
    edits: int = 0
    reply_markup: dict[str, Any] | None = None
    """The inline keyboard under the message; an edit without one removes it, as on Telegram."""

    def button_data(self) -> list[str]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button["callback_data"] for row in rows for button in row if "callback_data" in button]


@dataclass
class Failure:
    status: int
    description: str
    retry_after: float | None = None


@dataclass
class FakeTelegram:
    token: str = TOKEN
    base_url: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    rate_limited: list[str] = field(default_factory=list)
    """Methods answered with 429, in order."""
    reject_html: bool = False
    """Answer every HTML text with "can't parse entities", like a markup Telegram does not accept."""
    max_text: int = MAX_TEXT
    """The longest visible text accepted, in UTF-16 code units, as Telegram counts."""

    downloads: list[str] = field(default_factory=list)
    """The ``file_path`` of every file download, in order."""
    voices: list[tuple[int, bytes]] = field(default_factory=list)
    """The chat and the bytes of every voice note the bot sent (sendVoice), in order."""

    def __post_init__(self) -> None:
        self._files: dict[str, tuple[str, bytes]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: defaultdict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._failures: defaultdict[str, deque[Failure]] = defaultdict(deque)
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._endpoint)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)  # bursts of new connections, as the model fake
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/bot"

    async def stop(self) -> None:
        """Release pending long polls first, so shutdown does not wait out their timeout."""
        self._stopping.set()
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests do --------------------------------------------------------------------------

    def upload(self, data: bytes, file_path: str, *, declared_size: int | None = -1) -> dict[str, Any]:
        """Store a file as Telegram would after someone sent it; the fields a message's file object
        carries (``file_id``, ``file_unique_id``, ``file_size``). ``declared_size`` None leaves the
        size out, as Telegram may; a number other than -1 claims that size instead of the real one."""
        number = len(self._files) + 1
        file_id = f"file-{number}"
        self._files[file_id] = (file_path, data)
        fields: dict[str, Any] = {"file_id": file_id, "file_unique_id": f"u{number}"}
        if declared_size is not None:
            fields["file_size"] = len(data) if declared_size == -1 else declared_size
        return fields

    def fail(self, method: str, status: int, description: str, retry_after: float | None = None) -> None:
        """The next call of ``method`` gets this error instead of its answer."""
        self._failures[method].append(Failure(status, description, retry_after))

    def stop_failing(self, method: str) -> None:
        """Forget the failures still queued for ``method``: the platform is back."""
        self._failures[method].clear()

    def update(
        self,
        text: str | None,
        *,
        user: int = 1,
        chat: int | None = None,
        chat_type: str = "private",
        is_bot: bool = False,
        entities: list[dict[str, Any]] | None = None,
        reply_to: dict[str, Any] | None = None,
        thread_id: int | None = None,
        caption: str | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
        media: dict[str, Any] | None = None,
        media_group_id: str | None = None,
        kind: str = "message",
    ) -> dict[str, Any]:
        """An update carrying one user message; ``chat`` defaults to the user's private chat.
        ``media`` adds file fields as they are (``{"photo": [...]}``, ``{"voice": {...}}``)."""
        chat_id = chat if chat is not None else user
        message: dict[str, Any] = {
            "message_id": next(self._message_ids[chat_id]),
            "date": int(time.time()),
            "chat": _chat(chat_id, chat_type, forum=thread_id is not None),
            "from": {"id": user, "is_bot": is_bot, "first_name": f"User{user}", "username": f"user{user}"},
        }
        if text is not None:
            message["text"] = text
            message["entities"] = entities or _command_entity(text)
        if caption is not None:
            message["caption"] = caption
            message["caption_entities"] = caption_entities or []
        message.update(media or {})
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
            message["reply_to_message"] = reply_to or _topic_created(chat_id, thread_id)
        elif reply_to is not None:
            message["reply_to_message"] = reply_to
        return {"update_id": next(self._update_ids), kind: message}

    def press(self, sent: Sent, data: str, *, user: int = 1) -> dict[str, Any]:
        """A user presses the inline button with ``data`` under ``sent``: a ``callback_query``
        update for getUpdates. Telegram only ever delivers the data of a button the message has."""
        assert data in sent.button_data(), f"no button {data!r} under that message: {sent.button_data()}"
        query = {
            "id": str(next(self._update_ids) * 1000),
            "from": {"id": user, "is_bot": False, "first_name": f"User{user}", "username": f"user{user}"},
            "message": self._message(sent),
            "chat_instance": f"ci{sent.chat_id}",
            "data": data,
        }
        return self.queue_update({"update_id": next(self._update_ids), "callback_query": query})

    def with_buttons(self, chat_id: int) -> list[Sent]:
        return [message for message in self.sent if message.chat_id == chat_id and message.reply_markup]

    def user_message(self, text: str | None, **fields: Any) -> dict[str, Any]:
        """Queue an update for getUpdates and return it."""
        return self.queue_update(self.update(text, **fields))

    def queue_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Hand an update built with ``update`` to the next getUpdates."""
        self._updates.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update

    def bot_message(self, sent: Sent) -> dict[str, Any]:
        """A message the bot sent, as it appears in ``reply_to_message``."""
        return {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": _chat(sent.chat_id, "supergroup" if sent.chat_id < 0 else "private"),
            "from": _me(),
            "text": sent.text,
        }

    def forget_calls(self) -> None:
        """Drop the call log (a long benchmark would otherwise keep every request)."""
        self.calls.clear()

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    def texts(self, chat_id: int) -> list[str]:
        return [message.text for message in self.sent if message.chat_id == chat_id]

    async def wait_for(self, condition: Any, timeout: float = 3.0) -> None:
        """Wait until ``condition()`` holds, re-checking whenever the bot calls the API."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(condition)

    # --- the API --------------------------------------------------------------------------------

    async def _endpoint(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        await self._notify()
        try:
            failures = self._failures[method]
            if failures:
                return self._failure(method, failures.popleft())
            handler = getattr(self, f"_{method}", None)
            if handler is None:
                return _error(404, "Not Found: method not found")
            result = await handler(params)
            return result if isinstance(result, web.Response) else web.json_response({"ok": True, "result": result})
        finally:
            await self._notify()

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        self.downloads.append(path)
        await self._notify()
        failures = self._failures["file"]
        if failures:
            return self._failure("file", failures.popleft())
        found = next((data for file_path, data in self._files.values() if file_path == path), None)
        if found is None:
            return _error(404, "Not Found")
        return web.Response(body=found, content_type="application/octet-stream")

    async def _getFile(self, params: dict[str, Any]) -> Any:
        stored = self._files.get(str(params.get("file_id")))
        if stored is None:
            return _error(400, "Bad Request: invalid file_id")
        file_path, data = stored
        if len(data) > 20_000_000:
            return _error(400, "Bad Request: file is too big")
        return {"file_id": params["file_id"], "file_unique_id": "u", "file_size": len(data), "file_path": file_path}

    def _failure(self, method: str, failure: Failure) -> web.Response:
        if failure.status == 429:
            self.rate_limited.append(method)
        return _error(failure.status, failure.description, failure.retry_after)

    async def _getMe(self, params: dict[str, Any]) -> Any:
        return {
            **_me(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _setWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    async def _getUpdates(self, params: dict[str, Any]) -> Any:
        """At most ``limit`` updates (Telegram's default and maximum is 100) from ``offset`` on."""
        offset = int(params.get("offset") or 0)
        limit = min(int(params.get("limit") or 100), 100)
        # Telegram leaves out, for good, the kinds of update a bot did not subscribe to.
        wanted = set(params.get("allowed_updates") or ()) or None
        self._updates = [
            update
            for update in self._updates
            if update["update_id"] >= offset and (wanted is None or wanted & set(update) - {"update_id"})
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(params.get("timeout") or 0)):
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._updates) or self._stopping.is_set())
        return self._updates[:limit]

    async def _sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        parsed = self._parse(params)
        if isinstance(parsed, web.Response):
            return parsed
        reply = params.get("reply_parameters") or {}
        sent = Sent(
            chat_id=chat_id,
            message_id=next(self._message_ids[chat_id]),
            text=parsed,
            parse_mode=params.get("parse_mode"),
            thread_id=params.get("message_thread_id"),
            reply_to=reply.get("message_id"),
            reply_markup=params.get("reply_markup"),
        )
        self.sent.append(sent)
        return self._message(sent)

    async def _sendVoice(self, params: dict[str, Any]) -> Any:
        """Telegram takes the voice note as an uploaded file (multipart), OGG with Opus inside."""
        upload = params.get("voice")
        if not isinstance(upload, web.FileField):
            return _error(400, "Bad Request: there is no voice in the request")
        chat_id = int(params["chat_id"])
        self.voices.append((chat_id, upload.file.read()))
        message_id = next(self._message_ids[chat_id])
        message = {"message_id": message_id, "date": int(time.time()), "chat": _chat(chat_id, "private"), "from": _me()}
        return message | {"voice": {"file_id": f"v{message_id}", "file_unique_id": "u", "duration": 1}}

    async def _editMessageText(self, params: dict[str, Any]) -> Any:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        sent = next((m for m in self.sent if m.chat_id == chat_id and m.message_id == message_id), None)
        if sent is None:
            return _error(400, "Bad Request: message to edit not found")
        parsed = self._parse(params)
        if isinstance(parsed, web.Response):
            return parsed
        if parsed == sent.text and params.get("reply_markup") == sent.reply_markup:
            return _error(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            )
        sent.text, sent.parse_mode, sent.edits = parsed, params.get("parse_mode"), sent.edits + 1
        sent.reply_markup = params.get("reply_markup")
        return self._message(sent)

    async def _editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        sent = next((m for m in self.sent if m.chat_id == chat_id and m.message_id == message_id), None)
        if sent is None:
            return _error(400, "Bad Request: message to edit not found")
        sent.reply_markup = params.get("reply_markup")
        return self._message(sent)

    async def _answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        """The notice the presser sees (``text``), recorded in ``calls``."""
        return True

    def _parse(self, params: dict[str, Any]) -> str | web.Response:
        """The visible text after entity parsing, or the error Telegram would answer."""
        text = str(params.get("text") or "")
        if params.get("parse_mode") == "HTML":
            visible = visible_html(text) if not self.reject_html else None
            if visible is None:
                return _error(400, "Bad Request: can't parse entities: unsupported start tag")
            text = visible
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > self.max_text:
            return _error(400, "Bad Request: message is too long")
        return text

    def _message(self, sent: Sent) -> dict[str, Any]:
        message = {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": _chat(sent.chat_id, "supergroup" if sent.chat_id < 0 else "private"),
            "from": _me(),
            "text": sent.text,
        }
        if sent.thread_id is not None:
            message["message_thread_id"] = sent.thread_id
            message["is_topic_message"] = True
        if sent.reply_markup:
            message["reply_markup"] = sent.reply_markup
        return message

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class _HtmlText(HTMLParser):
    """Telegram's HTML subset: known tags, properly nested; collects the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.open: list[str] = []
        self.ok = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ok &= tag in _TAGS
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.ok &= bool(self.open) and self.open.pop() == tag

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible_html(text: str) -> str | None:
    """What Telegram shows for ``text`` sent as HTML, or None where it would refuse to parse it."""
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts) if parser.ok and not parser.open else None


async def _params(request: web.Request) -> dict[str, Any]:
    """PTB posts form fields: strings as they are, everything else JSON-encoded."""
    if request.content_type == "application/json":
        return dict(await request.json())
    form = await request.post()
    params: dict[str, Any] = {}
    for name, value in form.items():
        if name in _STRING_FIELDS or not isinstance(value, str):
            params[name] = value
            continue
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def _error(status: int, description: str, retry_after: float | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


def _me() -> dict[str, Any]:
    return {"id": BOT_ID, "is_bot": True, "first_name": "ChatBridge", "username": BOT_USERNAME}


def _chat(chat_id: int, chat_type: str, forum: bool = False) -> dict[str, Any]:
    if chat_type == "private":
        return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
    return {"id": chat_id, "type": chat_type, "title": "A group", **({"is_forum": True} if forum else {})}


def _topic_created(chat_id: int, thread_id: int) -> dict[str, Any]:
    """In a forum every topic message replies to the service message that created the topic."""
    return {
        "message_id": thread_id,
        "date": int(time.time()),
        "chat": _chat(chat_id, "supergroup", forum=True),
        "from": {"id": 1, "is_bot": False, "first_name": "User1"},
        "forum_topic_created": {"name": "Topic", "icon_color": 7322096},
        "message_thread_id": thread_id,
        "is_topic_message": True,
    }


def _command_entity(text: str) -> list[dict[str, Any]]:
    """Telegram marks a leading /command (with an optional @username) as a bot_command entity."""
    if not text.startswith("/"):
        return []
    word = text.split()[0]
    return [{"type": "bot_command", "offset": 0, "length": len(word.encode("utf-16-le")) // 2}]


def entity(text: str, part: str, kind: str = "mention", **extra: Any) -> dict[str, Any]:
    """The entity marking the first ``part`` of ``text``, with offsets in UTF-16 code units as Telegram counts."""
    start = text.index(part)
    return {
        "type": kind,
        "offset": len(text[:start].encode("utf-16-le")) // 2,
        "length": len(part.encode("utf-16-le")) // 2,
        **extra,
    }


# --- as a process of its own, for benchmarks ------------------------------------------------------


async def _serve_until_stdin_closes() -> None:
    """Serves the Bot API and, for the benchmark driving it, ``POST /control/burst?chats=N`` (one
    message from each of N new private chats, queued for getUpdates), ``GET /control/all_answered``
    (once every chat of the burst got a message, or 300 s have passed: how many did, and how long
    that took from the queueing) and ``POST /control/ask`` (one message, answered once the reply shows).

    The burst is timed here, where its messages are queued and its answers land, so that a bridge
    and the bare bot it is compared with are timed the same way, without a driver's polling."""
    import sys

    api = FakeTelegram()
    await api.start()
    users = itertools.count(1_000_000)
    burst_state = _BurstState()

    async def burst(request: web.Request) -> web.Response:
        api.sent.clear()
        api.forget_calls()
        burst_state.start(int(request.query["chats"]))
        for n in range(burst_state.chats):
            api._updates.append(api.update(f"question {n}", user=next(users)))
        await api._notify()
        return web.json_response({"queued": burst_state.chats})

    async def ask(request: web.Request) -> web.Response:
        """One message in chat ``chat``; answers once the bot shows ``expect`` there, with the time
        that took as this process measured it."""
        chat, expect = int(request.query["chat"]), request.query["expect"]
        started = time.perf_counter()
        api.queue_update(api.update(request.query["text"], user=chat))
        await api.wait_for(lambda: any(m.chat_id == chat and m.text == expect for m in api.sent), timeout=30)
        elapsed = time.perf_counter() - started
        api.sent.clear()
        api.forget_calls()
        return web.json_response({"elapsed_s": elapsed})

    async def all_answered(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await api.wait_for(lambda: burst_state.all_answered(api.sent), timeout=300)
        api.forget_calls()
        return web.json_response(burst_state.figures(api.sent))

    control = web.Application()
    control.router.add_post("/control/burst", burst)
    control.router.add_get("/control/all_answered", all_answered)
    control.router.add_post("/control/ask", ask)
    control_runner = web.AppRunner(control, access_log=None)
    await control_runner.setup()
    site = web.TCPSite(control_runner, "127.0.0.1", 0)
    await site.start()
    host, port = control_runner.addresses[0][:2]
    print(json.dumps({"base_url": api.base_url, "control": f"http://{host}:{port}/control"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await control_runner.cleanup()
    await api.stop()


class _BurstState:
    """Which chats of the current burst have an answer, and when the last one landed. It is checked
    on every call the bot makes, 10,000 in a burst of 5,000, so each check looks only at what is new."""

    def __init__(self) -> None:
        self.start(0)

    def start(self, chats: int) -> None:
        self.chats = chats
        self.queued_at = time.perf_counter()
        self.answered_at: float | None = None
        self._seen: set[int] = set()
        self._looked_at = 0

    def all_answered(self, sent: list[Sent]) -> bool:
        for message in sent[self._looked_at :]:
            self._seen.add(message.chat_id)
        self._looked_at = len(sent)
        if self.answered_at is None and len(self._seen) >= self.chats:
            self.answered_at = time.perf_counter()
        return self.answered_at is not None

    def figures(self, sent: list[Sent]) -> dict[str, float | int | None]:
        """How many chats have an answer, and the time from the queueing to the last one."""
        self.all_answered(sent)
        elapsed = None if self.answered_at is None else self.answered_at - self.queued_at
        return {"answered": len(self._seen), "elapsed_s": elapsed}


if __name__ == "__main__":
    asyncio.run(_serve_until_stdin_closes())
