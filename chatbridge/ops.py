"""Operational endpoints on the bridge's HTTP server: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 while the process serves HTTP at all (for restarts: Docker's HEALTHCHECK,
  a Kubernetes liveness probe).
- ``/readyz``: 200 when the store answers a ping within ``PING_TIMEOUT_S`` and every adapter is
  running and ready; 503 otherwise, and from the moment a shutdown begins. The JSON body says
  which part is not ready, e.g. ``{"ready": false, "store": "unreachable", "adapters": {"telegram": "ok"}}``.
- ``/metrics``: Prometheus text format (see ``chatbridge.metrics``).

An adapter reports readiness through its ``ready`` property (see ``adapters.kit.Adapter``), which
counts only while its task runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.kit import Adapter
from chatbridge.http_server import HttpServer
from chatbridge.metrics import BridgeMetrics
from core.store import Store

log = logging.getLogger("chatbridge.ops")

PING_TIMEOUT_S = 2.0


class Operations:
    def __init__(self, *, store: Store, metrics: BridgeMetrics, adapters: list[Adapter]) -> None:
        self._store = store
        self._metrics = metrics
        self._adapters = adapters
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False
        self._last_problems: dict[str, str] | None = None
        self._ping_error = ""

    def mount(self, server: HttpServer) -> None:
        server.add_route("GET", "/healthz", self._healthz)
        server.add_route("GET", "/readyz", self._readyz)
        server.add_route("GET", "/metrics", self._metrics_page)

    def running(self, tasks: Mapping[asyncio.Task[Any], Adapter]) -> None:
        """The adapters' tasks have started; an adapter whose task has ended is not ready."""
        self._tasks = {adapter.name: task for task, adapter in tasks.items()}

    def stopping(self) -> None:
        """A shutdown began: report not ready, so load balancers stop sending webhooks here."""
        self._stopping = True

    async def readiness(self) -> dict[str, Any]:
        store = await self._store_state()
        adapters = {adapter.name: self._adapter_state(adapter) for adapter in self._adapters}
        problems = {f"adapter {name}": state for name, state in adapters.items() if state != "ok"}
        if store != "ok":
            problems["store"] = store
        if self._stopping:
            problems["bridge"] = "shutting down"
        self._log_change(problems)
        body: dict[str, Any] = {"ready": not problems, "store": store, "adapters": adapters}
        if self._stopping:
            body["shutting_down"] = True
        return body

    async def _store_state(self) -> str:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._store.ping()
        except TimeoutError:
            self._ping_error = f"no answer within {PING_TIMEOUT_S:g} s"
            return "no answer"
        except Exception as exc:  # noqa: BLE001 - any failure of the ping means not ready
            self._ping_error = f"{type(exc).__name__}: {exc}"
            return "unreachable"
        return "ok"

    def _adapter_state(self, adapter: Adapter) -> str:
        task = self._tasks.get(adapter.name)
        if task is None:
            return "starting"
        if task.done():
            return "stopped"
        return "ok" if adapter.ready else "not connected"

    def _log_change(self, problems: dict[str, str]) -> None:
        """Log when readiness changes, not on every probe."""
        if problems == self._last_problems:
            return
        if problems:
            reason = f" ({self._ping_error})" if "store" in problems else ""
            log.warning("not ready: %s%s", ", ".join(f"{part}: {state}" for part, state in problems.items()), reason)
        elif self._last_problems:
            log.info("ready again")
        self._last_problems = problems

    # --- handlers --------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        body = await self.readiness()
        return web.json_response(body, status=200 if body["ready"] else 503, dumps=json.dumps)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        await self._metrics.count_sessions(self._store)
        body, content_type = self._metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response
