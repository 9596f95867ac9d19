"""The contract between the engine and whatever produces replies.

``bots`` knows messages, not chats: a ``ChatModel`` takes a list of role/content messages and
streams text back through a callback, then returns the whole reply with the server's usage figures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

MessageRole = Literal["system", "user", "assistant"]


class ChatMessage(TypedDict):
    """One message of a request, in the shape of the OpenAI wire format: a request's window is
    rebuilt from dozens of these for every message, and this way they go into the body as they are."""

    role: MessageRole
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ModelReply:
    """A complete reply. ``finish_reason == "length"`` means the reply was cut at ``max_tokens``."""

    text: str
    finish_reason: str | None
    usage: Usage | None


TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServerCheck:
    """What one look at the model server showed (for ``chatbridge check``)."""

    detail: str
    listed: tuple[str, ...] | None = None
    """The model names the server lists; None when it has no listing."""

    def leaves_out(self, name: str) -> bool:
        """Whether the server's listing lacks ``name`` (Ollama lists ``llama3`` as ``llama3:latest``
        and answers to either)."""
        return self.listed is not None and name not in self.listed and f"{name}:latest" not in self.listed


class ChatModel(Protocol):
    async def reply(self, messages: Sequence[ChatMessage], on_text: TextSink | None = None) -> ModelReply:
        """Produce a reply; each new piece of text is passed to ``on_text`` as it arrives.

        Raises a ``bots.errors.ModelError`` subclass when the call fails after its retries.
        """
        ...

    async def check(self) -> ServerCheck:
        """Reach the server once and describe what answered (for ``chatbridge check``)."""
        ...

    async def aclose(self) -> None: ...
