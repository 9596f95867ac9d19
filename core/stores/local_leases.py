"""Session leases for the embedded stores, whose whole bridge is one process and one event loop.

A lease here is an entry in a dict: taking one never waits (a busy session's holder looks at the
queue again when it finishes), and there is no expiry, because a holder in this process gives its
lease back when it fails and nothing outlives the process to be blocked by it. Fencing tokens come
from one counter for all sessions, so a token from a finished lease never matches a later holder's.
"""

from __future__ import annotations

import itertools

from core.store import StaleLease


class InProcessLeases:
    def __init__(self) -> None:
        self._holders: dict[str, int] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        """Sessions held right now (bounded by the turns in flight)."""
        return len(self._holders)

    def held(self, session_key: str) -> bool:
        return session_key in self._holders

    def take(self, session_key: str) -> int | None:
        """A new token, or None when the session is held."""
        if session_key in self._holders:
            return None
        token = self._holders[session_key] = next(self._tokens)
        return token

    def holds(self, session_key: str, fence: int) -> bool:
        return self._holders.get(session_key) == fence

    def check(self, session_key: str, fence: int) -> None:
        """Raise ``StaleLease`` unless ``fence`` is the session's current holder."""
        if not self.holds(session_key, fence):
            raise StaleLease(f"lease {fence} on {session_key!r} is no longer held")

    def release(self, session_key: str, fence: int) -> None:
        if self.holds(session_key, fence):
            del self._holders[session_key]
