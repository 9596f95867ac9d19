"""Telegram (``adapters.telegram``); python-telegram-bot is imported only once the adapter is built."""

from __future__ import annotations

from adapters.kit import Adapter, Routes
from adapters.telegram.settings import TelegramSettings


def build(settings: TelegramSettings, routes: Routes) -> Adapter:
    from adapters.telegram.adapter import TelegramAdapter

    return TelegramAdapter(settings, routes)
