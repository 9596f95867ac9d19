"""The ``adapters.discord`` section."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled


class DiscordSettings(AdapterSection):
    token: SecretStr = Field(SecretStr(""), description="the bot token (Developer Portal → Bot → Token)")
    api_base_url: str = Field(
        "",
        description="REST API base with its version (a proxy: https://proxy.example/api/v10); empty: https://discord.com/api/v10",
    )
    gateway_url: str = Field("", description="gateway WebSocket URL; empty: wss://gateway.discord.gg/")
    auto_thread: bool = Field(False, description="answer a message in a text channel in a new thread opened on it")
    shard_count: int | None = Field(
        None, ge=1, description="null: one unsharded connection; a number: the bot's total shard count"
    )
    shard_ids: list[int] = Field(
        default_factory=list, description="the shards this process runs, each below shard_count; empty: all of them"
    )

    _credentials = field_validator("token")(required_when_enabled)

    @model_validator(mode="after")
    def _shards_in_range(self) -> DiscordSettings:
        """Shard ids only mean something against a total, and a typo would silently drop guilds."""
        if not self.shard_ids:
            return self
        if self.shard_count is None:
            raise ValueError("shard_ids: needs shard_count")
        if len(set(self.shard_ids)) != len(self.shard_ids) or not all(
            0 <= i < self.shard_count for i in self.shard_ids
        ):
            raise ValueError(f"shard_ids: must be distinct numbers from 0 to {self.shard_count - 1}")
        return self
