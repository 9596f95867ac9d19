"""The ``model:`` section of the configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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
