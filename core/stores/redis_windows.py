"""The newest turns of recently used sessions, kept by each Redis-store process between messages.

Every answered message reads its session's window, up to ``context.max_messages`` turns, and with real
replies of a few kilobytes each that is tens of kilobytes to send, parse and rebuild per message,
although only the last exchange is new, and often this very process wrote it. So each process keeps
the windows it used last and asks Redis only for the turns stored after them.

Which turns a process has is known by two numbers in the session's meta hash: ``gen``, the fencing
token of the commit that created the session (a cleared or expired session comes back with another),
and ``turn_count``. The script that takes a session (``_LEASE_AND_TAKE`` in ``redis.py``) is told the
``gen`` and count this process knows; when they still describe the session it sends only the turns
after that count, otherwise the whole window. Turns are only ever appended, so the turns at those
positions are the ones this process has. ``gen`` and ``turn_count`` change in the same script as the
turns, under the session's lease.

Bounded: at most ``SESSIONS`` windows, the least recently used dropped first; with replies of 2 KB and
40-turn windows that is about 20 MB at most.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from core.store import Turn

SESSIONS = 256

NOTHING_KNOWN = ("", -1)
"""What the script is told when this process has no usable window: no ``gen`` matches ""."""


@dataclass(frozen=True, slots=True)
class _Window:
    gen: str
    """"" for a session that did not exist when it was taken (its first commit names it)."""
    count: int
    turns: tuple[Turn, ...]
    capacity: int
    """The window size it was read for; a longer window cannot be served from it."""


class WindowCache:
    def __init__(self, sessions: int = SESSIONS) -> None:
        self._sessions = sessions
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def known(self, session_key: str, take: int) -> tuple[str, int]:
        """The ``gen`` and turn count to tell the script, for a window of ``take`` turns."""
        window = self._windows.get(session_key)
        if window is None or not window.gen or window.capacity < take:
            return NOTHING_KNOWN
        return window.gen, window.count

    def loaded(
        self, session_key: str, take: int, gen: str, count: int, start: int, turns: Sequence[Turn]
    ) -> list[Turn]:
        """The window after the script sent the turns from position ``start`` to ``count``: only the
        new ones when ``start`` is where the known window ends, else the whole window."""
        window = self._windows.get(session_key)
        if window is not None and gen and window.gen == gen and window.count == start:
            newest = (window.turns + tuple(turns))[-take:] if take else ()
        else:
            newest = tuple(turns)
        self._keep(session_key, _Window(gen, count, newest, take) if gen else None)
        return list(newest)

    def absent(self, session_key: str, take: int) -> None:
        """The session did not exist when it was taken; its first commit will create it."""
        self._keep(session_key, _Window("", 0, (), take))

    def committed(self, session_key: str, turns: Sequence[Turn], gen: str, count: int) -> None:
        """After a commit under the lease: the turns are appended to what this process has, which is
        still exact, since nobody else wrote in between (the commit checked the fence)."""
        window = self._windows.get(session_key)
        if window is None:
            return
        if window.count + len(turns) != count or (window.gen and window.gen != gen):
            self.forget(session_key)
            return
        newest = (window.turns + tuple(turns))[-window.capacity :] if window.capacity else ()
        self._keep(session_key, _Window(gen, count, newest, window.capacity))

    def forget(self, session_key: str) -> None:
        self._windows.pop(session_key, None)

    def _keep(self, session_key: str, window: _Window | None) -> None:
        if window is None:
            self.forget(session_key)
            return
        self._windows[session_key] = window
        self._windows.move_to_end(session_key)
        while len(self._windows) > self._sessions:
            self._windows.popitem(last=False)
