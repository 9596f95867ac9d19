"""The ``model:`` section of the configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("https://api.openai.com/v1", description="any OpenAI-compatible server")
    api_key: SecretStr = Field(SecretStr(""), description="set through CHATBRIDGE_MODEL__API_KEY")
    name: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, gt=0, description="per reply")
    timeout_s: float = Field(60.0, gt=0, description="deadline for one attempt, streaming included")
    max_retries: int = Field(3, ge=0, le=10)
    retry_backoff_s: float = Field(0.5, gt=0, description="first retry delay; doubles each retry")
    stream: bool = True
    max_connections: int = Field(
        1000, ge=1, description="concurrent requests to the model server; more wait for a free one"
    )
