"""``chatbridge check`` lists each MCP server and its tools: a real process against real MCP servers."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.chatbridge.test_cli import _env, _refused_url, _rows, _run
from tests.fakes.fake_model import FakeModel
from tests.fakes.mcp_servers import STDIO_SCRIPT, HttpMcpServer

TOKEN = "mcp-check-secret-77aa66bb"


async def test_check_lists_each_server_and_its_tools(tmp_path: Path, fake_model: FakeModel) -> None:
    down = _refused_url("/mcp")
    async with HttpMcpServer(require=("Authorization", f"Bearer {TOKEN}")) as kb:
        (tmp_path / "config.yaml").write_text(
            "tools:\n  enabled: true\n  allow_stdio: true\n  fetch_url: {enabled: true}\n"
            f"mcp_servers:\n  kb:\n    url: {kb.url}\n    tools: [lookup, add_note, missing_one]\n"
            f"  local:\n    command: {sys.executable}\n    args: [{STDIO_SCRIPT}]\n"
            f"  down:\n    url: {down}\n",
            encoding="utf-8",
        )
        env = _env(
            fake_model,
            CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true",
            CHATBRIDGE_MODEL__NAME="fake-model",
            CHATBRIDGE_MCP_SERVERS__KB__HEADERS__AUTHORIZATION=f"Bearer {TOKEN}",
        )
        code, out, err = await _run(["check"], tmp_path, env)

    assert code == 1, out + err
    rows = _rows(out)
    assert rows["tools"] == ("ok", "enabled: at most 5 rounds, 30 s a call, confirm unless_read_only")
    assert rows["tool fetch_url"] == ("ok", "built-in, public addresses only")
    assert rows["mcp kb"] == (
        "warn",
        f"streamable HTTP {kb.url}: 2 tools: kb__lookup, kb__add_note (writes); "
        "mcp_servers.kb.tools names tools it lacks: missing_one",
    )
    status, detail = rows["mcp local"]
    assert status == "ok" and detail.startswith(f"stdio {sys.executable}: 8 tools: ")
    assert "local__get_weather" in detail and "local__exit_now (writes)" in detail
    assert rows["mcp down"] == ("FAIL", f"streamable HTTP {down}: ConnectError: All connection attempts failed")
    assert TOKEN not in out + err


async def test_check_fails_on_a_stdio_server_that_is_not_allowed(tmp_path: Path, fake_model: FakeModel) -> None:
    (tmp_path / "config.yaml").write_text(f"mcp_servers:\n  local:\n    command: {sys.executable}\n", encoding="utf-8")
    code, _, err = await _run(["check"], tmp_path, _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true"))

    assert code == 2
    assert "mcp_servers.local.command: stdio servers start programs on this machine; set tools.allow_stdio: true" in err
