"""What an operator sees of models and budgets: the warning for an open bridge without a budget (at
start-up and in ``chatbridge check``), and the metrics of tokens and cost by model and of refusals
by limit."""

from __future__ import annotations

import logging
import time
from datetime import UTC
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots.registry import ModelRegistry
from chatbridge.check import check
from chatbridge.config import Config
from chatbridge.metrics import BridgeMetrics
from chatbridge.runtime import open_runtime
from chatbridge.spending import OPEN_WITHOUT_BUDGET, spending_warning
from core.calendar import BudgetCalendar
from core.engine import Engine
from core.stores.memory import MemoryStore
from core.tokens import TokenCounter
from tests.fakes.fake_model import FakeModel
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.kit.channel import RecordingChannel
from tests.kit.engine import engine_settings, model_settings, private


def config(**sections: Any) -> Config:
    sections.setdefault("adapters", {"telegram": {"enabled": True, "token": TOKEN}})
    sections.setdefault("store", {"backend": "memory"})
    return Config(**sections)


def test_an_open_bridge_without_a_budget_is_warned_about() -> None:
    assert spending_warning(config()) == OPEN_WITHOUT_BUDGET
    assert spending_warning(config(limits={"user_tokens_per_day": 50_000})) is None
    assert spending_warning(config(limits={"total_tokens_per_day": 1})) is None
    assert spending_warning(config(access={"allow_users": ["telegram:1"]})) is None
    assert spending_warning(config(access={"allow_chats": ["telegram:-100"]})) is None
    # The terminal alone is its operator's own: nobody else can spend.
    assert spending_warning(config(adapters={"console": {"enabled": True}})) is None


async def test_start_up_logs_the_warning(caplog: pytest.LogCaptureFixture, fake_model: FakeModel) -> None:
    with caplog.at_level(logging.WARNING, logger="chatbridge"):
        async with open_runtime(config(model={"base_url": fake_model.base_url})):
            pass
        warned = [record for record in caplog.records if OPEN_WITHOUT_BUDGET in record.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        caplog.clear()
        async with open_runtime(config(model={"base_url": fake_model.base_url}, limits={"user_tokens_per_day": 9})):
            pass
        assert not [record for record in caplog.records if OPEN_WITHOUT_BUDGET in record.getMessage()]


async def test_check_shows_the_warning_without_failing(
    capsys: pytest.CaptureFixture[str], fake_model: FakeModel
) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    try:
        adapters = {"telegram": {"enabled": True, "token": TOKEN, "base_url": telegram.base_url}}
        sections: dict[str, Any] = {"adapters": adapters, "model": {"base_url": fake_model.base_url}}
        assert await check(config(server={"port": 0}, **sections)) == 0
        budgets = [line for line in capsys.readouterr().out.splitlines() if line.startswith("budgets")]
        assert len(budgets) == 1 and budgets[0].split()[1:3] == ["warn", "anyone"]
        assert OPEN_WITHOUT_BUDGET in " ".join(budgets[0].split())

        assert await check(config(server={"port": 0}, limits={"user_tokens_per_day": 5}, **sections)) == 0
        assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("budgets")]
    finally:
        await telegram.stop()


def samples(metrics: BridgeMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


async def test_metrics_count_tokens_and_cost_by_model_and_refusals_by_limit(fake_model: FakeModel) -> None:
    metrics = BridgeMetrics(session_timeout_s=3600, models=["default", "vision"])
    registry = ModelRegistry.from_settings(
        {
            "default": model_settings(fake_model.base_url, price_in_per_mtok=1_000_000.0),
            "vision": model_settings(fake_model.base_url, price_out_per_mtok=2_000_000.0),
        }
    )
    store = MemoryStore()
    settings = engine_settings(limits={"user_tokens_per_day": 1, "user_messages_per_minute": 3})
    engine = Engine(store=store, models=registry, tokens=TokenCounter.estimate(), settings=settings, observer=metrics)
    try:
        for text, user in (("hi", "telegram:1"), ("/model vision", "telegram:2"), ("hello", "telegram:2")):
            await engine.handle(private(text, user=user), RecordingChannel())
        await engine.handle(private("over budget", user="telegram:1"), RecordingChannel())
        await engine.handle(private("over the rate", user="telegram:1"), RecordingChannel())
        await engine.handle(private("too fast", user="telegram:1"), RecordingChannel())
    finally:
        await registry.aclose()

    today = BudgetCalendar(UTC).day_of(time.time())
    usage = {row.model: row for row in await store.usage_by_model(today)}
    found = samples(metrics)

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    assert value("chatbridge_model_tokens_total", model="default", direction="in") == usage["default"].prompt_tokens
    assert value("chatbridge_model_tokens_total", model="vision", direction="out") == usage["vision"].completion_tokens
    assert value("chatbridge_model_cost_usd_total", model="default") == usage["default"].prompt_tokens
    assert value("chatbridge_model_cost_usd_total", model="vision") == 2 * usage["vision"].completion_tokens
    assert value("chatbridge_messages_refused_total", limit="user") == 2
    assert value("chatbridge_messages_refused_total", limit="rate") == 1
    assert ("chatbridge_messages_refused_total", frozenset({("limit", "total")})) in found  # listed at 0
