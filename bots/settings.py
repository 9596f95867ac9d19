"""The ``model:`` section of the configuration, and the ``models:`` entries that differ from it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Positive = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Retries = Annotated[int, Field(ge=0, le=10)]
Price = Annotated[float, Field(ge=0.0, description="USD per million tokens, for /usage")]


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="the API root of any OpenAI-compatible server, usually ending in /v1 (Ollama: http://localhost:11434/v1)",
    )
    api_key: SecretStr = Field(SecretStr(""), description="sent as a Bearer token; empty sends no Authorization header")
    name: str = Field("gpt-4o-mini", description="the model name sent to the server")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    max_tokens: int = Field(1024, gt=0, description="longest reply, in tokens; a reply cut there says so")
    timeout_s: float = Field(60.0, gt=0, description="seconds for one attempt, the whole streamed reply included")
    max_retries: int = Field(
        3, ge=0, le=10, description="extra attempts after a 429, a 5xx, a timeout or a refused connection"
    )
    retry_backoff_s: float = Field(
        0.5,
        gt=0,
        description="seconds before the first retry; doubles each retry, with jitter; a Retry-After header wins",
    )
    stream: bool = Field(True, description="stream replies and show them as they are written")
    max_connections: int = Field(
        1000, ge=1, description="concurrent requests to the model server; more wait for a free one"
    )
    vision: bool = Field(False, description="accepts image parts; declared, never guessed from the name")
    tools: bool = Field(False, description="accepts tools and tool calls; declared, never guessed from the name")
    context_tokens: Positive | None = Field(None, description="the model's own window; caps context.max_tokens")
    price_in_per_mtok: Price = Field(0.0, description="USD per million prompt tokens, for /usage and the cost metrics")
    price_out_per_mtok: Price = Field(0.0, description="USD per million completion tokens")


def _inherited(key: str) -> Any:
    """A ``models.<name>`` key: described once, as the ``model`` key it stands in for."""
    return Field(None, description=f"as model.{key}; unset: model's")


class ModelOverrides(BaseModel):
    """A ``models.<name>`` entry: the keys of ``model``, each optional; what is left out is ``model``'s.

    One exception, for the key's sake: an entry with its own ``base_url`` does not inherit
    ``model.api_key``, so the default provider's key is never sent to another server. Its key comes
    from ``CHATBRIDGE_MODELS__<NAME>__API_KEY`` (or the file), or it sends none.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = _inherited("base_url")
    api_key: SecretStr | None = Field(
        None, description="as model.api_key; unset: model's, or none when this entry has its own base_url"
    )
    name: str | None = _inherited("name")
    temperature: Temperature | None = _inherited("temperature")
    max_tokens: Positive | None = _inherited("max_tokens")
    timeout_s: PositiveSeconds | None = _inherited("timeout_s")
    max_retries: Retries | None = _inherited("max_retries")
    retry_backoff_s: PositiveSeconds | None = _inherited("retry_backoff_s")
    stream: bool | None = _inherited("stream")
    max_connections: Positive | None = _inherited("max_connections")
    vision: bool | None = _inherited("vision")
    tools: bool | None = _inherited("tools")
    context_tokens: Positive | None = _inherited("context_tokens")
    price_in_per_mtok: Price | None = _inherited("price_in_per_mtok")
    price_out_per_mtok: Price | None = _inherited("price_out_per_mtok")

    def applied_to(self, default: ModelSettings) -> ModelSettings:
        """The whole settings of this model: its own keys over ``default``'s."""
        own = self.model_dump(exclude_none=True)
        if "base_url" in own and "api_key" not in own:
            own["api_key"] = SecretStr("")
        return default.model_copy(update=own)
