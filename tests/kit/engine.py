"""An engine wired to a real store and the fake model server, with settings easy to vary per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from bots.audio import AudioClient
from bots.audio_settings import Speak
from bots.model import ModelCard, ModelCatalog
from bots.openai_client import OpenAIChatModel
from bots.registry import ModelRegistry
from bots.settings import ModelSettings
from core.engine import Engine, EngineSettings
from core.events import ChatKind, IncomingMessage
from core.media_settings import MediaSettings
from core.settings import (
    AccessSettings,
    BotSettings,
    ContextSettings,
    LimitsSettings,
    PersonaSettings,
    SessionSettings,
)
from core.store import Store
from core.tokens import TokenCounter

_ids = itertools.count(1)


def model_settings(base_url: str, **overrides: Any) -> ModelSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "sk-test-key",
        "name": "fake-model",
        "retry_backoff_s": 0.01,
        "timeout_s": 5,
    }
    values.update(overrides)
    return ModelSettings(**values)


def engine_settings(lease_s: float = 15.0, delivery_timeout_s: float = 10.0, **sections: Any) -> EngineSettings:
    """Keyword arguments are section overrides, e.g. ``access={"admins": ["telegram:1"]}``;
    ``personas`` is a mapping of name to persona settings."""
    return EngineSettings(
        personas={name: PersonaSettings(**values) for name, values in sections.get("personas", {}).items()},
        bot=BotSettings(**sections.get("bot", {})),
        context=ContextSettings(**{"tokenizer": "estimate", **sections.get("context", {})}),
        session=SessionSettings(**sections.get("session", {})),
        access=AccessSettings(**sections.get("access", {})),
        limits=LimitsSettings(**sections.get("limits", {})),
        lease_s=lease_s,
        delivery_timeout_s=delivery_timeout_s,
        extra_admins=tuple(sections.get("extra_admins", ())),
        media=MediaSettings(**sections.get("media", {})),
        speak=Speak(sections.get("speak", "never")),
    )


def make_engine(
    store: Store,
    model: OpenAIChatModel | ModelCatalog,
    clock: Callable[[], float] | None = None,
    *,
    vision: bool = False,
    audio: AudioClient | None = None,
    **sections: Any,
) -> Engine:
    """``model`` is one client (the model ``default``, which can see pictures with ``vision``) or a
    catalog of several; ``audio`` transcribes voice notes."""
    kwargs: dict[str, Any] = {"audio": audio}
    if clock is not None:
        kwargs["clock"] = clock
    card = ModelCard("default", "default", vision=vision)
    models = ModelRegistry.single(model, card) if isinstance(model, OpenAIChatModel) else model
    return Engine(
        store=store, models=models, tokens=TokenCounter.estimate(), settings=engine_settings(**sections), **kwargs
    )


def private(text: str, user: str = "telegram:1", **fields: Any) -> IncomingMessage:
    return IncomingMessage(
        platform=user.split(":")[0],
        message_id=str(next(_ids)),
        chat_id=user,
        user_id=user,
        text=text,
        chat_kind=ChatKind.PRIVATE,
        **fields,
    )


def group(text: str, user: str = "telegram:1", chat: str = "telegram:-100", **fields: Any) -> IncomingMessage:
    return IncomingMessage(
        platform=chat.split(":")[0],
        message_id=str(next(_ids)),
        chat_id=chat,
        user_id=user,
        text=text,
        chat_kind=ChatKind.GROUP,
        **fields,
    )
