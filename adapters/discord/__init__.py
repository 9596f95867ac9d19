"""Discord (``adapters.discord``); discord.py is imported only once the adapter is built."""

from __future__ import annotations

from adapters.discord.settings import DiscordSettings
from adapters.kit import Adapter, Routes


def build(settings: DiscordSettings, routes: Routes) -> Adapter:
    from adapters.discord.adapter import DiscordAdapter

    return DiscordAdapter(settings)
