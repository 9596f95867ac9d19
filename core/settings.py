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
    system_prompt: str = Field("You are a helpful assistant.", description="always sent first, before the conversation")
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
