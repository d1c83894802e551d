"""Quiet hours: when a promotional text may reach a recipient, in the recipient's local time.

47 CFR 64.1200(c)(1) bars telephone solicitations (texts included) before 8 a.m. and after 9 p.m.
at the called party's location; several states are stricter. A `Window` is one place's allowed
hours per local weekday; `QuietHours` holds the windows by region (ISO 3166-2 such as `US-FL`, or a
country such as `US`) with the policy's overrides; `next_allowed` finds the first instant at or
after a send's event time that lies inside the window in every zone the recipient may be in (a
number whose area spans several zones takes the strictest: all of them must be open).

Time zones come from the `tzdata` package, never from the machine (`zone`): a replay on another
machine, with other system zone files, decides the same. The package's version is pinned in
pyproject.toml; a new version changes decisions only where the zone rules themselves changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .rows import Row

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SPAN = re.compile(
    r"(?:(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?\s+)?"
    r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)\Z"
)

# The windows that apply without a policy, and the law each comes from (README, Rules).
DEFAULT_WINDOWS: tuple[tuple[str, str, str], ...] = (
    ("US", "08:00-21:00", "47 CFR 64.1200(c)(1)"),
    ("US-FL", "08:00-20:00", "Florida Telephone Solicitation Act"),
    ("US-OK", "08:00-20:00", "Oklahoma Telephone Solicitation Act"),
    ("US-MD", "08:00-20:00", "Maryland Stop the Spam Calls Act"),
    ("US-CT", "09:00-20:00", "Conn. Gen. Stat. 42-288a"),
    ("US-TX", "Mon-Sat 09:00-21:00; Sun 12:00-21:00", "Tex. Bus. & Com. Code ch. 301"),
)


class QuietHoursError(ValueError):
    """A window spec or zone that cannot be used; the message says which and why."""


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` from the pinned `tzdata` package (not the machine's zone files)."""
    if not re.fullmatch(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", name) or name.startswith("Etc/Unknown"):
        raise QuietHoursError(f"{name!r} is not an IANA time zone name")
    try:
        with resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as fh:
            return ZoneInfo.from_file(fh, key=name)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        raise QuietHoursError(f"{name!r} is not an IANA time zone name (tzdata)") from None


def is_zone(name: str) -> bool:
    try:
        zone(name)
    except QuietHoursError:
        return False
    return True


@dataclass(frozen=True)
class Window:
    """The hours texts may reach a place, per local weekday (Monday first): (start, end) in
    minutes after midnight, end excluded, or None for a day with no allowed hours."""

    region: str
    days: tuple[tuple[int, int] | None, ...]
    source: str = ""  # the law or the policy it comes from, for the decision's detail

    @classmethod
    def parse(cls, region: str, spec: str, source: str = "policy") -> "Window":
        """`08:00-21:00` (every day) or day ranges: `Mon-Sat 09:00-21:00; Sun 12:00-21:00`
        (days not named have no allowed hours)."""
        days: list[tuple[int, int] | None] = [None] * 7
        parts = [p.strip() for p in spec.split(";") if p.strip()]
        if not parts:
            raise QuietHoursError(f"quiet hours of {region}: empty window {spec!r}")
        for part in parts:
            m = _SPAN.match(part)
            if m is None:
                raise QuietHoursError(
                    f"quiet hours of {region}: {part!r} is not a window such as '08:00-21:00' or 'Mon-Sat 09:00-21:00'"
                )
            first, last, h1, m1, h2, m2 = m.groups()
            start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
            if end > 24 * 60 or start >= end:
                raise QuietHoursError(f"quiet hours of {region}: {part!r} must start before it ends, within a day")
            a = DAYS.index(first) if first else 0
            b = DAYS.index(last) if last else (a if first else 6)
            for d in range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]:
                days[d] = (start, end)
        return cls(region, tuple(days), source)

    def describe(self) -> str:
        """`08:00-21:00`, or `Mon-Sat 09:00-21:00, Sun 12:00-21:00`."""
        runs: list[tuple[int, int, tuple[int, int] | None]] = []
        for d, span in enumerate(self.days):
            if runs and runs[-1][2] == span:
                runs[-1] = (runs[-1][0], d, span)
            else:
                runs.append((d, d, span))
        if len(runs) == 1 and runs[0][2] is not None:
            return _hhmm(runs[0][2])
        return ", ".join(
            f"{DAYS[a]}{'-' + DAYS[b] if b != a else ''} {_hhmm(span)}" for a, b, span in runs if span is not None
        )

    def opens_at(self, ts_ms: int, tz: ZoneInfo) -> int | None:
        """The first instant at or after `ts_ms` inside the window in `tz`; None if it never opens."""
        local = datetime.fromtimestamp(ts_ms / 1000, tz)
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            span = self.days[day.weekday()]
            if span is None:
                continue
            start, end = _at(day, span[0], tz), _at(day, span[1], tz)
            if local < start:
                return int(start.timestamp() * 1000)
            if local < end:
                return ts_ms
        return None


def _hhmm(span: tuple[int, int]) -> str:
    return f"{span[0] // 60:02d}:{span[0] % 60:02d}-{span[1] // 60:02d}:{span[1] % 60:02d}"


