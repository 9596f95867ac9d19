"""A tool's confirmation on Slack: slack-bolt and the real Socket Mode client against the fake Slack,
which delivers button presses as ``block_actions`` the way Slack does (an ``interactive`` envelope
over the socket, a signed form post to the Interactivity URL in HTTP mode); the real engine with the
MCP test server's tools over streamable HTTP, and the fake model asking for them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from adapters.slack.adapter import INTERACTIVE_PATH, SlackAdapter
from bots.openai_client import OpenAIChatModel
from chatbridge.http_server import HttpServer
from chatbridge.runtime import stop_adapters
from core import texts
from core.stores.memory import MemoryStore
from core.tool_loop import DECLINED
from tests.adapters.slack.test_adapter import callback, mention, next_ts, signed, slack_settings, until
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer
from tests.fakes.slack_api import BOT_USER, FakeSlack
from tests.kit.engine import model_settings
from tests.kit.tools import tool_engine, tools_for


@dataclass
class Bridge:
    slack: FakeSlack
    mcp: HttpMcpServer
    server: HttpServer

    async def post_press(self, payload: dict[str, Any]) -> int:
        body = urlencode({"payload": json.dumps(payload)})
        headers = signed(body) | {"Content-Type": "application/x-www-form-urlencoded"}
        url = f"http://127.0.0.1:{self.server.bound_port}{INTERACTIVE_PATH}"
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
            return response.status

    async def post_event(self, event: dict[str, Any]) -> int:
        body = json.dumps(callback(event))
        url = f"http://127.0.0.1:{self.server.bound_port}/slack/events"
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=signed(body)) as response:
            return response.status


@asynccontextmanager
async def bridge(fake_model: FakeModel, mode: str = "socket", **tools: Any) -> AsyncIterator[Bridge]:
    fake = FakeSlack()
    await fake.start()
    store = MemoryStore()
    await store.open()
    model = OpenAIChatModel(model_settings(fake_model.base_url, stream=False))
    async with HttpMcpServer() as mcp, tools_for(mcp.url, **tools) as toolbox:
        engine = tool_engine(store, model, toolbox, session={"scope": "thread"})
        server = HttpServer("127.0.0.1", 0)
        adapter = SlackAdapter(slack_settings(fake, mode), server)
        if server.has_routes:
            await server.start()
        running = asyncio.create_task(adapter.run(engine))
        try:
            await until(lambda: adapter.ready or running.done())
            if mode == "socket":
                await fake.wait_for_socket()
            yield Bridge(fake, mcp, server)
        finally:
            await stop_adapters({running: adapter}, engine, 5)
            await server.stop()
            await model.aclose()
            await store.close()
            await fake.stop()


async def test_over_socket_mode_only_the_askers_press_counts(fake_model: FakeModel) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "buy milk"})]), Reply("Noted: buy milk."))
    async with bridge(fake_model, timeout_s=10) as b:
        ts = next_ts()
        await b.slack.send_envelope(callback(mention(f"<@{BOT_USER}> note: buy milk", ts, user="U1")))
        await until(lambda: bool(b.slack.with_buttons()))
        [asked] = b.slack.with_buttons()
        assert asked.thread_ts == ts and "kb__add_note" in asked.text and "slack:U1" in asked.text
        yes, _ = asked.action_ids()

        envelope = await b.slack.press(asked, yes, user="U2")
        await asyncio.wait_for(envelope.acked.wait(), 3)
        await until(lambda: b.slack.ephemeral_to == [("U2", texts.TOOL_CONFIRM_NOT_YOURS)])
        assert b.mcp.notes.texts == [] and asked.action_ids(), "another user's press changed nothing"

        await b.slack.press(asked, yes, user="U1")
        await until(lambda: "Noted: buy milk." in b.slack.in_thread("C1", ts))
        assert b.mcp.notes.texts == ["buy milk"]
        assert asked.text.endswith("→ Allowed; running it.") and asked.action_ids() == []


async def test_over_http_a_no_is_posted_to_the_interactivity_url_and_nothing_runs(fake_model: FakeModel) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("Not written."))
    async with bridge(fake_model, "http", timeout_s=10) as b:
        ts = next_ts()
        assert await b.post_event(mention(f"<@{BOT_USER}> note x", ts, user="U1")) == 200
        await until(lambda: bool(b.slack.with_buttons()))
        [asked] = b.slack.with_buttons()
        _, no = asked.action_ids()

        payload = b.slack.press_payload(asked, no, user="U1")
        unsigned = urlencode({"payload": json.dumps(payload)})
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{b.server.bound_port}{INTERACTIVE_PATH}",
                data=unsigned,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ) as response,
        ):
            assert response.status == 401, "a press without Slack's signature is refused"
        assert await b.post_press(payload) == 200
        await until(lambda: "Not written." in b.slack.in_thread("C1", ts))

        assert b.mcp.notes.texts == []
        assert asked.text.endswith("→ Declined; not run.") and asked.action_ids() == []
        assert fake_model.tool_messages()[1][-1]["content"] == DECLINED


async def test_no_answer_in_time_is_no(fake_model: FakeModel) -> None:
    fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": "x"})]), Reply("Timed out."))
    async with bridge(fake_model, timeout_s=0.5) as b:
        ts = next_ts()
        await b.slack.send_envelope(callback(mention(f"<@{BOT_USER}> note x", ts, user="U1")))
        await until(lambda: "Timed out." in b.slack.in_thread("C1", ts))
        [asked] = [m for m in b.slack.messages if "kb__add_note" in m.text]
        assert asked.text.endswith("→ No answer in time; not run.") and asked.action_ids() == []
        assert b.mcp.notes.texts == []
