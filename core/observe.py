"""What the engine tells an observer about each handled message, for metrics.

The engine reports one ``MessageRecord`` per call of ``Engine.handle``. What is done with it
(Prometheus counters, tests) lives outside ``core``: this module knows neither HTTP nor any
metrics library, and the default observer does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bots.errors import ContextTooLong, ModelAccessDenied, ModelError, ModelRateLimited, ModelTimeout


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as the engine finished with it.

    ``error`` names the kind of failure (see ``error_kind``) or is None. ``model_s`` is the time
    spent in the model call, retries included, and ``first_token_s`` the time until its first
    piece of text reached the user; both are None when the model was not called (or sent no text).
    """

    platform: str
    chat_id: str
    session: str
    outcome: str
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    model_s: float | None = None
    first_token_s: float | None = None


class Observer(Protocol):
    def message_handled(self, record: MessageRecord) -> None:
        """Called once per handled message, after the reply; must be quick and must not raise."""
        ...


class NullObserver:
    def message_handled(self, record: MessageRecord) -> None:
        return None


NULL_OBSERVER = NullObserver()

_MODEL_ERROR_KINDS: dict[type[ModelError], str] = {
    ModelRateLimited: "model_rate_limited",
    ModelAccessDenied: "model_access_denied",
    ModelTimeout: "model_timeout",
    ContextTooLong: "context_too_long",
}


def model_error_kind(error: ModelError) -> str:
    """A short, fixed label for a model failure (also used for retries)."""
    for kind, label in _MODEL_ERROR_KINDS.items():
        if isinstance(error, kind):
            return label
    return "model_unavailable"
