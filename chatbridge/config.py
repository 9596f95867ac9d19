"""The whole configuration: one pydantic-settings model read from YAML and overridden by the environment.

Precedence, highest first: ``CHATBRIDGE_...`` environment variables (``__`` nests, as in
``CHATBRIDGE_MODEL__API_KEY``), then the YAML file, then the defaults written here, which
``config.example.yaml`` documents key by key. Every section forbids unknown keys, so a typo stops
start-up instead of being silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bots.settings import ModelSettings
from core.settings import (
    AccessSettings,
    BotSettings,
    ContextSettings,
    LimitsSettings,
    ServerSettings,
    SessionSettings,
    StoreSettings,
)

DEFAULT_CONFIG_PATH = Path("config.yaml")


class ConfigError(Exception):
    """One line that names the offending key and what is wrong with it."""


def _required_when_enabled(value: SecretStr, info: ValidationInfo) -> SecretStr:
    """An enabled adapter without its credentials would only fail later, and less clearly."""
    if info.data.get("enabled") and not value.get_secret_value():
        raise ValueError("required when the adapter is enabled")
    return value


class _AdapterSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = False


class ConsoleSettings(_AdapterSection):
    user_is_admin: bool = Field(True, description="console:local may use /admin commands")


class TelegramSettings(_AdapterSection):
    token: SecretStr = SecretStr("")
    mode: Literal["polling", "webhook"] = "polling"
    base_url: str = ""
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")

    _credentials = field_validator("token")(_required_when_enabled)

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


class DiscordSettings(_AdapterSection):
    token: SecretStr = SecretStr("")
    api_base_url: str = ""
    gateway_url: str = ""
    auto_thread: bool = Field(False, description="answer a new conversation in a channel in a thread opened on it")
    shard_count: int | None = Field(None, ge=1, description="null: one unsharded connection")
    shard_ids: list[int] = Field(default_factory=list, description="the shards this process runs; empty: all")

    _credentials = field_validator("token")(_required_when_enabled)

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


class SlackSettings(_AdapterSection):
    bot_token: SecretStr = SecretStr("")
    app_token: SecretStr = SecretStr("")
    signing_secret: SecretStr = SecretStr("")
    mode: Literal["socket", "http"] = "socket"
    api_base_url: str = ""
    thread_follow: bool = Field(
        True, description="later messages in a thread the bot answered in trigger without a mention"
    )
    command: str = Field("/chatbridge", pattern=r"^/[\w-]+$", description="the slash command created in the Slack app")

    _credentials = field_validator("bot_token")(_required_when_enabled)

    @model_validator(mode="after")
    def _mode_credentials(self) -> SlackSettings:
        """Each mode needs its own secret: the app-level token to open sockets, or the signing secret to verify requests."""
        needed = "app_token" if self.mode == "socket" else "signing_secret"
        if self.enabled and not getattr(self, needed).get_secret_value():
            raise ValueError(f"{needed}: required when the adapter is enabled in {self.mode} mode")
        return self


class AdaptersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    console: ConsoleSettings = ConsoleSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    slack: SlackSettings = SlackSettings()


class LogSettings(BaseModel):
    """How the bridge logs; see ``chatbridge.logging_setup``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = Field("text", description="text: readable lines; json: one JSON object per line")
    level: Literal["debug", "info", "warning", "error"] = "info"
    content: bool = Field(False, description="put message and reply texts into the per-message log line")


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATBRIDGE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    model: ModelSettings = ModelSettings()
    bot: BotSettings = BotSettings()
    context: ContextSettings = ContextSettings()
    session: SessionSettings = SessionSettings()
    access: AccessSettings = AccessSettings()
    limits: LimitsSettings = LimitsSettings()
    store: StoreSettings = StoreSettings()
    adapters: AdaptersSettings = AdaptersSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init keyword arguments; listing the environment first makes
        # CHATBRIDGE_* variables win over the file, which is where secrets are meant to come from.
        return (env_settings, init_settings)


def load_config(path: Path | None = None) -> Config:
    """Read and validate the configuration, raising ``ConfigError`` with a single readable line.

    Without an explicit path a missing ``config.yaml`` is fine (defaults plus environment); a path
    that was asked for must exist.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    document = _read_yaml(path, required=explicit)
    try:
        return Config(**document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _read_yaml(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, bot:, ...)")
    return document


def _describe(exc: ValidationError, path: Path) -> str:
    """Name the first bad key in dotted form; the offending value is left out since it may be a secret."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    message = message.removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{key}: {message} (in {path} or CHATBRIDGE_* environment){suffix}"
