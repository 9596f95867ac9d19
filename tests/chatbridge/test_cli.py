"""The ``chatbridge`` command as a user runs it: a real process, real stdin/stdout, the fake model."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_model import FakeModel, Reply

CLI = [sys.executable, "-m", "chatbridge.cli"]


def _env(fake_model: FakeModel | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATBRIDGE_")}
    env["CHATBRIDGE_SERVER__PORT"] = "0"  # run always serves HTTP; never depend on a fixed port being free
    if fake_model is not None:
        env.update(
            CHATBRIDGE_MODEL__BASE_URL=fake_model.base_url,
            CHATBRIDGE_MODEL__API_KEY="sk-cli-secret",
            CHATBRIDGE_CONTEXT__TOKENIZER="estimate",
        )
    env.update(extra)
    return env


async def _run(args: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_holds_a_conversation_and_keeps_it_across_restarts(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _env(fake_model)
    code, out, err = await _run(["chat"], tmp_path, env, "hello\nsecond line\n")
    assert code == 0, err
    assert out.splitlines() == ["echo: hello", "echo: second line"]

    code, out, _ = await _run(["chat"], tmp_path, env, "after restart\n")
    assert code == 0
    assert out == "echo: after restart\n"
    sent = fake_model.requests[-1]["messages"]
    assert [m["content"] for m in sent[1:]] == [
        "hello",
        "echo: hello",
        "second line",
        "echo: second line",
        "after restart",
    ]
    assert (tmp_path / "chatbridge.db").exists()


async def test_chat_commands_work_and_the_console_user_is_admin(tmp_path: Path, fake_model: FakeModel) -> None:
    code, out, err = await _run(
        ["chat"], tmp_path, _env(fake_model), "remember this\n/reset\n/id\n/admin sessions\nfresh\n"
    )
    assert code == 0, err
    assert "Conversation cleared." in out
    assert "You: console:local" in out
    assert "No active sessions." in out
    assert [m["content"] for m in fake_model.requests[-1]["messages"][1:]] == ["fresh"]


async def test_chat_streams_the_reply(tmp_path: Path, fake_model: FakeModel) -> None:
    fake_model.script(Reply(text="streamed in pieces", chunk_chars=2, chunk_delay_s=0.01))
    code, out, _ = await _run(["chat"], tmp_path, _env(fake_model), "go\n")
    assert code == 0
    assert out == "streamed in pieces\n"


async def test_a_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  temperature: very hot\nsession:\n  scope: galaxy\n")
    code, out, err = await _run(["run", "--config", str(bad)], tmp_path, _env(None))
    assert code == 2
    assert err.strip().splitlines() == [
        f"chatbridge: configuration error: 2 problems (in {bad} or the CHATBRIDGE_* environment):",
        "  model.temperature: Input should be a valid number, unable to parse string as a number",
        "  session.scope: Input should be 'user', 'chat' or 'thread'",
    ]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ("modle:\n  name: x\n", "modle: unknown key; did you mean model?"),
        ("model:\n  temprature: 1\n", "model.temprature: unknown key; did you mean model.temperature?"),
        ("access:\n  admins: [alice]\n", "access.admins: 'alice' is not an identity"),
        (
            "adapters:\n  telegram:\n    enabled: true\n",
            "adapters.telegram.token: required when the adapter is enabled",
        ),
        ("store: [1, 2\n", "c.yaml line 2: not valid YAML"),
    ],
)
async def test_config_errors_are_one_line(tmp_path: Path, document: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(document)
    code, _, err = await _run(["check", "--config", str(path)], tmp_path, _env(None))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert key in err


async def test_a_secret_in_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    code, _, err = await _run(["check"], tmp_path, _env(None, CHATBRIDGE_MODEL__MAX_RETRIES="sk-live-12345"))
    assert code == 2
    assert "model.max_retries" in err
    assert "sk-live-12345" not in err


async def test_run_without_an_enabled_adapter_says_so(tmp_path: Path) -> None:
    code, _, err = await _run(["run"], tmp_path, _env(None))
    assert code == 2
    assert "no adapter is enabled" in err


async def test_check_reports_each_part(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
    code, out, err = await _run(["check"], tmp_path, env)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].split() == ["config", "ok", "valid"]
    assert lines[1].split()[:2] == ["store", "ok"]
    assert lines[2].split()[:3] == ["model", "gpt-4o-mini", "ok"]
    assert lines[3].split()[:3] == ["adapter", "console", "ok"]
    assert "sk-cli-secret" not in out + err


async def test_check_fails_where_run_would_refuse_for_want_of_an_adapter(tmp_path: Path, fake_model: FakeModel) -> None:
    code, out, _ = await _run(["check"], tmp_path, _env(fake_model))
    assert code == 1
    adapters = [line for line in out.splitlines() if line.startswith("adapters")]
    assert len(adapters) == 1 and adapters[0].split()[1] == "FAIL"
    assert "no adapter is enabled" in adapters[0]


async def test_check_fails_when_the_model_is_unreachable(tmp_path: Path) -> None:
    env = _env(None, CHATBRIDGE_MODEL__BASE_URL="http://127.0.0.1:9/v1", CHATBRIDGE_MODEL__MAX_RETRIES="0")
    code, out, _ = await _run(["check"], tmp_path, env)
    assert code == 1
    assert "FAIL" in out.splitlines()[2]


async def test_run_stops_cleanly_on_sigterm_and_finishes_the_reply_in_flight(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake_model.default_delay_s = 1.0
    env = _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(b"slow question\n")
    await process.stdin.drain()
    for _ in range(100):
        if fake_model.requests:
            break
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert out.decode() == "echo: slow question\n"
