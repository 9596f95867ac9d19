"""The ``chatbridge`` command as a user runs it: a real process, real stdin/stdout, the fake model."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import socket
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
    env = _env(None, CHATBRIDGE_MODL__NAME="gpt", CHATBRIDGE_MODEL__MAX_RETRIES="lots")
    code, out, err = await _run(["run", "--config", str(bad)], tmp_path, env)
    assert code == 2
    # Every problem at once, each with where its value came from: the file's line or the variable.
    assert err.strip().splitlines() == [
        "chatbridge: configuration error: 4 problems:",
        "  CHATBRIDGE_MODL__NAME: no such setting; did you mean CHATBRIDGE_MODEL__NAME?",
        f"  model.temperature: Input should be a valid number, unable to parse string as a number ({bad} line 2)",
        "  model.max_retries: Input should be a valid integer, unable to parse string as an integer"
        " (from CHATBRIDGE_MODEL__MAX_RETRIES)",
        f"  session.scope: Input should be 'user', 'chat' or 'thread' ({bad} line 4)",
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
    assert "(`chatbridge chat` needs none)" in err


async def test_check_reports_each_part(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true", CHATBRIDGE_MODEL__NAME="fake-model")
    code, out, err = await _run(["check"], tmp_path, env)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].split() == ["config", "ok", "valid"]
    assert lines[1].split()[:2] == ["store", "ok"]
    assert lines[2].split()[:3] == ["model", "fake-model", "ok"]
    assert lines[3].split()[:2] == ["audio", "ok"]
    assert lines[4].split()[:3] == ["adapter", "console", "ok"]
    assert lines[5].split()[:2] == ["server", "ok"]
    assert "sk-cli-secret" not in out + err


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """Piped output by row name: its status and detail (the columns are two or more spaces apart)."""
    cells = [re.split(r" {2,}", line, maxsplit=2) for line in out.splitlines()]
    return {name: (status, detail) for name, status, detail in cells}


def _row(out: str, name: str) -> tuple[str, str]:
    rows = _rows(out)
    assert name in rows, out
    return rows[name]


def _refused_url(path: str = "") -> str:
    """An address where nothing listens: the port was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


REFUSED = "connection refused (nothing listens there)"


async def test_check_fails_where_run_would_refuse_for_want_of_an_adapter(tmp_path: Path, fake_model: FakeModel) -> None:
    code, out, _ = await _run(["check"], tmp_path, _env(fake_model, CHATBRIDGE_MODEL__NAME="fake-model"))
    assert code == 1
    status, detail = _row(out, "adapters")
    assert status == "FAIL"
    assert detail.startswith("no adapter is enabled: set adapters.<name>.enabled: true")
    assert detail.endswith("(`chatbridge chat` needs none)")
    assert {name: status for name, (status, _) in _rows(out).items()} == {
        "config": "ok",
        "store": "ok",
        "model fake-model": "ok",
        "audio": "ok",
        "adapters": "FAIL",
        "server": "ok",
    }


async def test_check_warns_when_the_audio_server_cannot_transcribe(tmp_path: Path, fake_model: FakeModel) -> None:
    fake_model.audio_endpoints = False
    env = _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true", CHATBRIDGE_MODEL__NAME="fake-model")
    code, out, err = await _run(["check"], tmp_path, env)
    assert code == 0, out + err  # run starts without audio; voice messages get a short answer
    assert _row(out, "audio") == (
        "warn",
        f"model.base_url {fake_model.base_url} has no /audio/transcriptions: voice messages get a short answer "
        "instead of a transcript; set audio.base_url to a server that has them",
    )


