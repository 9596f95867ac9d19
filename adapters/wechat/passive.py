"""WeChat's five-second rule: one passive reply per message, shared by its three deliveries.

WeChat posts a message and waits 5 seconds for the reply in the HTTP response (the passive reply);
then it gives up on that connection and posts the same message again, three deliveries in all.
A reply of ``success`` (or nothing) tells it to stop retrying. So:

- The first delivery hands the message to the engine and waits, up to ``reply_within_s``, for the
  answer's first part. A retry of a message in progress never goes to the engine again: it finds
  the message's ``Exchange`` and waits for the same answer (the engine's dedupe would drop it
  anyway, but only this process can still give that answer to WeChat).
- A delivery whose window ends without an answer keeps its connection open until WeChat has given
  up on it (``hold_s``) and then answers into the void: answering ``success`` in time would stop
  the retries that give a slow answer its second and third chance.
- The last delivery that ends without an answer closes the passive chance. What comes after goes
  out another way (``async_reply``): the customer-service API, or the user's next message.

Everything here is in one process, and so must the retries be: with several bridge processes
behind one address, a retry that reaches another process is a duplicate there and is answered
``success``; the answer then goes out the other way once no delivery is left to carry it
(``Exchange`` waits ``deliveries * wechat_waits_s`` at most).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PassiveTimings:
    """WeChat's clock, as data so that tests can run it fast."""

    reply_within_s: float = 4.5
    """How long after a delivery arrives its passive reply may still start: WeChat waits 5 seconds,
    and the reply must cross the network before that."""
    wechat_waits_s: float = 5.0
    """When WeChat gives up on a delivery (and sends the next)."""
    deliveries: int = 3
    """The first delivery and WeChat's two retries."""
    hold_margin_s: float = 0.5
    """A delivery without an answer stays open this long past ``wechat_waits_s``, to be sure WeChat
    has stopped listening before anything is said on it."""

    @property
    def hold_s(self) -> float:
        return self.wechat_waits_s + self.hold_margin_s

    @property
    def passive_for_s(self) -> float:
        """After this long from the first delivery, no delivery of it can still be listening."""
        return self.deliveries * self.wechat_waits_s


WECHAT_TIMINGS = PassiveTimings()
"""The clock WeChat documents."""

PassivePart = tuple[str, "asyncio.Future[bool]"]
"""A text for a passive reply, and where the delivery says whether it got it onto the wire."""


class Exchange:
    """One incoming message's passive reply, between the answer (``offer``) and the deliveries
    waiting for it (``take``).

    At most one part ever goes out passively. ``done`` is set when the engine has finished with
    the message, whether or not it said anything.
    """

    def __init__(self, timings: PassiveTimings, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.deadline = clock() + timings.passive_for_s
        self.deliveries = 0
        self.done = asyncio.Event()
        self._open = True
        self._waiting: asyncio.Future[PassivePart | None] | None = None
        self._listener = asyncio.Event()

    @property
    def open(self) -> bool:
        return self._open and self._clock() < self.deadline

    async def offer(self, text: str) -> bool:
        """Give ``text`` to a delivery still in its window, waiting for one (a retry) while any may
        come. True once it is on the wire; False when the passive chance is gone, and the text is
        to go out another way."""
        while self.open:
            waiting = self._waiting
            if waiting is not None and not waiting.done():
                self._waiting, self._open = None, False
                written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                waiting.set_result((text, written))
                return await written
            self._listener.clear()
            try:
                await asyncio.wait_for(self._listener.wait(), self.deadline - self._clock())
            except TimeoutError:
                break
        self.close()
        return False

    async def take(self, until: float) -> PassivePart | None:
        """Wait, up to the monotonic time ``until``, for the passive part. None when there is none
        by then (or never will be: the answer is done, or went out another way)."""
        if not self.open or self.done.is_set():
            return None
        waiting: asyncio.Future[PassivePart | None] = asyncio.get_running_loop().create_future()
        self._waiting = waiting  # a newer delivery takes over from an older one: its connection is fresher
        self._listener.set()
        try:
            await asyncio.wait({waiting}, timeout=max(until - self._clock(), 0.0))
        finally:
            if self._waiting is waiting:
                self._waiting = None
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        return None

    async def wait_done(self, until: float) -> bool:
        """Whether the engine finishes with the message by the monotonic time ``until``."""
        try:
            await asyncio.wait_for(self.done.wait(), max(until - self._clock(), 0.0))
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """No passive reply will carry anything from now on."""
        self._open = False
        self._listener.set()
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def finish(self) -> None:
        """The engine is done with the message: a delivery still waiting has nothing to wait for."""
        self.done.set()
        self.close()


class Outbox:
    """Answers waiting for their user's next message (``async_reply: on_next_message``), oldest
    first. In this process only, bounded in users and parts per user: a restart loses what is
    waiting (the turns themselves are stored)."""

    def __init__(self, max_users: int = 10_000, max_parts: int = 20) -> None:
        self._max_users = max_users
        self._max_parts = max_parts
        self._parts: OrderedDict[str, deque[str]] = OrderedDict()

    def put(self, user: str, text: str) -> None:
        parts = self._parts.setdefault(user, deque(maxlen=self._max_parts))
        parts.append(text)
        self._parts.move_to_end(user)
        while len(self._parts) > self._max_users:
            self._parts.popitem(last=False)

    def waiting(self, user: str) -> int:
        return len(self._parts.get(user, ()))

    def take(self, user: str) -> str | None:
        parts = self._parts.get(user)
        if not parts:
            return None
        text = parts.popleft()
        if not parts:
            del self._parts[user]
        return text
