"""The built-in ``fetch_url`` tool: a web page as text, for the model (read-only, so never confirmed).

A chat user steers what the model fetches, so the bridge must not become a way into its own
network: an address that is loopback, private, link-local (cloud metadata at 169.254.169.254 among
them), or otherwise not public is refused, unless ``allow_private_addresses``. The check is made on
the addresses the name resolves to, and again on every redirect, which is followed here, not by
httpx. The connection then goes to exactly the address that was checked: the request is sent to the
IP itself, with the name in the ``Host`` header and (for https) in the TLS server name, against
which the certificate is verified; so a name that resolves to a public address for the check and to
a private one a moment later (DNS rebinding) gains nothing. No proxy from the environment is used,
since a proxy would resolve the name again itself; no connection is kept for another fetch.

Pages become text with trafilatura, which keeps a page's main content (article, tables, links) and
drops navigation, scripts and boilerplate; a page it finds no main content in is read whole by its
plain html-to-text fallback. Size and time are bounded: at most ``max_bytes`` of a body are read (the
model is told when a page was cut), and the whole fetch, redirects included, by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from bots.model import ToolSpec
from bots.tool_settings import FetchUrlSettings
from bots.tools import ToolResult

NAME = "fetch_url"
MAX_REDIRECTS = 5
USER_AGENT = "chatbridge-fetch_url/0.1 (+https://github.com/chatbridge)"
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/ld+json")
HTML_TYPES = ("text/html", "application/xhtml+xml")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""A host name and port to the addresses it resolves to; injectable for tests."""


class Refused(Exception):
    """A fetch that is not made; the message says why, for the model."""


async def system_resolver(host: str, port: int) -> Sequence[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not fetched from, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address (it reaches this machine)"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "not a public address"
    return None


SPEC = ToolSpec(
    name=NAME,
    description="Fetch a web page (http or https) and return its main text, as Markdown. "
    "Use it to read a page the user gives, or one found otherwise.",
    parameters={
        "type": "object",
        "properties": {"url": {"type": "string", "description": "the page's full http:// or https:// URL"}},
        "required": ["url"],
    },
    read_only=True,
)


class FetchUrl:
    """The ``fetch_url`` tool as a ``ToolSource``."""

    def __init__(
        self,
        settings: FetchUrlSettings,
        *,
        timeout_s: float,
        resolver: Resolver = system_resolver,
        check: Callable[[IPAddress], str | None] = refusal,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``resolver``, ``check`` and ``verify`` (the certificates trusted) are for tests: a
        stand-in for the internet on 127.0.0.1."""
        self._settings = settings
        self._verify = verify
        self._timeout_s = timeout_s
        self._resolve = resolver
        self._check = check

    def specs(self) -> Sequence[ToolSpec]:
        return [SPEC] if self._settings.enabled else []

    def spec(self, name: str) -> ToolSpec | None:
        return SPEC if name == NAME and self._settings.enabled else None

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        if name != NAME or not self._settings.enabled:
            raise KeyError(name)
        url = arguments.get("url")
        if not isinstance(url, str) or not url.strip():
            return ToolResult("error: fetch_url needs a url (a string)", is_error=True)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._fetch(url.strip())
        except Refused as exc:
            return ToolResult(f"refused: {exc}", is_error=True)
        except TimeoutError:
            return ToolResult(f"error: {url} did not answer within {self._timeout_s:g} s", is_error=True)
        except httpx.HTTPError as exc:
            return ToolResult(f"error: could not fetch {url}: {type(exc).__name__}: {exc}", is_error=True)

    async def _fetch(self, url: str) -> ToolResult:
        try:
            current = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise Refused(f"{url} is not a URL ({exc})") from None
        # A fresh client each call: no pooled connection is reused for a name it was not checked for.
        async with httpx.AsyncClient(
            trust_env=False,
            verify=self._verify,
            follow_redirects=False,
            timeout=self._timeout_s,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": USER_AGENT, "Accept": "text/html, text/*;q=0.9, */*;q=0.1"},
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                request = client.build_request("GET", await self._pinned(current))
                request.headers["Host"] = current.netloc.decode("ascii")
                if current.scheme == "https":
                    request.extensions["sni_hostname"] = current.raw_host.decode("ascii")
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location") if response.is_redirect else None
                    if location is None:
                        return await self._read(current, response)
                finally:
                    await response.aclose()
                current = current.join(location)
        raise Refused(f"{url} redirects more than {MAX_REDIRECTS} times")

    async def _pinned(self, url: httpx.URL) -> httpx.URL:
        """``url`` with its host replaced by the one checked address it is to be fetched from."""
        if url.scheme not in ("http", "https"):
            raise Refused(f"{url} is not an http:// or https:// URL")
        host = url.raw_host.decode("ascii")
        if not host:
            raise Refused(f"{url} names no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            try:
                resolved = await self._resolve(host, port)
            except OSError as exc:
                raise Refused(f"{host} cannot be resolved ({exc.strerror or exc})") from None
            addresses = [ipaddress.ip_address(address.split("%")[0]) for address in resolved]
        if not addresses:
            raise Refused(f"{host} resolves to no address")
        if not self._settings.allow_private_addresses:
            for address in addresses:
                why = self._check(address)
                if why is not None:
                    shown = host if str(address) == host.strip("[]") else f"{host} ({address})"
                    raise Refused(f"{shown} is {why}; fetch_url reaches public addresses only")
        return url.copy_with(host=str(addresses[0]))

    async def _read(self, url: httpx.URL, response: httpx.Response) -> ToolResult:
        if response.status_code >= 400:
            return ToolResult(f"error: {url} answered HTTP {response.status_code}", is_error=True)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and not kind.startswith(TEXT_TYPES) and kind not in HTML_TYPES:
            return ToolResult(f"error: {url} is {kind}, not a page or text", is_error=True)
        body = bytearray()
        cut = False
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._settings.max_bytes:
                del body[self._settings.max_bytes :]
                cut = True
                break
        text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
        if kind in HTML_TYPES or (not kind and "<html" in text[:1000].lower()):
            text = await asyncio.to_thread(page_text, text, str(url))
        note = f"\n\n[cut: only the first {self._settings.max_bytes} bytes of the page were read]" if cut else ""
        return ToolResult(f"{url}\n\n{text.strip()}{note}")


def page_text(html: str, url: str) -> str:
    """The main content of a page as Markdown; the whole page's text when none is found."""
    import trafilatura  # a second or so to import: only when a page is fetched

    extracted = trafilatura.extract(
        html, url=url, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )
    return extracted if extracted else trafilatura.html2txt(html)
