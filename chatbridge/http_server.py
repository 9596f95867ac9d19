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

SHUTDOWN_TIMEOUT_S = 10.0
"""On stop, requests being served get this long to finish before their connections are closed."""


class ServerStartError(Exception):
    """The server cannot listen (port taken, no permission); the text names ``server.host``/``server.port``."""


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
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = exc.strerror or str(exc)
            where = f"{self._host}:{self._port}"
            raise ServerStartError(
                f"server: cannot listen on {where} ({reason}); set server.host/server.port"
            ) from None
        sockets = self._runner.addresses
        self.bound_port = sockets[0][1] if sockets else self._port
        log.info("HTTP server listening on %s:%s", self._host, self.bound_port)

    async def stop(self) -> None:
        """Stop accepting connections, give requests being served up to ``SHUTDOWN_TIMEOUT_S``
        to finish, then close what is left."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("HTTP server stopped")
