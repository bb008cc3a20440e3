"""Times from clients: they must name their zone, and are turned into UTC here, where a value
that cannot be (year 1 or 9999 shifted past the calendar's end) is a 400, not a crash."""

from __future__ import annotations

from datetime import datetime, timezone

from corral.errors import InvalidRequest


def as_utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-26T00:00:00Z")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidRequest(f"{name} is out of range") from None
