"""The ``adapters.dingtalk`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled


class DingTalkSettings(AdapterSection):
    client_id: str = Field("", description="the app's Client ID (AppKey); also its robot code")
    client_secret: SecretStr = Field(
        SecretStr(""), description="the app's Client Secret (AppSecret): signs HTTP callbacks, fetches access tokens"
    )
    mode: Literal["stream", "http"] = Field(
        "stream",
        description="stream: a WebSocket the bridge opens, no public URL; http: DingTalk posts to /dingtalk/events",
    )
    api_base_url: str = Field("", description="empty = https://api.dingtalk.com; a proxy or fake: its base URL")

    _credentials = field_validator("client_secret")(required_when_enabled)

    @model_validator(mode="after")
    def _client_id_when_enabled(self) -> DingTalkSettings:
        """The id names the app in every call (token, stream connection, robot code)."""
        if self.enabled and not self.client_id:
            raise ValueError("client_id: required when the adapter is enabled")
        return self
