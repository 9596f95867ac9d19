"""What the engine tells an observer about each handled message, for metrics.

The engine reports one ``MessageRecord`` per call of ``Engine.handle``. What is done with it
(Prometheus counters, tests) lives outside ``core``: this module knows neither HTTP nor any
metrics library, and the default observer does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as the engine finished with it.

    ``error`` names the kind of failure (a model error's ``kind``, or the engine's own) or is None. ``model_s`` is the time
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
    model: str | None = None
    """The configured model's name (``default`` or a ``models`` key) when one was called."""
    cost_usd: float = 0.0
    """From the model's declared prices."""
    limit: str | None = None
    """What refused the message: ``rate``, or the ``user``, ``chat`` or ``total`` token budget."""


class Observer(Protocol):
    def message_handled(self, record: MessageRecord) -> None:
        """Called once per handled message, after the reply; must be quick and must not raise."""
        ...


class NullObserver:
    def message_handled(self, record: MessageRecord) -> None:
        return None


NULL_OBSERVER = NullObserver()
