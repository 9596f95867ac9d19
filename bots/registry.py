"""The configured models by name: one client each, built from the resolved ``model`` and ``models``
settings. The engine picks one per turn (the chat's ``/model`` choice, its persona's model, or the
default) and never falls back to another when the chosen one fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bots.errors import ModelError
from bots.model import ChatModel, ModelCard
from bots.openai_client import OpenAIChatModel
from bots.settings import ModelSettings


def card_of(name: str, settings: ModelSettings) -> ModelCard:
    return ModelCard(
        name=name,
        served_name=settings.name,
        vision=settings.vision,
        tools=settings.tools,
        context_tokens=settings.context_tokens,
        reply_tokens=settings.max_tokens,
        price_in_per_mtok=settings.price_in_per_mtok,
        price_out_per_mtok=settings.price_out_per_mtok,
    )


class ModelRegistry:
    """A ``ModelCatalog``: each model's card and client, the default first. Clients built here are
    closed by ``aclose``; a client handed to ``single`` stays its owner's."""

    def __init__(self, entries: Mapping[str, tuple[ModelCard, ChatModel]], *, owned: bool = True) -> None:
        if not entries:
            raise ValueError("a model registry needs at least the default model")
        self._entries = dict(entries)
        self._owned = owned

    @classmethod
    def from_settings(
        cls, models: Mapping[str, ModelSettings], on_retry: Callable[[ModelError], None] | None = None
    ) -> ModelRegistry:
        return cls({name: (card_of(name, s), OpenAIChatModel(s, on_retry=on_retry)) for name, s in models.items()})

    @classmethod
    def single(cls, client: ChatModel, card: ModelCard | None = None) -> ModelRegistry:
        """One model, named ``default`` unless ``card`` says otherwise (tests, benchmarks)."""
        card = card or ModelCard("default", "default")
        return cls({card.name: (card, client)}, owned=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def card(self, name: str) -> ModelCard:
        return self._entries[name][0]

    def client(self, name: str) -> ChatModel:
        return self._entries[name][1]

    async def aclose(self) -> None:
        if self._owned:
            for _, client in self._entries.values():
                await client.aclose()
