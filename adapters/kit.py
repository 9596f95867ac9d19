"""What every adapter needs the same way, written once: the contract the shell drives adapters by,
their settings' common shape, updates in flight, a platform's 429, start-up error lines and the
command menu.

A platform folder builds on these and adds only what is its own: translating updates and replies.
``unreachable`` is also how ``chatbridge check`` describes the model server and the store it could
not reach, so that every endpoint's failure reads the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo

from core.channel import PlatformTrouble, Receipt, Reopen, ReplyChannel
from core.commands import CommandSpec
from core.events import IncomingMessage, Refetch

T = TypeVar("T")

CANCELLED_WAIT_S = 5.0
"""How long cancelled updates get to run their clean-up (a placeholder removed, say) before the
adapter closes its platform client under them."""


# --- the contract ---------------------------------------------------------------------------------


SPOKEN_FILE_NAME = "answer.ogg"
"""The file name of a spoken answer sent as a file: the speech server sends OGG with Opus inside
(``bots.audio``)."""


class MessageHandler(Protocol):
    """What an adapter hands its translated messages to (the engine, in a running bridge)."""

    @property
    def commands(self) -> Sequence[CommandSpec]:
        """The commands users can send, for platforms that list them in a menu."""
        ...

    async def handle(self, message: IncomingMessage, channel: ReplyChannel, receipt: Receipt | None = None) -> object:
        """Answer one message through ``channel``; never raises for a problem of that message.
        ``receipt``, from an adapter whose platform waits for an acknowledgement, says when to give it."""
        ...

    def attach(self, platform: str, reopen: Reopen, refetch: Refetch | None = None) -> None:
        """The adapter is connected: answers to its queued messages (from before a restart, or
        received by another process) can go out through channels ``reopen`` makes from their routes,
        and their files be downloaded again by ``refetch`` from their sources."""
        ...


WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Routes(Protocol):
    """The bridge's HTTP server as an adapter sees it: a place to mount its webhook before start."""

    def add_route(self, method: str, path: str, handler: WebHandler) -> None: ...


class Adapter(Protocol):
    name: str

    @property
    def ready(self) -> bool:
        """Connected to the platform and taking updates right now (``/readyz``)."""
        ...

    async def run(self, handler: MessageHandler) -> None:
        """Receive messages and hand each to ``handler`` until ``stop`` is called or input ends, then
        return once the updates in flight have been answered. Cancelled, it cancels them first."""
        ...

    async def stop(self) -> None:
        """Stop receiving new messages; ``run`` returns when those in flight are done."""
        ...

    async def check(self) -> str:
        """Reach the platform once and describe who we are there (for ``chatbridge check``)."""
        ...


class AdapterStartupError(Exception):
    """A platform refused us (bad token, missing permission); one line naming the adapter and the key."""


# --- settings -------------------------------------------------------------------------------------


class AdapterSection(BaseModel):
    """The shape every ``adapters.<platform>`` section shares: off unless enabled, no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="start this platform's adapter with `chatbridge run`")


def required_when_enabled(value: SecretStr, info: ValidationInfo) -> SecretStr:
    """A field validator: an enabled adapter without its credentials would only fail later, and less
    clearly."""
    if info.data.get("enabled") and not value.get_secret_value():
        raise ValueError("required when the adapter is enabled")
    return value


# --- updates in flight ----------------------------------------------------------------------------


class UpdatesInFlight:
    """The one record of the updates an adapter is answering, whether it made their tasks (``spawn``)
    or its platform library did (``track``).

    It holds a strong reference to each task (asyncio keeps only weak ones), lets ``run`` return only
    after the last answer, and lets a cancelled ``run`` cancel what is left rather than abandon it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Answer one update in a task of its own, so no chat waits for another."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task in while the block runs (for libraries that make a task per event)."""
        task = asyncio.current_task()
        assert task is not None, "track() runs inside a task"
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def wait(self) -> None:
        """Until every update ends (their errors were theirs to log). Cancelled, cancel them all and
        give them ``CANCELLED_WAIT_S`` to clean up before passing the cancellation on."""
        try:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=CANCELLED_WAIT_S)
            raise


