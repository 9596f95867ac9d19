"""The bridge's one HTTP server (``server.host``/``server.port``), shared by everything that listens.

Platform webhooks (Telegram, Slack events) and operational endpoints mount their routes here before
it starts, so one port and one shutdown path serve them all. aiohttp is already a dependency of the
Discord library, so it costs nothing extra.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("chatbridge.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._app = web.Application()
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None
        """The port actually listened on (differs from the configured one when that is 0)."""

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self._app.router.add_route(method, path, handler)

    @property
    def has_routes(self) -> bool:
        return bool(self._app.router.routes())

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = self._runner.addresses
        self.bound_port = sockets[0][1] if sockets else self._port
        log.info("HTTP server listening on %s:%s", self._host, self.bound_port)

    async def stop(self) -> None:
        """Finish requests being served, then close the listening socket."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
