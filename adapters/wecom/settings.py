"""The ``adapters.wecom`` section."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled
from adapters.weixin.crypto import aes_key


class WeComSettings(AdapterSection):
    corp_id: str = Field("", description="the corp id (企业ID), ww…; the receive id of every callback")
    corp_secret: SecretStr = Field(SecretStr(""), description="the application's Secret, for access tokens")
    agent_id: int = Field(0, ge=0, description="the application's AgentId")
    token: SecretStr = Field(SecretStr(""), description="the Token of the application's API receiving settings")
    encoding_aes_key: SecretStr = Field(SecretStr(""), description="the EncodingAESKey (WeCom always encrypts)")
    api_base_url: str = Field("", description="empty = https://qyapi.weixin.qq.com")

    _required = field_validator("corp_secret", "token", "encoding_aes_key")(required_when_enabled)

    @field_validator("encoding_aes_key")
    @classmethod
    def _a_real_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            aes_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _application(self) -> WeComSettings:
        if self.enabled and not self.corp_id:
            raise ValueError("corp_id: required when the adapter is enabled")
        if self.enabled and not self.agent_id:
            raise ValueError("agent_id: required when the adapter is enabled (the application's AgentId)")
        return self