# --- platform calls -------------------------------------------------------------------------------


async def platform_call(call: Awaitable[T], trouble: Callable[[Exception], PlatformTrouble | None]) -> T:
    """``call``, with the platform's passing failures (a 429, a 5xx, a timeout, a cut connection)
    turned into ``PlatformTrouble`` so that the shared renderer retries them. ``trouble`` reads one
    from a platform error, None for any other (which is the platform's final word)."""
    try:
        return await call
    except PlatformTrouble:
        raise
    except Exception as error:
        passing = trouble(error)
        if passing is None:
            raise
        raise passing from error


@contextlib.contextmanager
def startup_errors(platform: str, describe: Callable[[Exception], str | None]) -> Iterator[None]:
    """Turn what a platform library raises at start-up into one ``AdapterStartupError`` line,
    ``"<platform>: <problem>"``. ``describe`` says the problem, naming the key to fix where one is to
    blame, and must leave secrets out; None passes the error on unchanged."""
    try:
        yield
    except AdapterStartupError:
        raise
    except Exception as error:
        problem = describe(error)
        if problem is None:
            raise
        raise startup_error(platform, problem) from None


def startup_error(platform: str, problem: str) -> AdapterStartupError:
    """The one shape of a start-up error line: ``"<platform>: <problem>"``."""
    return AdapterStartupError(f"{platform}: {problem}")


def setting(platform: str, key: str) -> str:
    """The dotted name of one of an adapter's settings, as start-up errors name it."""
    return f"adapters.{platform}.{key}"


# --- servers that could not be reached ------------------------------------------------------------


def unreachable(key: str, url: str, error: BaseException) -> str:
    """``"<key> <url>: <what happened>"``: the setting to fix, where it points (without a password),
    and the failure in a few words."""
    trouble = connection_trouble(error) or f"{type(error).__name__}: {error}"
    return f"{key} {without_password(url)}: {trouble}"


def connection_trouble(error: BaseException) -> str | None:
    """What went wrong connecting, or None when ``error`` is no connection failure.

    Read from the innermost error of the chain, because libraries wrap the socket's error in their
    own and some rename it on the way (httpx-aiohttp calls every failed connection a
    ``ConnectTimeout``): a refused connection means nothing listens there, a timeout that something
    does not answer, and a user fixes each differently.
    """
    for cause in reversed(_causes(error)):
        trouble = _trouble(cause)
        if trouble is not None:
            return trouble
    return None


def without_password(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@``."""
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not separator or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


_TROUBLE_BY_ERRNO = {
    errno.ECONNREFUSED: "connection refused (nothing listens there)",
    errno.ETIMEDOUT: "timed out (no answer)",
    errno.ECONNRESET: "connection reset by the other end",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ENETUNREACH: "network unreachable",
}


def _trouble(error: BaseException) -> str | None:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({error.verify_message or error.reason})"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error})"
    if isinstance(error, socket.gaierror):
        return f"host name not found ({error.strerror or error})"
    if isinstance(error, ConnectionRefusedError):
        return _TROUBLE_BY_ERRNO[errno.ECONNREFUSED]
    if isinstance(error, TimeoutError):
        return _TROUBLE_BY_ERRNO[errno.ETIMEDOUT]
    if isinstance(error, ConnectionResetError):
        return _TROUBLE_BY_ERRNO[errno.ECONNRESET]
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(error, OSError) and error.errno is not None:
        return _TROUBLE_BY_ERRNO.get(error.errno)
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it was raised from or while handling, outermost first (``from None``
    hides the context from tracebacks, not from here)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


# --- command menus --------------------------------------------------------------------------------


def menu(commands: Sequence[CommandSpec], valid_name: re.Pattern[str]) -> list[CommandSpec]:
    """The commands a platform can list, in order; names it would refuse are left out (they still
    work when typed)."""
    return [command for command in commands if valid_name.fullmatch(command.name)]
