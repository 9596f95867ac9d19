"""Which adapters a configuration enables, built lazily so an unused platform library is never imported.

Adapters that listen for webhooks mount their routes on the shared ``HttpServer`` while they are
built, because the server's routes are fixed once it starts.
"""

from __future__ import annotations

from adapters.base import Adapter
from adapters.config import Config, ConfigError
from adapters.console import ConsoleAdapter
from adapters.http_server import HttpServer

PLANNED = ("telegram", "discord", "slack")


def enabled_adapters(config: Config, server: HttpServer) -> list[Adapter]:
    adapters: list[Adapter] = []
    if config.adapters.console.enabled:
        adapters.append(ConsoleAdapter())
    for name in PLANNED:
        if getattr(config.adapters, name).enabled:
            raise ConfigError(f"adapters.{name}.enabled: the {name} adapter is not available in this version yet")
    return adapters
