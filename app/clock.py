"""The one clock the code asks for "now" and "today", so that tests can set it.

`SWAPFLEET_CLOCK_OFFSET_S` shifts it; the test suite runs at chosen dates that way (a month's
first and last day, the 29th of February). The database's own now() is not shifted: it only
stamps bookkeeping times (created_at) and measures ages, never a day a report covers.
"""

from datetime import UTC, date, datetime, timedelta

from app.core.config import get_settings


def offset() -> timedelta:
    return timedelta(seconds=get_settings().clock_offset_s)


def now() -> datetime:
    return datetime.now(UTC) + offset()


def today() -> date:
    return now().date()


def from_timestamp(seconds: float) -> datetime:
    """A time.time() reading (taken where a datetime would cost too much) on this clock."""
    return datetime.fromtimestamp(seconds, UTC) + offset()
