"""The ``adapters.slack`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.kit import AdapterSection, required_when_enabled


class SlackSettings(AdapterSection):
    bot_token: SecretStr = Field(SecretStr(""), description="the Bot User OAuth Token, xoxb-...")
    app_token: SecretStr = Field(
        SecretStr(""),
        description="the app-level token, xapp-... with the connections:write scope; required in socket mode",
    )
    signing_secret: SecretStr = Field(
        SecretStr(""), description="verifies the requests to /slack/events; required in http mode"
    )
    mode: Literal["socket", "http"] = Field(
        "socket", description="socket: Socket Mode, a WebSocket the bridge opens; http: Slack posts to /slack/events"
    )
    api_base_url: str = Field("", description="Web API base URL (a proxy); empty: https://slack.com/api/")
    thread_follow: bool = Field(
        True, description="later messages in a thread the bot answered in trigger without a mention"
    )
    command: str = Field("/chatbridge", pattern=r"^/[\w-]+$", description="the slash command created in the Slack app")

    _credentials = field_validator("bot_token")(required_when_enabled)

    @model_validator(mode="after")
    def _mode_credentials(self) -> SlackSettings:
        """Each mode needs its own secret: the app-level token to open sockets, or the signing secret to verify requests."""
        needed = "app_token" if self.mode == "socket" else "signing_secret"
        if self.enabled and not getattr(self, needed).get_secret_value():
            raise ValueError(f"{needed}: required when the adapter is enabled in {self.mode} mode")
        return self