async def test_check_names_audio_base_url_when_nothing_listens_there(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _env(
        fake_model,
        CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true",
        CHATBRIDGE_MODEL__NAME="fake-model",
        CHATBRIDGE_AUDIO__BASE_URL=_refused_url("/v1"),
    )
    code, out, _ = await _run(["check"], tmp_path, env)
    assert code == 0
    status, detail = _row(out, "audio")
    assert status == "warn" and detail.startswith("audio.base_url http://127.0.0.1:")
    assert detail.endswith(f"{REFUSED}; voice messages cannot be answered")


async def test_check_names_model_base_url_when_the_connection_is_refused(tmp_path: Path) -> None:
    url = _refused_url("/v1")
    env = _env(None, CHATBRIDGE_MODEL__BASE_URL=url, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
    code, out, _ = await _run(["check"], tmp_path, env)
    assert code == 1
    assert _row(out, "model gpt-4o-mini") == ("FAIL", f"model.base_url {url}: {REFUSED}")


async def test_check_suggests_v1_when_the_model_server_answers_404(tmp_path: Path, fake_model: FakeModel) -> None:
    root = fake_model.base_url.removesuffix("/v1")
    env = _env(fake_model, CHATBRIDGE_MODEL__BASE_URL=root, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
    code, out, _ = await _run(["check"], tmp_path, env)
    assert code == 1
    assert _row(out, "model gpt-4o-mini") == (
        "FAIL",
        f"model.base_url {root} answered 404 at /models and /chat/completions: add /v1?",
    )


async def test_an_unlisted_model_is_a_warning_naming_what_the_server_lists(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake_model.models = [f"model-{n:02}" for n in range(12)]
    code, out, err = await _run(["check"], tmp_path, _env(fake_model, CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true"))
    assert code == 0, out + err  # a warning does not fail the check
    listed = ", ".join(f"model-{n:02}" for n in range(10))
    assert _row(out, "model gpt-4o-mini") == (
        "warn",
        f"model.name gpt-4o-mini is not among the 12 models the server lists: {listed} and 2 more",
    )
    assert [status for name, (status, _) in _rows(out).items() if name != "model gpt-4o-mini"] == ["ok"] * 5


async def test_check_reaches_every_named_model_and_names_its_keys(tmp_path: Path, fake_model: FakeModel) -> None:
    root = fake_model.base_url.removesuffix("/v1")
    (tmp_path / "config.yaml").write_text(
        f"models:\n  local:\n    base_url: {root}\n    name: llama3.1\n  vision:\n    name: fake-vision\n"
    )
    env = _env(fake_model, CHATBRIDGE_MODEL__NAME="fake-model", CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true")
    code, out, _ = await _run(["check"], tmp_path, env)
    assert code == 1
    assert _row(out, "model fake-model")[0] == "ok"
    assert _row(out, "model llama3.1") == (
        "FAIL",
        f"models.local.base_url {root} answered 404 at /models and /chat/completions: add /v1?",
    )
    assert _row(out, "model fake-vision") == (
        "warn",
        "models.vision.name fake-vision is not among the 1 model the server lists: fake-model",
    )


async def test_check_names_the_telegram_base_url_when_it_refuses(tmp_path: Path, fake_model: FakeModel) -> None:
    url = _refused_url("/bot")
    env = _env(
        fake_model,
        CHATBRIDGE_MODEL__NAME="fake-model",
        CHATBRIDGE_ADAPTERS__TELEGRAM__ENABLED="true",
        CHATBRIDGE_ADAPTERS__TELEGRAM__TOKEN="123456:telegram-cli-secret",
        CHATBRIDGE_ADAPTERS__TELEGRAM__BASE_URL=url,
    )
    code, out, err = await _run(["check"], tmp_path, env)
    assert code == 1
    assert _row(out, "adapter telegram") == (
        "FAIL",
        f"cannot reach the Bot API: adapters.telegram.base_url {url}: {REFUSED}",
    )
    assert "telegram-cli-secret" not in out + err


async def test_check_names_store_redis_url_without_its_password(tmp_path: Path, fake_model: FakeModel) -> None:
    url = _refused_url("/0").replace("http://", "redis://")
    env = _env(
        fake_model,
        CHATBRIDGE_MODEL__NAME="fake-model",
        CHATBRIDGE_ADAPTERS__CONSOLE__ENABLED="true",
        CHATBRIDGE_STORE__BACKEND="redis",
        CHATBRIDGE_STORE__REDIS_URL=url.replace("redis://", "redis://:redis-cli-secret@"),
    )
    code, out, err = await _run(["check"], tmp_path, env)
    assert code == 1
    assert _row(out, "store") == ("FAIL", f"store.redis_url {url.replace('redis://', 'redis://***@')}: {REFUSED}")
    assert "redis-cli-secret" not in out + err


async def test_check_prints_a_coloured_table_on_a_terminal(tmp_path: Path, fake_model: FakeModel) -> None:
    env = _env(fake_model, TERM="xterm-256color", COLUMNS="200")
    env.pop("NO_COLOR", None)
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *CLI, "check", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    code = await asyncio.wait_for(process.wait(), timeout=30)
    screen = await asyncio.to_thread(_read_all, leader)
    assert code == 1
    header = next(line for line in screen.splitlines() if "name" in line)
    assert [word for word in re.split(r"[^a-z]+", _plain(header)) if word] == ["name", "status", "detail"]
    assert "\x1b[32mok" in screen  # green
    assert "\x1b[33mwarn" in screen  # yellow: gpt-4o-mini is not listed
    assert "\x1b[1;31mFAIL" in screen  # bold red: no adapter


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:  # the other side closed: Linux reports EIO
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


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
