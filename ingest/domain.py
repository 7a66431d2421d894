"""Domain rules that need no database: lock dates, payouts, states, error types."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

PENDING, REVERSED, APPROVED, LOCKED = "PENDING", "REVERSED", "APPROVED", "LOCKED"
STATES = (PENDING, REVERSED, APPROVED, LOCKED)
# The engine keeps states as small integer codes: position in STATES.
S_PENDING, S_REVERSED, S_APPROVED, S_LOCKED = range(len(STATES))
STATE_NAMES = np.array(STATES, dtype=object)
STATE_CODES = {name: i for i, name in enumerate(STATES)}
MAX_MODIFICATIONS = 1000

Cents = TypeVar("Cents", int, npt.NDArray[np.int64])

VALIDATION_ERRORS = frozenset({"MALFORMED", "MISSING_IDENTIFIER", "UNKNOWN_REASON"})


def error_type(code: str) -> str:
    """'Validation' for shape errors, 'Contract' for errors against the actions' rules."""
    return "Validation" if code in VALIDATION_ERRORS else "Contract"


@dataclass(frozen=True)
class EventTypeRule:
    """What the engine needs of an event type: campaign, kind, payout rule and locking rule."""

    id: int
    campaign_id: str
    kind: str
    payout_type: str
    payout_value: Decimal
    lock_months: int | None
    lock_days: int

    @property
    def percent_e4(self) -> int:
        """The percent payout as an integer in units of 1/10,000 percent."""
        return int(self.payout_value * 10_000) if self.payout_type == "percent" else 0

    @property
    def fixed_cents(self) -> int:
        """The fixed payout in cents."""
        return int(self.payout_value * 100) if self.payout_type == "fixed" else 0

    def payout(self, amount_cents: int) -> int:
        """Payout in cents for a sale amount, half-up to the cent."""
        if self.payout_type == "fixed":
            return self.fixed_cents
        return percent_payout(amount_cents, self.percent_e4)

    def lock_at(self, event_at: datetime, tz: ZoneInfo) -> datetime:
        """The moment (UTC) the action locks."""
        return lock_moment(event_at, tz, self.lock_months, self.lock_days)


def percent_payout(amount_cents: Cents, percent_e4: Cents) -> Cents:
    """amount × percent / 100, rounded half-up to the cent, all in integers (scalars or arrays)."""
    return (amount_cents * percent_e4 + 500_000) // 1_000_000


def money_text(cents: int | None) -> str:
    """Cents as '123.45'; None or a negative value (none) as ''."""
    if cents is None or cents < 0:
        return ""
    return f"{cents // 100}.{cents % 100:02d}"


def money_texts(cents: npt.NDArray[np.int64]) -> pa.Array:
    """`money_text` for a whole array of cents, as arrow text (fast on millions of rows)."""
    safe = np.maximum(cents, 0)
    whole = pc.cast(pa.array(safe // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(safe % 100), pa.string()), 2, "0")
    text = pc.binary_join_element_wise(whole, frac, ".")
    return pc.if_else(pa.array(cents < 0), pa.scalar("", pa.string()), text)


def lock_moment(event_at: datetime, tz: ZoneInfo, months: int | None, days: int) -> datetime:
    """When an action locks: the end of its lock day in the campaign's time zone, as UTC.

    `days` rule: the lock day is the event's local date + days. `months` rule: the lock day is
    the last day of the event's month, moved on `months` month-ends, plus `days` (0 months, 27
    days: a January event locks when 27 February ends).
    """
    if event_at.tzinfo is None:
        raise ValueError("event time must carry a time zone")
    local = event_at.astimezone(tz).date()
    if months is None:
        lock_day = local + timedelta(days=days)
    else:
        lock_day = month_end(local, months) + timedelta(days=days)
    end = datetime.combine(lock_day + timedelta(days=1), time(0), tzinfo=tz)
    return end.astimezone(UTC)


def month_end(day: date, months_after: int) -> date:
    """The last day of the month `months_after` months after `day`'s month."""
    index = day.year * 12 + day.month - 1 + months_after
    year, month = divmod(index, 12)
    return date(year, month + 1, calendar.monthrange(year, month + 1)[1])