def _at(day: date, minute: int, tz: ZoneInfo) -> datetime:
    if minute >= 24 * 60:
        return datetime.combine(day + timedelta(days=1), time(0), tz)
    return datetime.combine(day, time(minute // 60, minute % 60), tz)


@dataclass(frozen=True)
class Place:
    """Where a recipient may be: the zones (several when a number's area spans them) and the
    region whose window applies, and how it was learned (`recipient_profile` or `number`)."""

    zones: tuple[str, ...]
    region: str | None
    source: str

    def describe(self) -> str:
        return f"{'/'.join(self.zones)}{', ' + self.region if self.region else ''} (from its {self.source.replace('_', ' ')})"


@dataclass(frozen=True)
class Opening:
    """When a send may reach its recipient under quiet hours."""

    at: int | None  # the first allowed instant (== the send's time: now); None: never
    window: Window
    place: Place

    def describe(self) -> str:
        source = f" ({self.window.source})" if self.window.source else ""
        return (
            f"quiet hours of {self.window.region}: texts {self.window.describe()} local time{source}, "
            f"recipient in {self.place.describe()}"
        )


class QuietHours:
    """The windows by region: the defaults, overridden and extended by the policy's table."""

    def __init__(self, table: Iterable[tuple[str, str]] = ()) -> None:
        self.windows: dict[str, Window] = {
            region: Window.parse(region, spec, source) for region, spec, source in DEFAULT_WINDOWS
        }
        for region, spec in table:
            if not re.fullmatch(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?", region):
                raise QuietHoursError(
                    f"quiet hours: {region!r} is not a country (ISO 3166-1, e.g. GB) or region (ISO 3166-2, e.g. US-FL)"
                )
            self.windows[region] = Window.parse(region, spec, "policy")

    def window_for(self, region: str | None) -> Window | None:
        """The region's window, else its country's, else None (no quiet hours known there)."""
        if not region:
            return None
        return self.windows.get(region) or self.windows.get(region.split("-")[0])

    def opening(self, ts_ms: int, place: Place | None) -> Opening | None:
        """When a send at `ts_ms` may reach a recipient in `place`: open in every one of its zones
        at once. None when no window applies (no place known, or no window for its region)."""
        window = self.window_for(place.region) if place is not None else None
        if window is None or place is None or not place.zones:
            return None
        zones = [zone(name) for name in place.zones]
        at = ts_ms
        for _ in range(2 * len(zones) + 8):  # each round moves to a later opening; a common one is near
            later = [window.opens_at(at, tz) for tz in zones]
            if any(t is None for t in later):
                return Opening(None, window, place)
            latest = max(t for t in later if t is not None)
            if latest == at:
                return Opening(at, window, place)
            at = latest
        return Opening(None, window, place)


def place_of_number(userkey: str) -> Place | None:
    """Where an E.164 number (`+` and digits) is registered: its country, its US state when the
    number's area says which (phonenumbers' geocoder, mapped to ISO 3166-2 by pycountry), and the
    zones of its area. None for anything else: a userkey that is not a valid number says nothing.
    (A number is where it was registered, not where its owner is: a `recipient_profile` wins.)"""
    if not userkey.startswith("+") or not userkey[1:].isdigit():
        return None
    return _place_of_number(userkey)


@lru_cache(maxsize=65_536)
def _place_of_number(userkey: str) -> Place | None:
    import phonenumbers
    from phonenumbers import geocoder, timezone

    try:
        number = phonenumbers.parse(userkey)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    country = phonenumbers.region_code_for_number(number)
    zones = tuple(sorted(z for z in timezone.time_zones_for_number(number) if is_zone(z)))
    if not country or not zones:
        return None
    return Place(zones, _subdivision(country, geocoder.description_for_number(number, "en")) or country, "number")


@lru_cache(maxsize=4096)
def _subdivision(country: str, description: str) -> str | None:
    """ISO 3166-2 of a geocoder description: `Florida`, or `Miami, FL` (its last part)."""
    import pycountry

    if not description:
        return None
    last = description.rsplit(", ", 1)[-1]
    code = f"{country}-{last}"
    if pycountry.subdivisions.get(code=code) is not None:
        return code
    for sub in pycountry.subdivisions.get(country_code=country) or ():
        if sub.name == description:
            return sub.code
    return None


def regions_table(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A policy's `[quiet_hours]` table as a sorted tuple (the policy is frozen and hashable)."""
    return tuple(sorted(mapping.items()))


@dataclass(slots=True)
class RecipientPlace(Row):
    """Where the platform said a userkey is (a `recipient_profile` event): [timezone, region, ts]."""

    timezone: str = ""
    region: str | None = None
    ts: int = 0

    row_version = 1  # [timezone, region, ts] (models/rows.py)

    def place(self) -> Place:
        return Place((self.timezone,), self.region, "recipient_profile")

    def to_bytes(self) -> bytes:
        return self.pack([self.timezone, self.region, self.ts])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "RecipientPlace | None":
        return None if raw is None else cls(*cls.unpack(raw))
