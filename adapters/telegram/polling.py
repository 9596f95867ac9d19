"""Long polling that confirms an update to Telegram only once the bridge has it in its store.

``getUpdates`` confirms every update below the ``offset`` it is called with, and Telegram then
forgets them. python-telegram-bot's ``Updater`` calls it again with the next offset as soon as it
has put the updates in a queue, so a crash before they reach the store loses them. Here the offset
moves past an update only when its receipt says the store took it; an update the store could not
take is fetched again after a pause (those before it come back as well and are duplicates).

The loop retries what Telegram documents as passing: 429 after the time asked, timeouts at once,
network errors and 5xx with a backoff growing to 30 s, and 409 Conflict (another poller of the same
token) likewise, reported to the owner for readiness. 401 ends it: the token is not valid.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import warnings
from collections.abc import Callable, Sequence

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.warnings import PTBDeprecationWarning

from core.channel import Receipt

log = logging.getLogger("chatbridge.telegram")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0

Deliver = Callable[[Update], Receipt]
"""Hands one update to the bridge and returns its receipt."""


class Poller:
    def __init__(
        self,
        bot: Bot,
        *,
        timeout: dt.timedelta,
        allowed_updates: Sequence[str],
        on_conflict: Callable[[], None],
        on_error: Callable[[TelegramError], None],
    ) -> None:
        self._bot = bot
        self._timeout = timeout
        self._allowed = list(allowed_updates)
        self._on_conflict = on_conflict
        self._on_error = on_error
        self._offset: int | None = None

    async def start(self) -> None:
        """Polling and a webhook exclude each other: a webhook left from webhook mode goes first."""
        await self._bot.delete_webhook()

    async def run(self, deliver: Deliver) -> None:
        """Fetch and deliver until cancelled; raises ``InvalidToken`` when the token is refused."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=self._offset, timeout=self._timeout, allowed_updates=self._allowed
                )
            except InvalidToken:
                raise
            except RetryAfter as limited:
                await asyncio.sleep(retry_after_s(limited))
                continue
            except TimedOut:
                continue
            except (Conflict, NetworkError) as error:
                if isinstance(error, Conflict):
                    self._on_conflict()
                else:
                    self._on_error(error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_FIRST_S
            if not updates:
                continue
            if not await self._delivered(deliver, updates):
                await asyncio.sleep(BACKOFF_FIRST_S)

    async def confirm(self) -> None:
        """Tell Telegram what was taken, so that a restart does not fetch it again; best effort."""
        if self._offset is None:
            return
        try:
            await self._bot.get_updates(offset=self._offset, timeout=0, allowed_updates=self._allowed)
        except TelegramError as error:
            log.info("could not confirm the last updates (they will be fetched again and dropped): %s", error)

    async def _delivered(self, deliver: Deliver, updates: Sequence[Update]) -> bool:
        """Deliver every update; move the offset past the longest run the store took, from the
        first. False when one was not taken."""
        receipts = [(update.update_id, deliver(update)) for update in updates]
        for update_id, receipt in receipts:
            if not await receipt.taken():
                log.warning("the store could not take update %s; fetching it again", update_id)
                return False
            self._offset = update_id + 1
        return True


def retry_after_s(error: RetryAfter) -> float:
    """The wait a 429 asks for: PTB 22 returns an int with a deprecation warning, and a timedelta
    once it switches over."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
