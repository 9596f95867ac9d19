"""Stream mode: the WebSocket the bridge opens to DingTalk's gateway, so no public URL is needed.

dingtalk-stream's own ``start()`` cannot run inside the bridge: it fetches its ticket with blocking
``requests`` (stalling every chat while it waits), takes its endpoint from an environment variable
read at import, never returns, and sleeps ten seconds after any drop. So the connection is kept
here, on the same ``websockets`` library the SDK uses, and every frame goes through the SDK's
``route_message``: it parses the frame, hands robot messages to the registered callback handler
and sends the acknowledgement in the protocol's format (``AckMessage``). System frames (``ping``,
``disconnect``) are answered here, because the SDK logs a warning for every ping.

A robot message is acknowledged only once the engine has it in the store (``Receipt``). When the
store could not take it, no acknowledgement is sent, and the gateway delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from dingtalk_stream import (
    AckMessage,
    CallbackHandler,
    CallbackMessage,
    ChatbotMessage,
    Credential,
    DingTalkStreamClient,
    SystemHandler,
    SystemMessage,
)
from websockets import ConnectionClosed, WebSocketException
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from adapters.dingtalk.api import DingTalkApi, DingTalkApiError

log = logging.getLogger("chatbridge.dingtalk.stream")

RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0
OPEN_TIMEOUT_S = 10.0

OnMessage = Callable[[ChatbotMessage], Awaitable[bool]]
"""Takes one robot message; True once it may be acknowledged, False when it must come again."""


class _RobotMessages(CallbackHandler):
    """The SDK's callback handler for the robot topic, acknowledging only what the bridge took."""

    def __init__(self, on_message: OnMessage) -> None:
        super().__init__()
        self.logger = logging.getLogger("chatbridge.dingtalk.sdk")
        self._on_message = on_message

    async def process(self, message: CallbackMessage) -> tuple[int, str]:
        return AckMessage.STATUS_OK, "OK"

    async def raw_process(self, callback_message: CallbackMessage) -> AckMessage | None:
        if not await self._on_message(ChatbotMessage.from_dict(callback_message.data)):
            return None
        ack: AckMessage = await super().raw_process(callback_message)
        return ack


class StreamConnection:
    """One app's stream: connected by ``open``, kept connected by ``run`` until ``close``."""

    def __init__(self, api: DingTalkApi, client_id: str, client_secret: str, on_message: OnMessage) -> None:
        self._api = api
        self._client = DingTalkStreamClient(
            Credential(client_id, client_secret), logger=logging.getLogger("chatbridge.dingtalk.sdk")
        )
        self._client.register_callback_handler(ChatbotMessage.TOPIC, _RobotMessages(on_message))
        self._client.pre_start()
        self._system = SystemHandler()
        self._socket: ClientConnection | None = None
        self._frames: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self._socket is not None and self._socket.state is State.OPEN

    async def open(self) -> ClientConnection:
        """Fetch a ticket and connect; the ticket call's errors (bad credentials) are the caller's."""
        ticket = await self._api.stream_ticket()
        socket = await connect(
            f"{ticket.endpoint}?ticket={quote_plus(ticket.ticket)}", open_timeout=OPEN_TIMEOUT_S, max_size=None
        )
        self._socket = self._client.websocket = socket
        self.connections += 1
        log.info("stream connected")
        return socket

    async def run(self) -> None:
        """Receive until ``close``, reconnecting on its own: at once after a drop, then backing off."""
        wait = 0.0
        while not self._closing:
            try:
                socket = self._socket
                if socket is None:
                    socket = await self.open()
                    wait = 0.0
                await self._receive(socket)
            except (DingTalkApiError, aiohttp.ClientError, OSError, TimeoutError, WebSocketException) as error:
                if self._closing:
                    break
                log.warning("stream connection failed (%s); reconnecting in %.0fs", _reason(error), wait)
            self._socket = None
            if self._closing:
                break
            await asyncio.sleep(wait)
            wait = min(max(wait * 2, RECONNECT_FIRST_S), RECONNECT_MAX_S)

    async def close(self) -> None:
        """Stop receiving; frames still waiting for their receipt are given up (not acknowledged,
        so the gateway delivers them again to whichever process is connected)."""
        self._closing = True
        if self._socket is not None:
            await self._socket.close()
        for task in self._frames:
            task.cancel()
        if self._frames:
            await asyncio.wait(set(self._frames))

    async def _receive(self, socket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in socket:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("stream frame is not JSON; ignored")
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") == SystemMessage.TYPE:
                    await self._system_frame(socket, frame)
                else:
                    task = asyncio.create_task(self._route(frame))
                    self._frames.add(task)
                    task.add_done_callback(self._frames.discard)

    async def _route(self, frame: dict[str, Any]) -> None:
        """One frame through the SDK, in a task of its own: its acknowledgement waits for the store."""
        try:
            await self._client.route_message(frame)
        except ConnectionClosed:
            log.info("the connection closed before a message was acknowledged; the gateway delivers it again")

    async def _system_frame(self, socket: ClientConnection, frame: dict[str, Any]) -> None:
        """``ping`` is answered with its own data; ``disconnect`` means the gateway is about to close
        this connection, so a new one is opened now rather than after the cut."""
        message = SystemMessage.from_dict(frame)
        if message.headers.topic == SystemMessage.TOPIC_DISCONNECT:
            log.info("the gateway asked for a new connection")
            await socket.close()
            return
        ack = await self._system.raw_process(message)
        await socket.send(json.dumps(ack.to_dict()))


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, DingTalkApiError) else type(error).__name__
