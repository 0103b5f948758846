"""The periods a part is counted in: its UTC hour, the plant's shift, and its p-chart subgroup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from edge.config import FiguresSettings

WHOLE = ""  # the period key of the whole batch
HOUR_PREFIX = "h:"
SHIFT_PREFIX = "s:"
GROUP_PREFIX = "g:"


def parse_time(stamp: str) -> datetime:
    """A stored ISO timestamp (always with its UTC offset) as an aware datetime."""
    value = datetime.fromisoformat(stamp)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def hour_key(stamp: str) -> str:
    """``h:YYYY-MM-DDTHH`` of the UTC hour holding ``stamp``."""
    return HOUR_PREFIX + parse_time(stamp).astimezone(UTC).strftime("%Y-%m-%dT%H")


def hour_keys(end: datetime, hours: int) -> list[str]:
    """The keys of the ``hours`` UTC hours ending with the one holding ``end``, oldest first."""
    last = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [HOUR_PREFIX + (last - timedelta(hours=n)).strftime("%Y-%m-%dT%H") for n in range(hours - 1, -1, -1)]


def group_key(ordinal: int, size: int) -> str:
    """The p-chart subgroup of the batch's ``ordinal``-th part (0-based), zero-padded so keys sort."""
    return f"{GROUP_PREFIX}{ordinal // size:09d}"


@dataclass(frozen=True)
class ShiftCalendar:
    """Maps a moment to ``s:<date the shift began>/<shift name>`` in the plant's time zone."""

    zone: ZoneInfo
    starts: tuple[tuple[time, str], ...]  # sorted by start

    @classmethod
    def from_settings(cls, settings: FiguresSettings) -> ShiftCalendar:
        starts = sorted((time.fromisoformat(s.start), s.name) for s in settings.shifts)
        return cls(ZoneInfo(settings.timezone), tuple(starts))

    def key(self, stamp: str) -> str:
        local = parse_time(stamp).astimezone(self.zone)
        day: date = local.date()
        clock = local.time().replace(tzinfo=None)
        current = [name for start, name in self.starts if start <= clock]
        if current:
            return f"{SHIFT_PREFIX}{day.isoformat()}/{current[-1]}"
        # before the day's first shift: still the previous day's last shift
        return f"{SHIFT_PREFIX}{(day - timedelta(days=1)).isoformat()}/{self.starts[-1][1]}"
