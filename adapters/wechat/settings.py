"""The ``adapters.wechat`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled
from adapters.weixin.crypto import aes_key


class WeChatSettings(AdapterSection):
    app_id: str = Field("", description="the Official Account's AppID (开发者ID), wx…")
    app_secret: SecretStr = Field(
        SecretStr(""), description="the AppSecret; needed for async_reply: customer_service (access tokens)"
    )
    token: SecretStr = Field(SecretStr(""), description="the Token set under 服务器配置 (server configuration)")
    encoding_aes_key: SecretStr = Field(
        SecretStr(""), description="the EncodingAESKey, for safe mode (安全模式); empty = plaintext mode"
    )
    api_base_url: str = Field("", description="empty = https://api.weixin.qq.com")
    async_reply: Literal["customer_service", "on_next_message"] = Field(
        "customer_service",
        description="how an answer later than WeChat's 15 seconds goes out: the customer-service API, "
        "or with the user's next message (accounts without that API)",
    )

    _token_required = field_validator("token")(required_when_enabled)

    @field_validator("encoding_aes_key")
    @classmethod
    def _a_real_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            aes_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _credentials(self) -> WeChatSettings:
        """The app id is the receive id of safe mode and names the account; the secret is only
        needed for API calls, which ``on_next_message`` does without."""
        if not self.enabled:
            return self
        if not self.app_id:
            raise ValueError("app_id: required when the adapter is enabled")
        if self.async_reply == "customer_service" and not self.app_secret.get_secret_value():
            raise ValueError("app_secret: required when the adapter is enabled with async_reply: customer_service")
        return self
