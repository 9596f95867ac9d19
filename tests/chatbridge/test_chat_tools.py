"""Tools through ``chatbridge chat`` on pipes, as configured by environment: a real process, the MCP
test server over stdio started by the bridge, the built-in fetch_url, the fake model asking for them.

(The terminal's y/n confirmation is tested on a pseudo-terminal in tests/adapters/console.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.tool_loop import NOT_ASKED
from tests.chatbridge.test_cli import _env, _run
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, ToolCalls
from tests.fakes.mcp_servers import STDIO_SCRIPT


def _tools_env(fake_model: FakeModel, **extra: str) -> dict[str, str]:
    return _env(
        fake_model,
        CHATBRIDGE_MODEL__TOOLS="true",
        CHATBRIDGE_TOOLS__ENABLED="true",
        CHATBRIDGE_TOOLS__TIMEOUT_S="1",
        CHATBRIDGE_TOOLS__MAX_ROUNDS="2",
        CHATBRIDGE_TOOLS__ALLOW_STDIO="true",
        CHATBRIDGE_TOOLS__FETCH_URL__ENABLED="true",
        CHATBRIDGE_MCP_SERVERS__FILES__COMMAND=sys.executable,
        CHATBRIDGE_MCP_SERVERS__FILES__ARGS=f'["{STDIO_SCRIPT}"]',
        **extra,
    )


def _result_of(fake_model: FakeModel, request: int) -> str:
    """The last tool result the ``request``-th request sent (that of the round just before it)."""
    results = [m for m in fake_model.requests[request]["messages"] if m["role"] == "tool"]
    return str(results[-1]["content"])


async def test_the_console_uses_tools_declines_writing_ones_and_keeps_results_across_restarts(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake_model.script(
        ToolCalls([FakeCall("files__lookup", {"query": "otter"})]),
        Reply("Otters are mustelids."),
        ToolCalls([FakeCall("files__add_note", {"text": "x"})]),
        Reply("I could not write it."),
        ToolCalls([FakeCall("files__slow", {"seconds": 30})]),
        Reply("Too slow."),
        ToolCalls([FakeCall("fetch_url", {"url": "http://169.254.169.254/latest/meta-data/"})]),
        Reply("Refused."),
        ToolCalls([FakeCall("files__lookup", {"query": "1"})]),
        ToolCalls([FakeCall("files__lookup", {"query": "2"})]),
        Reply("Enough."),
    )
    questions = "otter?\nnote x\nslow\nmetadata\nloop\n"
    code, out, err = await _run(["chat"], tmp_path, _tools_env(fake_model), questions)

    assert code == 0, err
    assert out.splitlines() == ["Otters are mustelids.", "I could not write it.", "Too slow.", "Refused.", "Enough."]
    offered = fake_model.tools_offered()
    assert {"files__lookup", "files__add_note", "fetch_url"} <= set(offered[0])
    assert _result_of(fake_model, 1) == "found: otter", "read-only: run without asking"
    assert _result_of(fake_model, 3) == NOT_ASKED, "nobody at a pipe can confirm a writing tool"
    assert _result_of(fake_model, 5) == "error: files__slow did not finish within 1 s"
    assert _result_of(fake_model, 7).startswith("refused:") and "169.254.169.254" in _result_of(fake_model, 7)
    assert [bool(tools) for tools in offered[8:11]] == [True, True, False], "max_rounds 2, then no tools"

    code, out, err = await _run(["chat"], tmp_path, _tools_env(fake_model), "and after a restart?\n")
    assert code == 0, err
    sent = fake_model.requests[-1]["messages"]
    assert {"role": "tool", "content": "found: otter", "tool_call_id": sent[3]["tool_call_id"]} == sent[3]
    assert sent[2]["tool_calls"][0]["function"]["name"] == "files__lookup"
    assert [m["content"] for m in sent[1:5]] == ["otter?", "", "found: otter", "Otters are mustelids."]


async def test_a_user_outside_tools_allow_users_is_offered_no_tools(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _tools_env(fake_model, CHATBRIDGE_TOOLS__ALLOW_USERS='["telegram:1"]')
    code, out, err = await _run(["chat"], tmp_path, env, "hello\n")

    assert code == 0, err
    assert out == "echo: hello\n"
    assert fake_model.tools_offered() == [[]]
