"""The built-in fetch_url tool against a local web server, with name resolution injected.

127.0.0.1 is loopback, so the happy path either allows private addresses or lets the test's stand-in
for a public site (a name that resolves to 127.0.0.1) through a check that treats that one address as
public; every other address still meets the real check, which is what the refusals exercise.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bots.fetch_url import FetchUrl, IPAddress, refusal
from bots.tool_settings import FetchUrlSettings

ARTICLE = """<html><head><title>Tides</title><script>var tracking = "SCRIPT-TEXT";</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a> | NAV-TEXT</nav>
<article><h1>How tides work</h1>
<p>The Moon's gravity pulls the oceans towards it, which raises a bulge of water on the near side of the Earth.</p>
<p>A second bulge forms on the far side, so most coasts see two high tides a day, about twelve hours apart.</p>
<p>Spring tides, the largest, come when the Sun and the Moon line up, at new and full moon.</p>
</article><footer>FOOTER-TEXT Copyright</footer></body></html>"""


class Site:
    """The local web server, and what it was asked."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_get("/article", self._article)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/big", self._big)
        app.router.add_get("/picture", self._picture)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/missing", self._missing)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.hosts.append(request.headers.get("Host", ""))

    async def _article(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text=ARTICLE, content_type="text/html")

    async def _redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        raise web.HTTPFound(request.query["to"])

    async def _big(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="0123456789" * 1000, content_type="text/plain")

    async def _picture(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG....", content_type="image/png")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def _missing(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="no")


@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    server = Site()
    await server.start()
    yield server
    await server.stop()


class Dns:
    """Names to addresses, each answer used once in turn (a rebinding name answers differently)."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self._names = names
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        answers = self._names.get(host)
        if not answers:
            raise OSError(-2, "Name or service not known")
        return [answers.pop(0) if len(answers) > 1 else answers[0]]


STAND_IN = ipaddress.ip_address("127.0.0.1")


def public_stand_in(address: IPAddress) -> str | None:
    """The real check, except that the test's site stands in for a public one."""
    return None if address == STAND_IN else refusal(address)


def tool(**settings: Any) -> FetchUrl:
    return FetchUrl(FetchUrlSettings(enabled=True, **settings), timeout_s=2.0)


async def test_a_page_becomes_its_main_text(site: Site) -> None:
    result = await tool(allow_private_addresses=True).call(
        "fetch_url", {"url": f"http://127.0.0.1:{site.port}/article"}
    )

    assert not result.is_error
    assert result.text.startswith(f"http://127.0.0.1:{site.port}/article\n\n")
    assert "How tides work" in result.text and "two high tides a day" in result.text
    assert "SCRIPT-TEXT" not in result.text and "NAV-TEXT" not in result.text


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{port}/article", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::1]:{port}/article", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/article", "is a loopback address"),
        ("http://10.1.2.3/", "10.1.2.3 is a private address"),
        ("http://169.254.10.1/", "169.254.10.1 is a link-local address"),
        ("http://0.0.0.0:{port}/", "0.0.0.0 is the unspecified address"),
        ("http://100.64.0.1/", "100.64.0.1 is not a public address"),
        ("http://metadata.test/", "metadata.test (169.254.169.254) is a cloud metadata address"),
        ("http://intranet.test/", "intranet.test (192.168.1.20) is a private address"),
        ("file:///etc/passwd", "is not an http:// or https:// URL"),
        ("http://unknown.test/", "unknown.test cannot be resolved"),
    ],
)
async def test_private_addresses_are_refused_before_connecting(site: Site, url: str, why: str) -> None:
    dns = Dns({"metadata.test": ["169.254.169.254"], "intranet.test": ["192.168.1.20"]})
    fetch = FetchUrl(FetchUrlSettings(enabled=True), timeout_s=2.0, resolver=dns)

    result = await fetch.call("fetch_url", {"url": url.format(port=site.port)})

    assert result.is_error and result.text.startswith("refused: ") and why in result.text
    assert site.hosts == []


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://127.0.0.2:{port}/article", "127.0.0.2 is a loopback address"),
        ("http://[::ffff:127.0.0.2]:{port}/article", "::ffff:7f00:2 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://intranet.test/", "intranet.test (10.0.0.7) is a private address"),
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(site: Site, target: str, why: str) -> None:
    dns = Dns({"public.test": ["127.0.0.1"], "intranet.test": ["10.0.0.7"]})
    fetch = FetchUrl(FetchUrlSettings(enabled=True), timeout_s=2.0, resolver=dns, check=public_stand_in)
    to = target.format(port=site.port)

    result = await fetch.call("fetch_url", {"url": f"http://public.test:{site.port}/redirect?to={to}"})

    assert result.is_error and result.text.startswith("refused: ") and why in result.text
    assert site.hosts == [f"public.test:{site.port}"]


