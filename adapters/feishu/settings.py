"""The ``adapters.feishu`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled


class FeishuSettings(AdapterSection):
    app_id: str = Field("", description="the app's App ID (cli_...)")
    app_secret: SecretStr = Field(SecretStr(""), description="the app's App Secret, for the tenant access token")
    verification_token: SecretStr = Field(
        SecretStr(""), description="the event subscription's Verification Token: every event must carry it"
    )
    encrypt_key: SecretStr = Field(
        SecretStr(""), description="set it in the console too: events then arrive encrypted and signed"
    )
    mode: Literal["http"] = Field(
        "http",
        description="events on /feishu/events; the long-connection mode is not available (docs/platforms/feishu.md)",
    )
    api_base_url: str = Field(
        "", description="empty = https://open.feishu.cn; https://open.larksuite.com for Lark; a proxy or fake"
    )

    _credentials = field_validator("app_secret", "verification_token")(required_when_enabled)

    @model_validator(mode="after")
    def _app_id_when_enabled(self) -> FeishuSettings:
        if self.enabled and not self.app_id:
            raise ValueError("app_id: required when the adapter is enabled")
        return self
