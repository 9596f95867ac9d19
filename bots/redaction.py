"""Masking secrets in text that leaves the process (log lines, error details).

Values shorter than ``MIN_SECRET_CHARS`` are not redacted: replacing every "x" of a log because a
local model server's key is "x" would make the logs unreadable and protect nothing. A text is always
redacted whole, before it is cut to length: a secret cut in half is no longer recognisable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "***"
MIN_SECRET_CHARS = 4


class Redactor:
    """Replaces each secret, and its JSON-escaped and URL-quoted forms, by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_CHARS:
                continue
            forms |= {
                secret,
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                quote(secret, safe=""),
            }
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)
