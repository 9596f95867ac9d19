"""Logging for ``chatbridge``: readable text (default) or JSON lines on stderr, secrets redacted.

Every configured secret (the model's API key, platform tokens, signing and webhook secrets, a
password in a URL) is replaced by ``***`` in every record that reaches the bridge's handler,
whichever library logged it, and again in the formatted line, JSON-escaped forms included. That is
the belt; the braces are that httpx, which logs request URLs at INFO and Telegram's URLs contain
the bot token, is kept at WARNING unless ``log.level`` is ``debug``.

How a secret is found in a text is ``bots.redaction``'s, shared with the model client, which masks
its key in a provider's error text before cutting it for a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from bots.redaction import Redactor

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


_active = Redactor()


def redact(text: str) -> str:
    """Redact the configured secrets from text printed outside logging (``check``, fatal errors)."""
    return _active(text)


def configured_secrets(config: BaseModel) -> list[str]:
    """Every non-empty ``SecretStr`` in the configuration, those in mappings and lists included (an
    MCP server's headers), and passwords written into URLs."""
    found: list[str] = []
    for name in type(config).model_fields:
        found.extend(_secrets_in(getattr(config, name)))
    return found


def _secrets_in(value: object) -> list[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        # A header value such as "Bearer <token>": the token may show up alone in a server's error.
        return [secret, *secret.split()[1:]] if secret else []
    if isinstance(value, BaseModel):
        return configured_secrets(value)
    if isinstance(value, Mapping):
        return [secret for item in value.values() for secret in _secrets_in(item)]
    if isinstance(value, list | tuple):
        return [secret for item in value for secret in _secrets_in(item)]
    if isinstance(value, str) and "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        return [password] if password else []
    return []


class RedactingFilter(logging.Filter):
    """Renders each record's message now and redacts it, its exception text and its string fields."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redact:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is reported by the handler as usual
            return True
        record.msg, record.args = self._redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self._redact(value))
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the record's ``extra`` fields."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in payload:
                payload[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        return self._redact(json.dumps(payload, ensure_ascii=False, default=str))


class _BridgeHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` installed, so a second call replaces it."""


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Send every record to ``stream`` (stderr) through the redacting filter and the chosen format."""
    global _active
    redactor = Redactor(secrets)
    _active = redactor
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _BridgeHandler)]:
        root.removeHandler(handler)
    handler = _BridgeHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root.addHandler(handler)
    numeric = _LEVELS.get(level, logging.INFO)
    root.setLevel(numeric)
    debug = numeric <= logging.DEBUG
    # httpx logs each request URL at INFO (Telegram's carry the bot token); httpcore traces at DEBUG.
    # The MCP client's httpx2 is the same library under a new name (its loggers too).
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in ("httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return redactor


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """Uncaught exceptions go through logging too, so their text is redacted like everything else."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("chatbridge").critical("uncaught exception", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)
