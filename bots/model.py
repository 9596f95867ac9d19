"""The contract between the engine and whatever produces replies.

``bots`` knows messages, not chats: a ``ChatModel`` takes a list of role/content messages and
streams text back through a callback, then returns the whole reply with the server's usage figures
and the tool calls it asks for (``bots.tools`` reads and writes those).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from bots.parts import ContentPart

MessageRole = Literal["system", "user", "assistant", "tool"]


class ToolCallFunction(TypedDict):
    name: str
    arguments: str


class ToolCallEntry(TypedDict):
    """One entry of an assistant message's ``tool_calls``, as the API takes it back."""

    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(TypedDict):
    """One message of a request, in the shape of the OpenAI wire format: a request's window is
    rebuilt from dozens of these for every message, and this way they go into the body as they are.

    An assistant message that asked for tools carries ``tool_calls``; each result answers one of
    them as a ``tool`` message naming its ``tool_call_id`` (``bots.tools`` builds both)."""

    role: MessageRole
    content: str | list[ContentPart]
    """A string, or the text and pictures of a user message as parts (``bots.parts``)."""
    tool_calls: NotRequired[list[ToolCallEntry]]
    tool_call_id: NotRequired[str]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool as the model is offered it. ``parameters`` is a JSON Schema of an object.

    ``source`` names where the tool comes from (an MCP server's name, or ``builtin``), for access
    rules, metrics and ``chatbridge check``; ``read_only`` is what decides whether the user is asked
    to confirm a call (MCP's ``readOnlyHint``; built-in tools say it themselves).
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    read_only: bool = False
    source: str = "builtin"

    def request_entry(self) -> dict[str, Any]:
        """The tool in the shape of a request's ``tools`` list."""
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call a reply asks for. ``arguments_json`` is the text as the model wrote it (it goes back
    verbatim in the assistant message); ``arguments`` is it parsed, empty when it could not be, and
    then ``argument_error`` says why."""

    id: str
    name: str
    arguments_json: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    argument_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """A complete reply. ``finish_reason == "length"`` means the reply was cut at ``max_tokens``.

    ``tool_calls`` holds the calls the model asks for (``finish_reason`` is then usually
    ``"tool_calls"``, but some servers say ``"stop"``: the calls are what counts)."""

    text: str
    finish_reason: str | None
    usage: Usage | None
    tool_calls: tuple[ToolCall, ...] = ()


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
    async def reply(
        self,
        messages: Sequence[ChatMessage],
        on_text: TextSink | None = None,
        *,
        tools: Sequence[ToolSpec] = (),
        temperature: float | None = None,
    ) -> ModelReply:
        """Produce a reply; each new piece of text is passed to ``on_text`` as it arrives. With
        ``tools`` the model may answer with ``tool_calls`` instead of (or besides) text.
        ``temperature`` replaces the model's configured one for this reply (a persona's).

        Raises a ``bots.errors.ModelError`` subclass when the call fails after its retries.
        """
        ...

    async def check(self) -> ServerCheck:
        """Reach the server once and describe what answered (for ``chatbridge check``)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What a configured model is declared to do and to cost. Declared in the configuration, never
    guessed from a model's name: a name says nothing reliable about a self-hosted model."""

    name: str
    """The bridge's name for it (``default``, or its key under ``models``)."""
    served_name: str
    """The name the server knows it by (``model.name``)."""
    vision: bool = False
    tools: bool = False
    context_tokens: int | None = None
    reply_tokens: int = 1024
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars, from the declared prices."""
        return (prompt_tokens * self.price_in_per_mtok + completion_tokens * self.price_out_per_mtok) / 1_000_000

    def prompt_budget(self, configured: int) -> int:
        """``context.max_tokens``, capped so the prompt and the longest reply fit the model's window."""
        if self.context_tokens is None:
            return configured
        room = self.context_tokens - self.reply_tokens
        return max(min(configured, room if room > 0 else self.context_tokens), 1)


class ModelCatalog(Protocol):
    """The configured models by name; the first of ``names`` is the default."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def card(self, name: str) -> ModelCard: ...

    def client(self, name: str) -> ChatModel: ...
