"""Budget days: usage is counted per day in ``limits.timezone``, so a budget day starts at that zone's
midnight, and "this month" is that zone's month. Every process of a bridge computes the same day for
the same instant from the same setting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo


@dataclass(frozen=True, slots=True)
class BudgetCalendar:
    zone: tzinfo

    def day_of(self, timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, self.zone).strftime("%Y-%m-%d")

    def month_of(self, timestamp: float) -> str:
        return self.day_of(timestamp)[:7]

    def next_day_starts(self, timestamp: float) -> float:
        """When the day of ``timestamp`` ends: the next midnight of the zone (a day of a daylight-saving
        change is 23 or 25 hours long)."""
        now = datetime.fromtimestamp(timestamp, self.zone)
        tomorrow = (now + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.zone).timestamp()