async def test_redirects_are_followed_and_each_hop_resolved_once(site: Site) -> None:
    """The second answer for public.test is private (rebinding): it is never asked for, since the
    connection goes to the address that was checked, with the name only in the Host header."""
    dns = Dns({"public.test": ["127.0.0.1", "10.9.9.9"], "other.test": ["127.0.0.1"]})
    fetch = FetchUrl(FetchUrlSettings(enabled=True), timeout_s=2.0, resolver=dns, check=public_stand_in)
    start = f"http://public.test:{site.port}/redirect?to=http://other.test:{site.port}/article"

    result = await fetch.call("fetch_url", {"url": start})

    assert not result.is_error and "How tides work" in result.text
    assert result.text.startswith(f"http://other.test:{site.port}/article")
    assert dns.asked == ["public.test", "other.test"]
    assert site.hosts == [f"public.test:{site.port}", f"other.test:{site.port}"]


async def test_a_long_page_is_cut_at_max_bytes_and_says_so(site: Site) -> None:
    result = await tool(allow_private_addresses=True, max_bytes=25).call(
        "fetch_url", {"url": f"http://127.0.0.1:{site.port}/big"}
    )

    assert result.text == (
        f"http://127.0.0.1:{site.port}/big\n\n0123456789012345678901234\n\n"
        "[cut: only the first 25 bytes of the page were read]"
    )


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/picture", "is image/png, not a page or text"),
        ("/slow", "did not answer within 0.5 s"),
        ("/missing", "answered HTTP 404"),
    ],
)
async def test_what_is_not_a_page_comes_back_as_an_error(site: Site, path: str, error: str) -> None:
    fetch = FetchUrl(FetchUrlSettings(enabled=True, allow_private_addresses=True), timeout_s=0.5)

    result = await fetch.call("fetch_url", {"url": f"http://127.0.0.1:{site.port}{path}"})

    assert result.is_error and error in result.text


async def test_the_tool_is_read_only_and_offered_only_when_enabled() -> None:
    assert [spec.name for spec in tool().specs()] == ["fetch_url"]
    assert tool().specs()[0].read_only
    disabled = FetchUrl(FetchUrlSettings(), timeout_s=1.0)
    assert disabled.specs() == []
    with pytest.raises(KeyError):
        await disabled.call("fetch_url", {"url": "http://example.com/"})
    assert (await tool().call("fetch_url", {})).is_error


def certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the server's context, and a client's that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.mark.parametrize("certified", ["public.test", "someone-else.test"])
async def test_https_is_verified_against_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path, certified: str
) -> None:
    """The connection goes to 127.0.0.1, yet TLS sends the name and checks the certificate for it."""
    server_tls, client_tls = certificate(tmp_path, certified)
    site = Site()
    await site.start(ssl_context=server_tls)
    try:
        dns = Dns({"public.test": ["127.0.0.1"]})
        fetch = FetchUrl(
            FetchUrlSettings(enabled=True), timeout_s=2.0, resolver=dns, check=public_stand_in, verify=client_tls
        )
        result = await fetch.call("fetch_url", {"url": f"https://public.test:{site.port}/article"})
    finally:
        await site.stop()

    if certified == "public.test":
        assert not result.is_error and "How tides work" in result.text
        assert site.hosts == [f"public.test:{site.port}"]
    else:
        assert result.is_error and "CERTIFICATE_VERIFY_FAILED" in result.text
        assert site.hosts == []
