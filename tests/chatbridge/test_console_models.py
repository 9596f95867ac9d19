"""Models, personas, instructions and budgets in ``chatbridge chat``: a real process on the terminal
adapter with the SQLite store, as a user tries a configuration before connecting a platform. The
second model's key comes from ``CHATBRIDGE_MODELS__LOCAL__API_KEY``, as the docs say."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import texts
from tests.fakes.fake_model import FakeModel, _usage
from tests.kit.bridge_process import base_env

CLI = [sys.executable, "-m", "chatbridge.cli", "chat", "--config", "config.yaml"]


@pytest.fixture
async def local_model() -> AsyncIterator[FakeModel]:
    async with FakeModel() as server:
        yield server


def configure(tmp_path: Path, fake_model: FakeModel, local_model: FakeModel, **sections: Any) -> dict[str, str]:
    document = {
        "model": {"base_url": fake_model.base_url, "price_in_per_mtok": 0.15, "price_out_per_mtok": 0.6},
        "models": {"local": {"base_url": local_model.base_url, "name": "llama3.1"}},
        "personas": {"translator": {"system_prompt": "Translate into English.", "model": "local"}},
        **sections,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    return base_env(CHATBRIDGE_MODEL__API_KEY="sk-default-key", CHATBRIDGE_MODELS__LOCAL__API_KEY="sk-local-key")


async def chat(tmp_path: Path, env: dict[str, str], *lines: str) -> list[str]:
    """The answer to each line, each asked by a ``chatbridge chat`` of its own on pipes (which print
    only the answer, so an answer of several lines stays one entry); the store keeps the chat."""
    answers = []
    for line in lines:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(f"{line}\n".encode()), 30)
        assert process.returncode == 0, err.decode()
        answers.append(out.decode().strip())
    return answers


async def test_model_switches_the_console_chat_and_survives_a_restart_on_sqlite(
    tmp_path: Path, fake_model: FakeModel, local_model: FakeModel
) -> None:
    env = configure(tmp_path, fake_model, local_model)
    answers = await chat(tmp_path, env, "hello", "/model local", "and now?")
    assert answers == ["echo: hello", texts.MODEL_SWITCHED.format(name="local"), "echo: and now?"]
    assert local_model.user_texts() == ["and now?"]
    assert local_model.auth_headers == ["Bearer sk-local-key"]
    assert local_model.requests[0]["model"] == "llama3.1"
    assert fake_model.auth_headers == ["Bearer sk-default-key"]

    answers = await chat(tmp_path, env, "after a restart", "/model")
    assert answers[0] == "echo: after a restart"
    assert local_model.user_texts() == ["and now?", "after a restart"]
    assert "→ local: llama3.1" in answers[1]
    assert "• default: gpt-4o-mini" in answers[1]


async def test_persona_and_instructions_in_the_console_survive_reset_and_restart(
    tmp_path: Path, fake_model: FakeModel, local_model: FakeModel
) -> None:
    env = configure(tmp_path, fake_model, local_model)
    answers = await chat(
        tmp_path, env, "/persona translator", "/instructions Keep the tone.", "Bonjour", "/reset", "Merci"
    )
    assert answers[0] == texts.PERSONA_SWITCHED.format(name="translator")
    assert answers[2:] == ["echo: Bonjour", texts.SESSION_CLEARED, "echo: Merci"]
    # The persona names the local model; its prompt is the system message, the instructions follow it.
    assert fake_model.requests == []
    for request in local_model.requests:
        assert [m["content"] for m in request["messages"][:2]] == [
            "Translate into English.",
            f"{texts.INSTRUCTIONS_HEADER}\nKeep the tone.",
        ]
    assert [m["content"] for m in local_model.requests[1]["messages"][2:]] == ["Merci"]

    answers = await chat(tmp_path, env, "/instructions", "Au revoir")
    assert answers[0] == texts.INSTRUCTIONS_SHOWN.format(text="Keep the tone.")
    assert local_model.requests[-1]["messages"][0]["content"] == "Translate into English."


async def test_the_console_user_over_budget_is_refused_and_usage_shows_the_reported_figures(
    tmp_path: Path, fake_model: FakeModel, local_model: FakeModel
) -> None:
    env = configure(tmp_path, fake_model, local_model, limits={"user_tokens_per_day": 25})
    answers = await chat(tmp_path, env, "a first question that spends the whole budget", "a second one", "/usage")
    assert answers[0] == "echo: a first question that spends the whole budget"
    assert answers[1].startswith("You have used up today's token budget on this bridge (25 tokens a day).")
    assert len(fake_model.requests) == 1
    figures = _usage(fake_model.requests[0], answers[0])
    spent_in, spent_out = figures["prompt_tokens"], figures["completion_tokens"]
    cost = texts.dollars((spent_in * 0.15 + spent_out * 0.6) / 1e6)
    assert f"default: {spent_in + spent_out} tokens ({spent_in} in, {spent_out} out), {cost}" in answers[2]
    assert "you: 0 of 25 tokens left today" in answers[2]
