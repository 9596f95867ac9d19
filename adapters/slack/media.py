"""Slack files as the engine's attachments, downloaded from ``url_private`` with the bot token.

Slack serves a file only to a request carrying a token with the ``files:read`` scope; without it
the answer is its sign-in page (HTML, status 200), which is refused as a failed download. A file URL
may redirect to another host (a CDN with a signed URL of its own): the token is sent only to Slack's
own hosts (``slack.com`` and its subdomains) and to the host of ``adapters.slack.api_base_url`` when
that is set (a proxy, or the tests' fake), never across a redirect anywhere else.

Voice clips recorded in Slack are audio files (``subtype: slack_audio``, webm or mp4). Files shared
from Slack Connect workspaces can arrive with only an id (``file_access: check_file_info``); those
would need ``files.info`` and are left out.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from yarl import URL

from adapters.downloads import Downloader
from core.events import Attachment, AttachmentTooLarge, Fetch, attachment_kind

SLACK_DOMAIN = "slack.com"


class SlackFiles:
    def __init__(self, downloader: Downloader, token: str, api_url: str) -> None:
        self._downloader = downloader
        self._headers = {"Authorization": f"Bearer {token}"}
        api = URL(api_url)
        self._api_origin = (api.scheme, api.host, api.port)

    def attachments(self, event: Mapping[str, Any]) -> tuple[Attachment, ...]:
        files = event.get("files")
        if not isinstance(files, list):
            return ()
        return tuple(attachment for file in files if (attachment := self._attachment(file)) is not None)

    def is_slack(self, url: URL) -> bool:
        """Whether ``url`` is a host the bot token may be sent to."""
        host = (url.host or "").lower()
        if url.scheme == "https" and (host == SLACK_DOMAIN or host.endswith(f".{SLACK_DOMAIN}")):
            return True
        return (url.scheme, url.host, url.port) == self._api_origin

    def fetch(self, url: str, size: int | None = None) -> Fetch:
        """The fetch of one file, from its ``url_private`` alone (the attachment's ``source``)."""

        async def fetch(max_bytes: int) -> bytes:
            if size is not None and size > max_bytes:
                raise AttachmentTooLarge(max_bytes, size)
            return await self._downloader.get(
                url, max_bytes=max_bytes, headers=self._headers, send_headers_to=self.is_slack, refuse_html=True
            )

        return fetch

    def _attachment(self, file: object) -> Attachment | None:
        if not isinstance(file, dict):
            return None
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str) or not url:
            return None  # only an id (Slack Connect), or a file deleted meanwhile
        name = str(file.get("name") or file.get("title") or "file")
        mime = str(file.get("mimetype") or mimetypes.guess_type(name)[0] or "application/octet-stream")
        size = file.get("size") if isinstance(file.get("size"), int) else None
        voice = file.get("subtype") == "slack_audio"
        return Attachment(attachment_kind(mime), mime, name, size, url, self.fetch(url, size), voice=voice)
