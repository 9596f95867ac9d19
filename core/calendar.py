"""Budget days: usage is counted per day in ``limits.timezone``, so a budget day starts at that zone's
midnight, and "this month" is that zone's month. Every process of a bridge computes the same day for
the same instant from the same setting."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo


class BudgetCalendar:
    """Which budget day an instant falls on.

    Every message asks at least twice (when it is queued and when its usage is stored), and turning
    an instant into a zone's date costs about 5 us, a few per cent of what the engine spends on a
    message (``bench/``); the answer only changes at midnight, so the current day's span is kept.
    """

    __slots__ = ("zone", "_day", "_since", "_until")

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._day = ""
        self._since = self._until = 0.0

    def day_of(self, timestamp: float) -> str:
        if not self._since <= timestamp < self._until:
            # Known from the first instant asked until the next midnight: an earlier one (a clock
            # set back) is simply worked out again.
            self._day = datetime.fromtimestamp(timestamp, self.zone).strftime("%Y-%m-%d")
            self._since, self._until = timestamp, self.next_day_starts(timestamp)
        return self._day

    def month_of(self, timestamp: float) -> str:
        return self.day_of(timestamp)[:7]

    def next_day_starts(self, timestamp: float) -> float:
        """When the day of ``timestamp`` ends: the next midnight of the zone (a day of a daylight-saving
        change is 23 or 25 hours long)."""
        now = datetime.fromtimestamp(timestamp, self.zone)
        tomorrow = (now + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.zone).timestamp()
