"""The ``adapters.telegram`` section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled


class TelegramSettings(AdapterSection):
    token: SecretStr = Field(SecretStr(""), description="the bot token from @BotFather")
    mode: Literal["polling", "webhook"] = Field(
        "polling", description="polling: the bridge asks Telegram; webhook: Telegram posts to /telegram/webhook"
    )
    base_url: str = Field(
        "",
        description="Bot API base ending in /bot, for a self-hosted Bot API server or a proxy "
        "(http://host:8081/bot); empty: https://api.telegram.org/bot",
    )
    webhook_url: str = Field("", description="webhook mode: the public https URL that reaches /telegram/webhook")
    webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="webhook mode: the secret Telegram sends in X-Telegram-Bot-Api-Secret-Token, "
        "1-256 characters of A-Z a-z 0-9 _ -",
    )

    _credentials = field_validator("token")(required_when_enabled)

    @model_validator(mode="after")
    def _webhook_settings(self) -> TelegramSettings:
        """Webhook mode needs the public URL and a secret Telegram accepts (1-256 of A-Z a-z 0-9 _ -),
        or it would fail only when Telegram first calls, and any caller could post fake updates."""
        if not self.enabled or self.mode != "webhook":
            return self
        if not self.webhook_url.startswith(("https://", "http://")):
            raise ValueError("webhook_url: the public URL of /telegram/webhook is required in webhook mode")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", self.webhook_secret.get_secret_value()):
            raise ValueError("webhook_secret: required in webhook mode, 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self
