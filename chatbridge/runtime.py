"""Assemble one running bridge from a configuration: store, models, token counter, engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapters.console.adapter import CONSOLE_USER
from adapters.kit import CANCELLED_WAIT_S, Adapter
from bots.audio import AudioClient
from bots.registry import ModelRegistry
from chatbridge.config import Config, ConfigError
from chatbridge.metrics import BridgeMetrics
from chatbridge.spending import spending_warning
from chatbridge.tooling import open_tools
from core.engine import Engine, EngineSettings
from core.observe import NULL_OBSERVER
from core.store import Store
from core.stores import create_store
from core.tokens import load_token_counter

log = logging.getLogger("chatbridge")

SHUTDOWN_GRACE_S = 30.0
"""How long replies in flight may take to finish after SIGTERM before they are cancelled."""


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    store: Store
    models: ModelRegistry
    engine: Engine


def engine_settings(config: Config) -> EngineSettings:
    return EngineSettings(
        bot=config.bot,
        context=config.context,
        session=config.session,
        access=config.access,
        limits=config.limits,
        personas=config.personas,
        lease_s=config.store.lease_s,
        delivery_timeout_s=config.server.delivery_timeout_s,
        max_concurrent=config.server.max_concurrent_messages,
        extra_admins=(CONSOLE_USER,) if config.adapters.console.user_is_admin else (),
        log_content=config.log.content,
        media=config.media,
        speak=config.audio.speak,
    )


def build_store(config: Config) -> Store:
    """The configured store, not yet opened; a backend this build lacks is a configuration error."""
    try:
        return create_store(config.store)
    except NotImplementedError as exc:
        raise ConfigError(f"store.backend: {exc}") from None


@asynccontextmanager
async def open_runtime(config: Config, metrics: BridgeMetrics | None = None) -> AsyncIterator[Runtime]:
    """Everything opened here is closed on the way out; the adapters' replies in flight must be over
    by then (``chatbridge.cli`` waits for them).

    With ``metrics`` the engine reports every message to it, the model clients their retries and the
    tools their calls. The MCP servers are connected before the engine starts (``open_tools``).
    """
    warning = spending_warning(config)
    if warning is not None:
        log.warning("%s; set a budget in limits or an allow list in access", warning)
    store = build_store(config)
    await store.open()
    models = ModelRegistry.from_settings(
        config.all_models(), on_retry=metrics.model_retry if metrics is not None else None
    )
    audio = AudioClient(config.audio, config.model)
    try:
        tokens = await load_token_counter(config.context.tokenizer, config.model.name)
        async with open_tools(config, on_call=metrics.tool_call if metrics is not None else None) as tools:
            engine = Engine(
                store=store,
                models=models,
                tokens=tokens,
                settings=engine_settings(config),
                observer=metrics if metrics is not None else NULL_OBSERVER,
                audio=audio,
                tools=tools,
            )
            try:
                yield Runtime(config, store, models, engine)
            finally:
                engine.close()
    finally:
        await audio.aclose()
        await models.aclose()
        await store.close()


async def stop_adapters(running: Mapping[asyncio.Task[None], Adapter], engine: Engine, grace_s: float) -> None:
    """Stop taking messages, give the replies in flight ``grace_s`` to finish, then cancel the
    adapters' tasks, which cancels the replies they still run."""
    engine.close()
    for adapter in running.values():
        await adapter.stop()
    still_running = {task for task in running if not task.done()}
    if still_running and grace_s > 0:
        _, still_running = await asyncio.wait(still_running, timeout=grace_s)
    if still_running:
        log.info("cancelling the replies still running after %.0fs", grace_s)
        for task in still_running:
            task.cancel()
        await asyncio.wait(still_running, timeout=CANCELLED_WAIT_S + 1)
