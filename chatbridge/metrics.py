"""Prometheus metrics of one bridge, fed by the engine's observer hook and the model client's retries.

Each ``BridgeMetrics`` has its own ``CollectorRegistry`` (not prometheus-client's global one), so
two bridges in one process, or two tests, never share counters. Labels are bounded sets only
(platform, outcome, error kind, token direction, the configured models' names, the limit that refused
a message); chat and user ids never become labels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from bots.errors import ModelError
from core.observe import MessageRecord
from core.store import Store

log = logging.getLogger("chatbridge.metrics")

SESSIONS_REFRESH_S = 15.0
"""Active sessions are counted from the store at most this often, however often Prometheus scrapes."""
SESSIONS_TIMEOUT_S = 2.0
"""A scrape never waits longer than this for the store; the last count is served instead."""

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
LIMITS = ("rate", "user", "chat", "total")
"""What refuses a message: the per-user message rate, or the user's, the chat's or the bridge's token budget."""
_ERROR_KINDS = (
    "model_rate_limited",
    "model_access_denied",
    "model_timeout",
    "model_unavailable",
    "context_too_long",
    "empty_reply",
    "stale_lease",
    "store_unavailable",
    "internal",
)


class BridgeMetrics:
    """Implements ``core.observe.Observer``; ``model_retry`` is the model client's ``on_retry``."""

    def __init__(
        self,
        *,
        session_timeout_s: float,
        platforms: Iterable[str] = (),
        models: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        sessions_refresh_s: float = SESSIONS_REFRESH_S,
    ) -> None:
        self.registry = CollectorRegistry()
        self._session_timeout_s = session_timeout_s
        self._sessions_refresh_s = sessions_refresh_s
        self._clock = clock
        self._sessions_counted_at = float("-inf")
        self._sessions_lock = asyncio.Lock()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.received = Counter(
            "chatbridge_messages_received", "Messages handed to the engine.", ["platform"], registry=r
        )
        self.answered = Counter(
            "chatbridge_messages_answered", "Messages answered by the model.", ["platform"], registry=r
        )
        self.denied = Counter(
            "chatbridge_messages_denied", "Messages refused by the access lists.", ["platform"], registry=r
        )
        self.rate_limited = Counter(
            "chatbridge_messages_rate_limited", "Messages refused by the per-user rate limit.", ["platform"], registry=r
        )
        self.outcomes = Counter(
            "chatbridge_messages_handled",
            "Messages by what became of them (engine outcome).",
            ["platform", "outcome"],
            registry=r,
        )
        self.errors = Counter("chatbridge_errors", "Failed messages by kind of failure.", ["kind"], registry=r)
        self.handling = Histogram(
            "chatbridge_message_duration_seconds",
            "Time from receiving a message to finishing with it.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "chatbridge_model_latency_seconds",
            "Duration of model calls, retries included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "chatbridge_model_time_to_first_token_seconds",
            "Time from the model call to the first text shown to the user.",
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "chatbridge_tokens", "Tokens sent to (in) and produced by (out) the model.", ["direction"], registry=r
        )
        self.model_tokens = Counter(
            "chatbridge_model_tokens",
            "Tokens by configured model (its name in the configuration), in and out.",
            ["model", "direction"],
            registry=r,
        )
        self.model_cost = Counter(
            "chatbridge_model_cost_usd",
            "Estimated cost in US dollars by configured model, from its declared prices.",
            ["model"],
            registry=r,
        )
        self.refused = Counter(
            "chatbridge_messages_refused",
            "Messages refused by a limit: rate (messages per minute), user, chat or total (tokens per day).",
            ["limit"],
            registry=r,
        )
        self.retries = Counter(
            "chatbridge_model_retries", "Model calls retried, by the failure that caused it.", ["kind"], registry=r
        )
        self.tool_calls = Counter(
            "chatbridge_tool_calls",
            "Tool calls by source (MCP server name, or builtin), tool and outcome (ok, error, timeout, refused).",
            ["source", "tool", "outcome"],
            registry=r,
        )
        self.tool_latency = Histogram(
            "chatbridge_tool_latency_seconds",
            "Duration of tool calls, by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge(
            "chatbridge_active_sessions",
            "Sessions used within session.timeout_s (counted at most every 15 s).",
            registry=r,
        )
        for direction in ("in", "out"):
            self.tokens.labels(direction)
        for kind in _ERROR_KINDS:
            self.errors.labels(kind)
        for limit in LIMITS:
            self.refused.labels(limit)
        for model in models:
            self.model_cost.labels(model)
            for direction in ("in", "out"):
                self.model_tokens.labels(model, direction)
        for platform in platforms:
            for counter in (self.received, self.answered, self.denied, self.rate_limited):
                counter.labels(platform)

    # --- hooks -----------------------------------------------------------------------------------

    def message_handled(self, record: MessageRecord) -> None:
        platform = record.platform
        self.received.labels(platform).inc()
        self.outcomes.labels(platform, record.outcome).inc()
        self.handling.observe(record.latency_s)
        if record.outcome == "answered":
            self.answered.labels(platform).inc()
        elif record.outcome == "denied":
            self.denied.labels(platform).inc()
        elif record.outcome == "rate_limited":
            self.rate_limited.labels(platform).inc()
        if record.error is not None:
            self.errors.labels(record.error).inc()
        if record.model_s is not None:
            self.model_latency.observe(record.model_s)
        if record.first_token_s is not None:
            self.first_token.observe(record.first_token_s)
        if record.prompt_tokens:
            self.tokens.labels("in").inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels("out").inc(record.completion_tokens)
        if record.model is not None:
            self.model_tokens.labels(record.model, "in").inc(record.prompt_tokens)
            self.model_tokens.labels(record.model, "out").inc(record.completion_tokens)
            self.model_cost.labels(record.model).inc(record.cost_usd)
        if record.limit is not None:
            self.refused.labels(record.limit).inc()

    def model_retry(self, error: ModelError) -> None:
        self.retries.labels(error.kind).inc()

    def tool_call(self, source: str, tool: str, outcome: str, seconds: float) -> None:
        """``core.tools.CallObserver``; tool names come from the configuration and the servers it names."""
        self.tool_calls.labels(source, tool, outcome).inc()
        self.tool_latency.labels(source).observe(seconds)

    # --- scrape ----------------------------------------------------------------------------------

    async def count_sessions(self, store: Store) -> None:
        """Refresh the active-sessions gauge from the store, cheaply: at most every
        ``sessions_refresh_s``, never waiting more than ``SESSIONS_TIMEOUT_S``, and keeping the
        previous figure when the store does not answer."""
        async with self._sessions_lock:
            if time.monotonic() - self._sessions_counted_at < self._sessions_refresh_s:
                return
            self._sessions_counted_at = time.monotonic()
            try:
                async with asyncio.timeout(SESSIONS_TIMEOUT_S):
                    sessions = await store.list_sessions()
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the store did
                log.debug("could not count sessions: %s", type(exc).__name__)
                return
            now = self._clock()
            self.active_sessions.set(sum(1 for info in sessions if now - info.last_active <= self._session_timeout_s))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The page and its content type: the classic text format (version 0.0.4), or OpenMetrics
        when the scraper's ``Accept`` header asks for it, as prometheus-client's own server does."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
