"""Several small httpx connection pools used in turn, instead of one large one.

httpcore's pool walks every one of its connections on each request and each release
(``_assign_requests_to_connections``; upstream fix proposed in encode/httpcore#1035, not released),
so with hundreds of concurrent model calls the pool's bookkeeping costs more than the calls
themselves: 1,000 concurrent 1 s calls took over 5 s of wall time in ``bench/``. Spreading the
requests over pools of at most ``POOL_SIZE`` connections keeps that walk short.
"""

from __future__ import annotations

import itertools
import math
import ssl

import certifi
import httpx

POOL_SIZE = 64


class PooledClients:
    """Hands out one of ``ceil(max_connections / POOL_SIZE)`` clients, round robin."""

    def __init__(self, *, timeout_s: float, max_connections: int) -> None:
        count = max(1, math.ceil(max_connections / POOL_SIZE))
        per_pool = math.ceil(max_connections / count)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=min(per_pool, 20))
        # Loading the CA bundle takes tens of milliseconds; one context serves every pool.
        tls = ssl.create_default_context(cafile=certifi.where())
        self._clients = [
            httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits, verify=tls) for _ in range(count)
        ]
        self._turn = itertools.cycle(self._clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
