"""The ``adapters.console`` section."""

from __future__ import annotations

from pydantic import Field

from adapters.kit import AdapterSection


class ConsoleSettings(AdapterSection):
    user_is_admin: bool = Field(True, description="console:local, the terminal's user, may use /admin commands")
