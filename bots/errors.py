"""Why a model call failed, in the few kinds a user needs told apart.

Each class names its ``kind``: the metric label, and the key of its user-facing text in
``core.texts.MODEL_ERRORS``. ``detail`` is for logs and never shown to users.
No exception here carries a request header, so the API key cannot leak through a message.
"""

from __future__ import annotations

from typing import ClassVar


class ModelError(Exception):
    """A model call failed after its retries."""

    kind: ClassVar[str] = "model_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelRateLimited(ModelError):
    """The provider kept answering 429 (too many requests) through every retry."""

    kind = "model_rate_limited"


class ModelAccessDenied(ModelError):
    """The provider refused us: a bad or missing API key, or an exhausted quota or balance."""

    kind = "model_access_denied"


class ModelTimeout(ModelError):
    """The call did not finish within ``model.timeout_s`` on any attempt."""

    kind = "model_timeout"


class ContextTooLong(ModelError):
    """The server says the prompt exceeds the model's context; the engine trims harder and retries once."""

    kind = "context_too_long"


class ModelUnavailable(ModelError):
    """Anything else: 5xx, refused connections, malformed answers, a stream cut off mid-way."""

    kind = "model_unavailable"
