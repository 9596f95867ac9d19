"""A ReplyChannel that records what a user would see on the platform."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.channel import PlatformLimits


@dataclass
class RecordingChannel:
    """``messages`` holds the current text of every message sent, in order, after all edits."""

    limits: PlatformLimits = field(default_factory=lambda: PlatformLimits(4096, 0.0))
    messages: list[str] = field(default_factory=list)
    edits: int = 0
    typing_calls: int = 0
    route: str = ""

    async def send(self, text: str) -> object:
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int)
        self.messages[handle] = text
        self.edits += 1

    async def typing(self) -> None:
        self.typing_calls += 1

    @property
    def text(self) -> str:
        """Everything the user sees from this channel, messages joined by blank lines."""
        return "\n\n".join(self.messages)
