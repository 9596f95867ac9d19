"""The configuration sections the engine itself reads (``bot``, ``context``, ``session``, ``access``,
``limits``, ``store``).

They are plain pydantic models; the file/environment loading lives with the command line in
``chatbridge.config`` so that this room stays free of process concerns.
"""

from __future__ import annotations

import re
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.identities import identity_problem

NAME_SHAPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""Model and persona names: typed after /model and /persona, and part of environment variable names."""
DEFAULT_NAME = "default"
"""The name of ``model`` among the models and of ``bot.system_prompt`` among the personas."""


def _check_identities(values: list[str]) -> list[str]:
    for value in values:
        problem = identity_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_names(names: list[str], what: str) -> None:
    """Names of ``models`` or ``personas`` entries: lower case, short, and never ``default``."""
    for name in names:
        if name == DEFAULT_NAME:
            raise ValueError(f"{name!r} is the name of the {what} configured outside this section")
        if NAME_SHAPE.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not a usable name: 1-32 of a-z 0-9 _ -, starting with a letter or digit")


class GroupSettings(StrEnum):
    """Who may switch a group's model and persona: the bridge's admins, or anyone allowed."""

    ADMINS = "admins"
    EVERYONE = "everyone"


class BotSettings(_Section):
    system_prompt: str = Field(
        "You are a helpful assistant.", description='the persona "default": always sent first, before the conversation'
    )
    reset_commands: list[str] = Field(
        default_factory=lambda: ["/reset", "/new"],
        description="commands that clear the caller's session; /reset and /new work whatever this says",
    )
    group_prefixes: list[str] = Field(
        default_factory=list,
        description='prefixes that trigger an answer in groups, matched as a whole word, e.g. ["!ai"]; '
        "a mention, a reply to the bot and a command always do",
    )
    max_input_chars: int = Field(16000, gt=0, description="longer messages get a short refusal")
    group_settings: GroupSettings = Field(
        GroupSettings.ADMINS, description="who may use /model and /persona in groups: admins | everyone"
    )
    max_instructions_chars: int = Field(1500, gt=0, description="longest /instructions text a user may store")


class PersonaSettings(_Section):
    """A ``personas.<name>`` entry: the system prompt, and optionally the model and temperature it uses."""

    system_prompt: str = Field(description="the system message of chats that use this persona")
    model: str | None = Field(None, description="a name from models (or default); a chat's /model choice wins")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="empty = the model's")


class TokenizerChoice(StrEnum):
    AUTO = "auto"
    TIKTOKEN = "tiktoken"
    ESTIMATE = "estimate"


class ContextSettings(_Section):
    max_tokens: int = Field(
        4000, gt=0, description="token budget of the whole prompt: system prompt, history and the new message"
    )
    max_messages: int = Field(
        40, ge=1, description="most messages sent in one request, the new one included, the system prompt aside"
    )
    tokenizer: TokenizerChoice = Field(
        TokenizerChoice.AUTO,
        description="auto: tiktoken when its vocabulary loads, else an estimate; tiktoken: the same, with a warning when it "
        "cannot load; estimate: never load tiktoken",
    )


class SessionScope(StrEnum):
    USER = "user"
    CHAT = "chat"
    THREAD = "thread"


class SessionSettings(_Section):
    timeout_s: float = Field(3600.0, gt=0, description="idle seconds after which a session starts fresh")
    scope: SessionScope = Field(
        SessionScope.CHAT,
        description="sessions in groups: one per chat, per thread (or forum topic), or per user in each chat; "
        "a private chat is always one session",
    )


class OnDenied(StrEnum):
    IGNORE = "ignore"
    REPLY = "reply"


class AccessSettings(_Section):
    admins: list[str] = Field(
        default_factory=list, description='identities (e.g. "telegram:123") always allowed, and allowed /admin'
    )
    allow_users: list[str] = Field(
        default_factory=list, description="identities allowed to use the bot; empty: everyone"
    )
    allow_chats: list[str] = Field(
        default_factory=list, description="group chats the bot answers in; empty: every group chat"
    )
    deny_users: list[str] = Field(
        default_factory=list, description="identities never answered, whatever the allow lists say"
    )
    on_denied: OnDenied = Field(
        OnDenied.IGNORE, description="ignore: silence; reply: tell a denied user so once a day (/id still answers)"
    )

    _identities = field_validator("admins", "allow_users", "allow_chats", "deny_users")(_check_identities)


class LimitsSettings(_Section):
    user_messages_per_minute: int = Field(
        20, ge=0, description="messages to the model per user per minute (fixed windows); 0: unlimited"
    )
    user_tokens_per_day: int = Field(0, ge=0, description="tokens one user may use a day; 0 = unlimited")
    chat_tokens_per_day: int = Field(0, ge=0, description="tokens one chat may use a day; 0 = unlimited")
    total_tokens_per_day: int = Field(0, ge=0, description="tokens the whole bridge may use a day; 0 = unlimited")
    timezone: str = Field("UTC", description="where a budget day starts and ends, e.g. Europe/Berlin")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name (e.g. UTC, Europe/Berlin, America/New_York)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def any_budget(self) -> bool:
        return bool(self.user_tokens_per_day or self.chat_tokens_per_day or self.total_tokens_per_day)


class StoreBackend(StrEnum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    REDIS = "redis"


class StoreSettings(_Section):
    backend: StoreBackend = Field(
        StoreBackend.SQLITE,
        description="memory: nothing kept; sqlite: one file, one process; redis: several processes share one Redis",
    )
    sqlite_path: str = Field("chatbridge.db", description="the SQLite file (WAL mode); one `chatbridge run` per file")
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="redis://, rediss:// (TLS) or unix://, user:password@ allowed; redis+sentinel:// and "
        "redis+cluster:// too (docs: architecture, Sentinel and Cluster)",
    )
    redis_key_prefix: str = Field(
        "chatbridge:", description="every Redis key starts with it; bridges sharing one Redis need different prefixes"
    )
    redis_max_connections: int = Field(
        100, gt=0, description="Redis connections per process; more concurrent commands wait for a free one"
    )
    lease_s: float = Field(
        15.0,
        gt=0,
        description="seconds a session stays held after its holder stops renewing (a killed process); "
        "renewed every third of it",
    )
