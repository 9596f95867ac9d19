"""Keeping a session's lease while its turn runs."""

from __future__ import annotations

import asyncio
import logging

from core.store import Store, StoreUnavailable

log = logging.getLogger("chatbridge.engine")


class LeaseKept:
    """Renews the lease every third of its length while the turn runs, so that only a holder that
    died lets it lapse, however long the model takes.

    Most turns end before the first renewal is due, so the renewing task is only started then, by a
    timer: a task per turn cost 35-55 us more than a timer in a burst of short turns (``bench/``).
    """

    __slots__ = ("_store", "_key", "_fence", "_lease_s", "_first_renewal", "_renewing")

    def __init__(self, store: Store, key: str, fence: int, lease_s: float) -> None:
        self._store = store
        self._key = key
        self._fence = fence
        self._lease_s = lease_s
        self._first_renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._first_renewal = asyncio.get_running_loop().call_later(self._lease_s / 3, self._start_renewing)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._first_renewal is not None:
            self._first_renewal.cancel()
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.wait({self._renewing})

    def _start_renewing(self) -> None:
        self._renewing = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            try:
                if not await self._store.renew(self._key, self._fence, self._lease_s):
                    log.error("lost the lease of session %s while answering", self._key)
                    return
            except StoreUnavailable as exc:
                log.warning("could not renew the lease of %s: %s", self._key, exc)
            await asyncio.sleep(self._lease_s / 3)
