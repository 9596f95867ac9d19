"""The ``model:`` section of the configuration, and the ``models:`` entries that differ from it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Positive = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Retries = Annotated[int, Field(ge=0, le=10)]
Price = Annotated[float, Field(ge=0.0, description="USD per million tokens, for /usage")]


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("https://api.openai.com/v1", description="any OpenAI-compatible server")
    api_key: SecretStr = Field(SecretStr(""), description="set through CHATBRIDGE_MODEL__API_KEY")
    name: str = "gpt-4o-mini"
    temperature: Temperature = 0.7
    max_tokens: Positive = Field(1024, description="per reply")
    timeout_s: PositiveSeconds = Field(60.0, description="deadline for one attempt, streaming included")
    max_retries: Retries = 3
    retry_backoff_s: PositiveSeconds = Field(0.5, description="first retry delay; doubles each retry")
    stream: bool = True
    max_connections: Positive = Field(1000, description="concurrent requests to the model server; more wait")
    vision: bool = Field(False, description="accepts image parts; declared, never guessed from the name")
    tools: bool = Field(False, description="accepts tools and tool calls; declared, never guessed from the name")
    context_tokens: Positive | None = Field(None, description="the model's own window; caps context.max_tokens")
    price_in_per_mtok: Price = 0.0
    price_out_per_mtok: Price = 0.0


class ModelOverrides(BaseModel):
    """A ``models.<name>`` entry: the keys of ``model``, each optional; what is left out is ``model``'s.

    One exception, for the key's sake: an entry with its own ``base_url`` does not inherit
    ``model.api_key``, so the default provider's key is never sent to another server. Its key comes
    from ``CHATBRIDGE_MODELS__<NAME>__API_KEY`` (or the file), or it sends none.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: SecretStr | None = None
    name: str | None = None
    temperature: Temperature | None = None
    max_tokens: Positive | None = None
    timeout_s: PositiveSeconds | None = None
    max_retries: Retries | None = None
    retry_backoff_s: PositiveSeconds | None = None
    stream: bool | None = None
    max_connections: Positive | None = None
    vision: bool | None = None
    tools: bool | None = None
    context_tokens: Positive | None = None
    price_in_per_mtok: Price | None = None
    price_out_per_mtok: Price | None = None

    def applied_to(self, default: ModelSettings) -> ModelSettings:
        """The whole settings of this model: its own keys over ``default``'s."""
        own = self.model_dump(exclude_none=True)
        if "base_url" in own and "api_key" not in own:
            own["api_key"] = SecretStr("")
        return default.model_copy(update=own)
