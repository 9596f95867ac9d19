"""The terminal as a chat platform (``chatbridge chat``)."""

from __future__ import annotations

from adapters.console.settings import ConsoleSettings
from adapters.kit import Adapter, Routes


def build(settings: ConsoleSettings, routes: Routes) -> Adapter:
    from adapters.console.adapter import ConsoleAdapter

    return ConsoleAdapter(settings)
