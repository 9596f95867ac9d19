"""Which model and persona answer a chat, out of those configured (design section 9).

A chat's own ``/model`` choice wins; otherwise the model its persona names; otherwise the default.
A stored choice that is no longer configured (an operator removed the model) is ignored rather than
refused, so a chat never gets stuck; ``/model`` then shows what it actually uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bots.model import ModelCard, ModelCatalog
from core.settings import DEFAULT_NAME, BotSettings, PersonaSettings
from core.store import TurnSettings
from core.tokens import TokenCounter
from core.window import SystemPart


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    system: SystemPart
    model: str | None
    temperature: float | None


@dataclass(frozen=True, slots=True)
class TurnChoice:
    """What one turn is answered with."""

    persona: Persona
    model: str


class Choices:
    def __init__(
        self,
        models: ModelCatalog,
        bot: BotSettings,
        personas: Mapping[str, PersonaSettings],
        tokens: TokenCounter,
    ) -> None:
        self.models = models
        every = {DEFAULT_NAME: PersonaSettings(system_prompt=bot.system_prompt), **personas}
        self._personas = {
            name: Persona(name, SystemPart(p.system_prompt, tokens.count(p.system_prompt)), p.model, p.temperature)
            for name, p in every.items()
        }

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.models.names

    @property
    def persona_names(self) -> tuple[str, ...]:
        return tuple(self._personas)

    def persona(self, name: str) -> Persona:
        return self._personas[name]

    def card(self, name: str) -> ModelCard | None:
        """None for a model that is not (or no longer) configured."""
        return self.models.card(name) if name in self.models.names else None

    def of_turn(self, chosen: TurnSettings) -> TurnChoice:
        persona = self._personas.get(chosen.persona or DEFAULT_NAME, self._personas[DEFAULT_NAME])
        names = self.models.names
        for candidate in (chosen.model, persona.model):
            if candidate is not None and candidate in names:
                return TurnChoice(persona, candidate)
        return TurnChoice(persona, names[0])
