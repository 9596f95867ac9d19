"""The warning for a bridge anyone may use with nothing to bound what it spends (design section 9):
logged at start-up and shown by ``chatbridge check``."""

from __future__ import annotations

from chatbridge.config import Config

OPEN_WITHOUT_BUDGET = (
    "anyone may use this bot (access.allow_users and access.allow_chats are empty) and no token budget is set"
    " (limits.user_tokens_per_day, chat_tokens_per_day, total_tokens_per_day): its model spending has no bound"
)


def spending_warning(config: Config) -> str | None:
    """None when an allow list or a budget bounds the spending, or when only the terminal is enabled
    (its one user is whoever runs the bridge). Runtime budgets set with ``/admin budget`` are not
    looked at: they live in the store, and this is a check of the configuration."""
    access = config.access
    if access.allow_users or access.allow_chats or config.limits.any_budget:
        return None
    adapters = config.adapters
    if not any(getattr(adapters, name).enabled for name in type(adapters).model_fields if name != "console"):
        return None
    return OPEN_WITHOUT_BUDGET
