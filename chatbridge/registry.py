"""Which adapters a configuration enables, built lazily so an unused platform library is never imported.

Adapters that listen for webhooks mount their routes on the shared ``HttpServer`` while they are
built, because the server's routes are fixed once it starts.
"""

from __future__ import annotations

from adapters.console.adapter import ConsoleAdapter
from adapters.kit import Adapter
from chatbridge.config import Config
from chatbridge.http_server import HttpServer


def enabled_adapters(config: Config, server: HttpServer) -> list[Adapter]:
    adapters: list[Adapter] = []
    if config.adapters.console.enabled:
        adapters.append(ConsoleAdapter())
    if config.adapters.slack.enabled:
        from adapters.slack.adapter import SlackAdapter  # slack-bolt is imported only when Slack is enabled

        adapters.append(SlackAdapter(config.adapters.slack, server))
    if config.adapters.discord.enabled:
        from adapters.discord.adapter import DiscordAdapter  # discord.py is imported only when Discord is enabled

        adapters.append(DiscordAdapter(config.adapters.discord))
    if config.adapters.telegram.enabled:
        from adapters.telegram.adapter import (
            TelegramAdapter,
        )  # python-telegram-bot is imported only when Telegram is enabled

        adapters.append(TelegramAdapter(config.adapters.telegram, config.bot, server))
    return adapters
