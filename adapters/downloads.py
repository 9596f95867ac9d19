"""Downloading a platform's files within a byte limit, for the fetches adapters put on attachments.

Written once for every adapter because the rules are the same everywhere:

- The limit holds while streaming: a declared ``Content-Length`` over it fails at once, and the
  body is read in pieces that never take the total past the limit plus one byte (the one byte that
  proves it was over), so a file that lies about its size costs no more memory than one that fits.
- Credentials go only where they belong. Redirects are followed by hand, and headers (a bearer
  token) are sent on a hop only when ``send_headers_to`` accepts its URL: Slack's files move to
  other hosts, which must never see the bot token.
- Failures become ``AttachmentTooLarge``, ``AttachmentFetchFailed`` or ``AttachmentFetchTimeout``
  whose messages say what happened (a status, an error type) and never a URL, since Telegram's file
  URLs carry the bot token in their path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
from yarl import URL

from core.events import AttachmentFetchFailed, AttachmentFetchTimeout, AttachmentTooLarge

DOWNLOAD_TIMEOUT_S = 60.0
"""The whole download, redirects included: 20 MB at a slow 3 Mbit/s."""
MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Downloader:
    """One connection pool for an adapter's downloads, opened on first use; ``close`` it with the adapter."""

    def __init__(self, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def get(
        self,
        url: str,
        *,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        send_headers_to: Callable[[URL], bool] = lambda url: True,
        refuse_html: bool = False,
    ) -> bytes:
        """The body at ``url``, at most ``max_bytes`` of it. ``refuse_html``: an HTML page is a
        failure (Slack answers a file request it does not authorise with its sign-in page)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._get(URL(url, encoded=True), max_bytes, headers or {}, send_headers_to, refuse_html)
        except TimeoutError:
            raise AttachmentFetchTimeout(f"no complete download within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as error:
            raise AttachmentFetchFailed(f"download failed: {type(error).__name__}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _get(
        self,
        url: URL,
        max_bytes: int,
        headers: Mapping[str, str],
        send_headers_to: Callable[[URL], bool],
        refuse_html: bool,
    ) -> bytes:
        session = self._open()
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers) if send_headers_to(url) else {}
            async with session.get(url, headers=sent, allow_redirects=False) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    url = url.join(URL(response.headers["Location"], encoded=True))
                    continue
                if response.status != 200:
                    raise AttachmentFetchFailed(f"the file host answered HTTP {response.status}")
                if refuse_html and response.content_type == "text/html":
                    raise AttachmentFetchFailed("the file host answered with a web page instead of the file")
                return await _bounded_body(response, max_bytes)
        raise AttachmentFetchFailed(f"more than {MAX_REDIRECTS} redirects")

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session


async def _bounded_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise AttachmentTooLarge(max_bytes, declared)
    body = bytearray()
    while len(body) <= max_bytes:
        piece = await response.content.read(min(CHUNK_BYTES, max_bytes + 1 - len(body)))
        if not piece:
            return bytes(body)
        body += piece
    raise AttachmentTooLarge(max_bytes)
