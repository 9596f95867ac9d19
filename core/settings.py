"""The configuration sections the engine itself reads (``bot``, ``context``, ``session``, ``access``,
``limits``, ``store``).

They are plain pydantic models; the file/environment loading lives with the command line in
``chatbridge.config`` so that this room stays free of process concerns.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.identities import identity_problem


def _check_identities(values: list[str]) -> list[str]:
    for value in values:
        problem = identity_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BotSettings(_Section):
    system_prompt: str = "You are a helpful assistant."
    reset_commands: list[str] = Field(default_factory=lambda: ["/reset", "/new"])
    group_prefixes: list[str] = Field(default_factory=list, description='e.g. ["!ai"]')
    max_input_chars: int = Field(16000, gt=0, description="longer messages get a short refusal")


class TokenizerChoice(StrEnum):
    AUTO = "auto"
    TIKTOKEN = "tiktoken"
    ESTIMATE = "estimate"


class ContextSettings(_Section):
    max_tokens: int = Field(4000, gt=0, description="prompt budget sent to the model")
    max_messages: int = Field(40, ge=1)
    tokenizer: TokenizerChoice = TokenizerChoice.AUTO


class SessionScope(StrEnum):
    USER = "user"
    CHAT = "chat"
    THREAD = "thread"


class SessionSettings(_Section):
    timeout_s: float = Field(3600.0, gt=0, description="idle time after which context is forgotten")
    scope: SessionScope = SessionScope.CHAT


class OnDenied(StrEnum):
    IGNORE = "ignore"
    REPLY = "reply"


class AccessSettings(_Section):
    admins: list[str] = Field(default_factory=list)
    allow_users: list[str] = Field(default_factory=list, description="empty = everyone")
    allow_chats: list[str] = Field(default_factory=list, description="empty = every chat")
    deny_users: list[str] = Field(default_factory=list)
    on_denied: OnDenied = OnDenied.IGNORE

    _identities = field_validator("admins", "allow_users", "allow_chats", "deny_users")(_check_identities)


class LimitsSettings(_Section):
    user_messages_per_minute: int = Field(20, ge=0, description="0 = unlimited")


class StoreBackend(StrEnum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    REDIS = "redis"


class StoreSettings(_Section):
    backend: StoreBackend = StoreBackend.SQLITE
    sqlite_path: str = "chatbridge.db"
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="redis:// or rediss:// (user:password@ allowed); redis+sentinel:// and redis+cluster:// too",
    )
    redis_key_prefix: str = Field(
        "chatbridge:", description="every key starts with it; one Redis can serve several bridges"
    )
    redis_max_connections: int = Field(
        100, gt=0, description="per process; more concurrent commands wait for a free one"
    )
    lease_s: float = Field(
        15.0,
        gt=0,
        description="a session's holder renews its lease every third of this; a holder that died frees it after this",
    )
