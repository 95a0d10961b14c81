"""The Bacs calendar: working days and the three-day cycle.

A Bacs working day is a weekday that is not a bank holiday in England and Wales (Bacs follows that calendar);
the holidays come from the maintained `holidays` library (UK, subdivision ENG), not a hand-typed list.
The cycle: the file is input on day 1 (input day), Bacs processes it on day 2 (processing day, UHL1) and the
money leaves the payer's account on day 3 (entry day), each the next working day after the one before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays


@lru_cache(maxsize=64)
def _bank_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def bank_holiday_name(day: date) -> str | None:
    return holidays.country_holidays("GB", subdiv="ENG", years=day.year).get(day)


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(day.year)


def next_working_day(day: date) -> date:
    """`day` itself when it is a working day, else the next one."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def add_working_days(day: date, count: int) -> date:
    """The working day `count` working days after `day` (which need not be a working day itself)."""
    for _ in range(count):
        day = next_working_day(day + timedelta(days=1))
    return day


def latest_notice_day(collection: date, notice_working_days: int) -> date:
    """The last day a notice may leave for a debit on `collection`: `notice_working_days` working days before it
    (a notice on a weekend or holiday counts from the next working day)."""
    day = collection
    while add_working_days(day, notice_working_days) > collection:
        day -= timedelta(days=1)
    return day


def why_not_working(day: date) -> str:
    return bank_holiday_name(day) or ("a Saturday" if day.weekday() == 5 else "a Sunday")


@dataclass(frozen=True)
class BacsCycle:
    requested: date  # the day the run was for
    input_day: date  # the working day the file goes to Bacs
    processing_day: date  # UHL1: the day Bacs processes it
    entry_day: date  # the money leaves the payer's account

    @property
    def moved(self) -> str | None:
        """Why the run's day moved, or None."""
        if self.requested == self.input_day:
            return None
        return (f"{self.requested} is not a Bacs working day ({why_not_working(self.requested)}): the submission "
                f"is input on {self.input_day}")


def cycle(requested: date) -> BacsCycle:
    input_day = next_working_day(requested)
    processing = add_working_days(input_day, 1)
    return BacsCycle(requested, input_day, processing, add_working_days(processing, 1))
