"""The calendar keeps the current day's span; whatever order instants come in, each falls on the
day the zone's clock shows for it."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

from core.calendar import BudgetCalendar

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-29 is 23 hours long in Berlin, 2026-10-25 is 25; both lie in this range.
SPRING_2026 = datetime(2026, 3, 27, tzinfo=BERLIN).timestamp()
AUTUMN_2026 = datetime(2026, 10, 27, tzinfo=BERLIN).timestamp()


def test_every_instant_gets_the_day_its_zone_shows() -> None:
    draw = random.Random(20261203)
    calendar = BudgetCalendar(BERLIN)
    instant = SPRING_2026
    for _ in range(5_000):
        # mostly forward by up to a few hours, now and then back, now and then anywhere
        step = draw.choice([draw.uniform(0, 4 * 3600), -draw.uniform(0, 3600), None])
        instant = draw.uniform(SPRING_2026, AUTUMN_2026) if step is None else instant + step
        assert calendar.day_of(instant) == datetime.fromtimestamp(instant, BERLIN).strftime("%Y-%m-%d")


def test_the_day_changes_at_the_zones_midnight_on_a_short_day() -> None:
    calendar = BudgetCalendar(BERLIN)
    midnight = datetime(2026, 3, 30, tzinfo=BERLIN).timestamp()  # after 23 hours of 2026-03-29
    assert calendar.day_of(midnight - 23 * 3600) == "2026-03-29"
    assert calendar.day_of(midnight - 0.001) == "2026-03-29"
    assert calendar.day_of(midnight) == "2026-03-30"
    assert calendar.day_of(midnight - 1) == "2026-03-29"  # the clock was set back
