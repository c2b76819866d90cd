"""UTC calendar months and instants: what statements, usage windows and ledger views count in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

from forge.domain.errors import InvalidRequest

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in UTC; `str(month)` is its 'YYYY-MM' form."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Self:
        """'2025-03' -> Month(2025, 3); anything else (2025-3, 2025-13, ' 2025-03') is refused."""
        found = _MONTH.fullmatch(text) if isinstance(text, str) else None
        if found is None or not (1 <= int(found[2]) <= 12) or not (1 <= int(found[1]) <= 9998):
            raise InvalidRequest(
                f"month must be a calendar month written YYYY-MM, got {text!r}", param="month"
            )
        return cls(int(found[1]), int(found[2]))

    @classmethod
    def of(cls, moment: datetime) -> Self:
        """The UTC month a moment falls in (naive datetimes are taken as UTC)."""
        utc = as_utc(moment)
        return cls(utc.year, utc.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the month (exclusive bound)."""
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
