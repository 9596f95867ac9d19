"""python-telegram-bot's HTTP requests straight on aiohttp.

PTB's stock request class sends every Bot API call through an ``httpx.AsyncClient``, whose pool
(httpcore) walks all its connections on each request and each release: with a few hundred chats
answered at once that bookkeeping cost more CPU than the calls (issue 15's measurement: 200 chats
at once, 7.1 s and 6.4 CPU s on the stock client). An httpx client on aiohttp's pool fixed the walk
but kept httpx's own request and response objects, which were still about half of the CPU of a
burst (bench section 9). So this class is a ``BaseRequest`` on an ``aiohttp.ClientSession``, mapping
failures the way PTB's own class does: a timeout (connecting, or waiting for the answer) is
``TimedOut``; a refused, reset or cut connection is ``NetworkError``, never a timeout, since the
retry and the user's text depend on it.

It also reports a 401 to its owner: the Bot API answers 401 only when the token is not (or no
longer) valid.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput, UploadFileDict  # PTB's own types, exported nowhere else
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

UNAUTHORIZED = 401
DEFAULT_TIMEOUT_S = 5.0
CONNECTIONS = 256


class AiohttpRequest(BaseRequest):
    def __init__(
        self,
        *,
        read_timeout: float = DEFAULT_TIMEOUT_S,
        connect_timeout: float = DEFAULT_TIMEOUT_S,
        media_write_timeout: float = 20.0,
        connections: int = CONNECTIONS,
        on_unauthorized: Callable[[], None] | None = None,
    ) -> None:
        """``on_unauthorized`` is told about every 401."""
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._media_write_timeout = media_write_timeout
        self._connections = connections
        self._on_unauthorized = on_unauthorized
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.USER_AGENT})

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        if files and isinstance(write_timeout, DefaultValue):
            read = max(read or 0.0, self._media_write_timeout)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        # JSON (the Bot API takes it for every call but uploads) costs aiohttp a fraction of
        # encoding a form: about 20 us less per call (``--only clients``).
        form = _multipart(request_data, files) if request_data and files else None
        fields = request_data.parameters if request_data and not files else None
        try:
            async with self._session.request(method, url, data=form, json=fields, timeout=timeout) as response:
                status, body = response.status, await response.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp.{type(error).__name__}: {error}") from error
        if status == UNAUTHORIZED and self._on_unauthorized is not None:
            self._on_unauthorized()
        return status, body


def _multipart(request_data: RequestData, files: UploadFileDict) -> aiohttp.FormData:
    """The form fields as the Bot API takes them beside files."""
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, part in files.items():
        if isinstance(part, tuple):
            filename, content, *content_type = part
            form.add_field(name, content, filename=filename, content_type=content_type[0] if content_type else None)
        else:
            form.add_field(name, part)
    return form
