"""Slack files through slack-bolt's Socket Mode and the fake: shared files become attachments
fetched from url_private with the bot token, which never follows the redirect to the files host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from adapters.downloads import Downloader
from adapters.slack.adapter import SlackAdapter
from adapters.slack.media import SlackFiles
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core.events import AttachmentFetchFailed, AttachmentKind, AttachmentTooLarge, IncomingMessage
from core.stores.memory import MemoryStore
from tests.adapters.slack.test_adapter import _started, callback, message, next_ts, slack_settings
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack, FileRequest
from tests.kit.engine import make_engine
from tests.kit.media import OGG_VOICE, photo
from tests.kit.recorder import Recorder


class Running:
    def __init__(self, slack: FakeSlack, adapter: SlackAdapter, recorder: Recorder) -> None:
        self.slack, self.adapter, self.recorder = slack, adapter, recorder

    async def share(self, text: str, *files: dict[str, object], channel_type: str = "im") -> IncomingMessage:
        event = message(text, next_ts(), channel="D1", channel_type=channel_type, subtype="file_share")
        count = len(self.recorder.messages) + 1
        envelope = await self.slack.send_envelope(callback(event | {"files": list(files)}))
        await asyncio.wait_for(envelope.acked.wait(), 3)
        return (await self.recorder.wait_for(count))[-1]


@pytest_asyncio.fixture
async def running(store: MemoryStore, model: OpenAIChatModel) -> AsyncIterator[Running]:
    slack = FakeSlack()
    await slack.start()
    recorder = Recorder(make_engine(store, model))
    adapter = SlackAdapter(slack_settings(slack), HttpServer("127.0.0.1", 0))
    task = asyncio.create_task(adapter.run(recorder))
    await _started(adapter, task)
    await slack.wait_for_socket()
    yield Running(slack, adapter, recorder)
    await stop_adapters({task: adapter}, recorder.engine, 2)
    await slack.stop()


async def test_a_shared_image_is_fetched_with_the_token_and_the_redirect_gets_none(running: Running) -> None:
    data = photo()
    shared = await running.share("what is this?", running.slack.upload(data, "shot.jpg", "image/jpeg"))
    [image] = shared.attachments
    assert (image.kind, image.name, image.size) == (AttachmentKind.IMAGE, "shot.jpg", len(data))
    assert running.slack.file_requests == []
    assert await image.fetch(10_000_000) == data
    assert running.slack.file_requests == [
        FileRequest("api", "/files-pri/T1-F1/shot.jpg", f"Bearer {BOT_TOKEN}"),
        FileRequest("files", "/files-tmb/F1/shot.jpg", None),
    ]


async def test_a_voice_clip_is_audio_marked_as_voice(running: Running) -> None:
    clip = running.slack.upload(OGG_VOICE, "audio_message.webm", "audio/webm", subtype="slack_audio")
    shared = await running.share("", clip)
    assert [(a.kind, a.voice) for a in shared.attachments] == [(AttachmentKind.AUDIO, True)]


async def test_the_token_is_never_sent_to_a_host_that_is_not_slacks(running: Running) -> None:
    elsewhere = running.slack.upload(b"data", "x.txt", "text/plain")
    elsewhere["url_private_download"] = f"{running.slack.files_url}files-pri/T1-F1/x.txt"
    shared = await running.share("", elsewhere)
    with pytest.raises(AttachmentFetchFailed):
        await shared.attachments[0].fetch(1000)
    # The engine downloads the shared file too (a text file it reads), through the same fetch.
    assert running.slack.file_requests and all(r.authorization is None for r in running.slack.file_requests)


async def test_the_sign_in_page_slack_answers_without_files_read_is_a_failure(running: Running) -> None:
    shared = await running.share("", running.slack.upload(b"data", "x.txt", "text/plain"))
    downloader = Downloader()
    unscoped = SlackFiles(downloader, "xoxb-without-files-read", running.slack.api_url)
    try:
        with pytest.raises(AttachmentFetchFailed, match="web page") as failed:
            await unscoped.fetch(shared.attachments[0].source)(1000)
    finally:
        await downloader.close()
    assert "xoxb" not in str(failed.value)


async def test_a_file_over_the_limit_is_not_downloaded(running: Running) -> None:
    shared = await running.share("", running.slack.upload(photo(), "big.jpg", "image/jpeg"))
    with pytest.raises(AttachmentTooLarge):
        await shared.attachments[0].fetch(100)
    assert running.slack.file_requests == []


async def test_a_token_without_files_read_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    slack = FakeSlack()
    slack.scopes = "app_mentions:read,channels:history,chat:write,im:history"
    await slack.start()
    try:
        assert await SlackAdapter(slack_settings(slack), HttpServer("127.0.0.1", 0)).check()
    finally:
        await slack.stop()
    assert "lacks files:read" in caplog.text
