"""The one bounded download every adapter's fetch uses, against a local file host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from adapters.downloads import Downloader
from core.events import AttachmentFetchFailed, AttachmentFetchTimeout, AttachmentTooLarge

TOKEN = "xoxb-secret-token"


@dataclass
class FileHost:
    """Two origins (two ports) of one server, as a platform and the host its files move to."""

    main: str = ""
    other: str = ""
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization) of every request."""
    streamed: int = 0


@pytest_asyncio.fixture
async def host() -> AsyncIterator[FileHost]:
    state = FileHost()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.seen.append((request.path, request.headers.get("Authorization")))
        match request.path:
            case "/file":
                return web.Response(body=b"0123456789", content_type="image/png")
            case "/redirect":
                raise web.HTTPFound(f"{state.other}/file")
            case "/loop":
                raise web.HTTPFound("/loop")
            case "/html":
                return web.Response(text="<html>sign in</html>", content_type="text/html")
            case "/slow":
                await asyncio.sleep(5)
            case "/endless":
                response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
                await response.prepare(request)
                for _ in range(10_000):
                    await response.write(b"x" * 1000)
                    state.streamed += 1000
                return response
        return web.Response(status=500, text=f"error for {request.path}")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sites = [web.TCPSite(runner, "127.0.0.1", 0), web.TCPSite(runner, "127.0.0.1", 0)]
    for site in sites:
        await site.start()
    (_, main_port), (_, other_port) = (address[:2] for address in runner.addresses)
    state.main, state.other = f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{other_port}"
    yield state
    await runner.cleanup()


@pytest_asyncio.fixture
async def downloader() -> AsyncIterator[Downloader]:
    loader = Downloader(timeout_s=1.0)
    yield loader
    await loader.close()


async def test_a_file_within_the_limit_arrives_whole(host: FileHost, downloader: Downloader) -> None:
    assert await downloader.get(f"{host.main}/file", max_bytes=10) == b"0123456789"


async def test_a_declared_size_over_the_limit_fails_before_reading(host: FileHost, downloader: Downloader) -> None:
    with pytest.raises(AttachmentTooLarge) as refused:
        await downloader.get(f"{host.main}/file", max_bytes=9)
    assert (refused.value.size, refused.value.limit) == (10, 9)


async def test_a_body_without_a_size_stops_one_byte_past_the_limit(host: FileHost, downloader: Downloader) -> None:
    with pytest.raises(AttachmentTooLarge):
        await downloader.get(f"{host.main}/endless", max_bytes=50_000)
    await asyncio.sleep(0.1)
    assert host.streamed < 10_000_000  # the connection was dropped, not read to its end


async def test_the_token_goes_only_to_hosts_it_is_meant_for(host: FileHost, downloader: Downloader) -> None:
    def ours(url: object) -> bool:
        return str(url).startswith(host.main)

    data = await downloader.get(
        f"{host.main}/redirect", max_bytes=100, headers={"Authorization": f"Bearer {TOKEN}"}, send_headers_to=ours
    )
    assert data == b"0123456789"
    assert host.seen == [("/redirect", f"Bearer {TOKEN}"), ("/file", None)]


@pytest.mark.parametrize(
    ("path", "error", "says"),
    [
        ("/missing", AttachmentFetchFailed, "HTTP 500"),
        ("/html", AttachmentFetchFailed, "web page"),
        ("/loop", AttachmentFetchFailed, "redirects"),
        ("/slow", AttachmentFetchTimeout, "within 1 s"),
    ],
)
async def test_failures_are_said_without_the_url(
    host: FileHost, downloader: Downloader, path: str, error: type[Exception], says: str
) -> None:
    url = f"{host.main}/bot{TOKEN}{path}" if path == "/missing" else f"{host.main}{path}"
    with pytest.raises(error) as failed:
        await downloader.get(url, max_bytes=100, refuse_html=True)
    assert says in str(failed.value)
    assert TOKEN not in str(failed.value) and "127.0.0.1" not in str(failed.value)


async def test_a_host_that_is_not_there_fails_without_its_address(downloader: Downloader) -> None:
    with pytest.raises(AttachmentFetchFailed) as failed:
        await downloader.get(f"http://127.0.0.1:1/bot{TOKEN}/x", max_bytes=100)
    assert TOKEN not in str(failed.value)
