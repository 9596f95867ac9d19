"""The ``adapters.console`` section, and where the terminal chat keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from adapters.kit import AdapterSection


def state_dir() -> Path:
    """Where the terminal chat keeps what it remembers between runs: the XDG state directory, as
    shells keep their history."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "chatbridge"


class ConsoleSettings(AdapterSection):
    user_is_admin: bool = Field(True, description="console:local, the terminal's user, may use /admin commands")
    history_file: str = Field(
        "",
        description="where the terminal chat keeps the lines you typed (empty: chat_history in "
        "$XDG_STATE_HOME/chatbridge, by default ~/.local/state/chatbridge)",
    )

    @property
    def history_path(self) -> Path:
        return Path(self.history_file).expanduser() if self.history_file else state_dir() / "chat_history"
