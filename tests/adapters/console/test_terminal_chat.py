"""The terminal chat as a person uses it: ``chatbridge chat`` on a pseudo-terminal (pexpect), typed
keys, a bracketed paste, Ctrl-C and Ctrl-D, against the fake model.

What is asserted is what the model was sent (so what the chat made of the keys), what the screen
shows, and the exit status.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pexpect

from core.tool_loop import DECLINED
from tests.fakes.fake_model import FakeCall, FakeModel, Reply, Status, ToolCalls
from tests.fakes.mcp_servers import HttpMcpServer

PROMPT = "you>"
LEFT, PASTE_START, PASTE_END = "\x1b[D", "\x1b[200~", "\x1b[201~"


def _spawn(tmp_path: Path, fake_model: FakeModel, **settings: str) -> pexpect.spawn:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")}
    env.update(
        HOME=str(tmp_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        TERM="xterm-256color",
        # Nothing answers prompt_toolkit's cursor-position request on a bare pseudo-terminal.
        PROMPT_TOOLKIT_NO_CPR="1",
        CHATBRIDGE_MODEL__BASE_URL=fake_model.base_url,
        CHATBRIDGE_MODEL__API_KEY="sk-terminal-secret",
        CHATBRIDGE_CONTEXT__TOKENIZER="estimate",
        CHATBRIDGE_MODEL__RETRY_BACKOFF_S="0.2",
        **settings,
    )
    return pexpect.spawn(
        sys.executable,
        ["-m", "chatbridge.cli", "chat"],
        cwd=str(tmp_path),
        env=env,
        dimensions=(30, 100),
        encoding="utf-8",
        timeout=20,
    )


def _plain(screen: str) -> str:
    """What the terminal shows, without its escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen).replace("\r", "")


def _user_turns(fake_model: FakeModel) -> list[str]:
    return [m["content"] for m in fake_model.requests[-1]["messages"] if m["role"] == "user"]


async def test_editing_a_paste_ctrl_c_and_ctrl_d(tmp_path: Path, fake_model: FakeModel) -> None:
    def converse() -> pexpect.spawn:
        chat = _spawn(tmp_path, fake_model)
        chat.expect(PROMPT)
        # Typed with a slip, mended by moving the cursor back: one question, as corrected.
        chat.send("hello wrld" + LEFT * 3 + "o\r")
        chat.expect("echo: hello world")
        chat.expect(PROMPT)
        # Three pasted lines are one question, answered once.
        chat.send(PASTE_START + "line one\rline two\rline three" + PASTE_END + "\r")
        chat.expect("echo: line one")
        chat.expect(PROMPT)
        # Ctrl-C while the answer streams stops it; the chat goes on.
        fake_model.script(Reply(text="never finished " * 200, chunk_chars=3, chunk_delay_s=0.05))
        chat.send("tell me everything\r")
        chat.expect("never finished")
        chat.sendintr()
        chat.expect("stopped")
        chat.expect(PROMPT)
        chat.send("still there?\r")
        chat.expect("echo: still there\\?")
        chat.expect(PROMPT)
        chat.sendeof()
        chat.expect(pexpect.EOF)
        chat.close()
        return chat

    chat = await asyncio.to_thread(converse)

    assert chat.exitstatus == 0
    assert _user_turns(fake_model) == ["hello world", "line one\nline two\nline three", "still there?"]
    assert [len(request["messages"]) for request in fake_model.requests] == [2, 4, 6, 6]
    history = (tmp_path / "state" / "chatbridge" / "chat_history").read_text()
    assert "+hello world" in history and "+still there?" in history


async def test_ctrl_c_twice_at_the_prompt_quits_and_logs_stay_out_of_the_chat(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    def converse() -> pexpect.spawn:
        chat = _spawn(tmp_path, fake_model)
        chat.expect(PROMPT)
        chat.send("hi\r")
        chat.expect("echo: hi")
        chat.expect(PROMPT)
        chat.send("/id\r")
        chat.expect("Session: console:local")
        card.append(_plain(f"{chat.before}{chat.after}"))
        chat.expect(PROMPT)
        chat.sendintr()
        chat.expect("Ctrl-C again")
        chat.sendintr()
        chat.expect(pexpect.EOF)
        chat.close()
        return chat

    card: list[str] = []
    chat = await asyncio.to_thread(converse)

    assert chat.exitstatus == 0
    # Line breaks in a command's answer stay line breaks, as on every platform.
    assert [line.strip() for line in card[0].splitlines() if line.strip()][-3:] == [
        "You: console:local",
        "Chat: console:local",
        "Session: console:local",
    ]
    log = (tmp_path / "state" / "chatbridge" / "chat.log").read_text()
    assert "outcome=answered" in log
    assert "sk-terminal-secret" not in log


async def test_retries_show_as_a_status_line_not_as_log_lines(tmp_path: Path, fake_model: FakeModel) -> None:
    fake_model.script(Status(503), Status(503))

    def converse() -> str:
        chat = _spawn(tmp_path, fake_model)
        chat.expect(PROMPT)
        chat.send("are you there?\r")
        chat.expect("echo: are you there\\?")
        shown = chat.before
        chat.expect(PROMPT)
        chat.sendeof()
        chat.expect(pexpect.EOF)
        return str(shown)

    shown = await asyncio.to_thread(converse)

    assert "retry 1 of" in shown
    assert "WARNING" not in shown


async def test_a_writing_tool_asks_y_or_n_and_runs_only_on_yes(tmp_path: Path, fake_model: FakeModel) -> None:
    """Through ``chatbridge chat`` as configured: tools on, a model that takes them, the MCP test
    server over streamable HTTP."""

    def converse(url: str) -> pexpect.spawn:
        chat = _spawn(
            tmp_path,
            fake_model,
            CHATBRIDGE_TOOLS__ENABLED="true",
            CHATBRIDGE_TOOLS__TIMEOUT_S="3",
            CHATBRIDGE_MODEL__TOOLS="true",
            CHATBRIDGE_MCP_SERVERS__KB__URL=url,
        )
        chat.expect(PROMPT)
        for answer in ("y", "n", None):
            chat.send("note it\r")
            chat.expect(r"May I run kb__add_note")
            chat.expect(r"\[y/N\]")
            if answer is not None:
                chat.send(f"{answer}\r")
            chat.expect({"y": "Allowed", "n": "Declined", None: "No answer in time"}[answer])
            chat.expect(PROMPT)
        chat.sendeof()
        chat.expect(pexpect.EOF)
        chat.close()
        return chat

    for text in ("milk", "eggs", "bread"):
        fake_model.script(ToolCalls([FakeCall("kb__add_note", {"text": text})]), Reply(f"done with {text}"))
    async with HttpMcpServer() as mcp:
        chat = await asyncio.to_thread(converse, mcp.url)

    assert chat.exitstatus == 0
    assert mcp.notes.texts == ["milk"]
    # Requests 1, 3 and 5 are those after a round; each sends its round's result last.
    results = [fake_model.tool_messages()[request][-1]["content"] for request in (1, 3, 5)]
    assert results == ["noted (1)", DECLINED, DECLINED]
