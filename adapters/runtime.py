"""Assemble one running bridge from a configuration: store, model client, token counter, engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapters.config import Config, ConfigError
from adapters.console import CONSOLE_USER
from bots.openai_client import OpenAIChatModel
from core.engine import Engine, EngineSettings
from core.store import Store
from core.stores import create_store
from core.tokens import load_token_counter

SHUTDOWN_GRACE_S = 30.0
"""How long replies in flight may take to finish after SIGTERM before they are cancelled."""


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    store: Store
    model: OpenAIChatModel
    engine: Engine


def engine_settings(config: Config) -> EngineSettings:
    model = config.model
    worst_call_s = model.timeout_s * (model.max_retries + 1) + model.retry_backoff_s * 2**model.max_retries
    return EngineSettings(
        bot=config.bot,
        context=config.context,
        session=config.session,
        access=config.access,
        limits=config.limits,
        lease_ttl_s=worst_call_s + 30.0,
        extra_admins=(CONSOLE_USER,) if config.adapters.console.user_is_admin else (),
    )


def build_store(config: Config) -> Store:
    """The configured store, not yet opened; a backend this build lacks is a configuration error."""
    try:
        return create_store(config.store)
    except NotImplementedError as exc:
        raise ConfigError(f"store.backend: {exc}") from None


@asynccontextmanager
async def open_runtime(config: Config) -> AsyncIterator[Runtime]:
    """Everything opened here is closed on the way out, replies in flight first."""
    store = build_store(config)
    await store.open()
    model = OpenAIChatModel(config.model)
    try:
        tokens = await load_token_counter(config.context.tokenizer, config.model.name)
        engine = Engine(store=store, model=model, tokens=tokens, settings=engine_settings(config))
        try:
            yield Runtime(config, store, model, engine)
        finally:
            await engine.drain(SHUTDOWN_GRACE_S)
    finally:
        await model.aclose()
        await store.close()
