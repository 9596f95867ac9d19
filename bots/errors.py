"""Why a model call failed, in the few kinds a user needs told apart.

The engine maps each class to one user-facing text; ``detail`` is for logs and never shown to users.
No exception here carries a request header, so the API key cannot leak through a message.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model call failed after its retries."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelRateLimited(ModelError):
    """The provider kept answering 429 (too many requests) through every retry."""


class ModelAccessDenied(ModelError):
    """The provider refused us: a bad or missing API key, or an exhausted quota or balance."""


class ModelTimeout(ModelError):
    """The call did not finish within ``model.timeout_s`` on any attempt."""


class ContextTooLong(ModelError):
    """The server says the prompt exceeds the model's context; the engine trims harder and retries once."""


class ModelUnavailable(ModelError):
    """Anything else: 5xx, refused connections, malformed answers, a stream cut off mid-way."""
