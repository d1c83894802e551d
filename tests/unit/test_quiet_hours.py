"""models/quiet_hours.py: windows in the recipient's local time, places from numbers, the pinned zones."""

from __future__ import annotations

from datetime import datetime

import pytest

from sendgate.models.quiet_hours import (
    DEFAULT_WINDOWS,
    Place,
    QuietHours,
    QuietHoursError,
    Window,
    place_of_number,
    zone,
)

NY, CHICAGO = "America/New_York", "America/Chicago"


def ms(local: str, tz: str) -> int:
    """Epoch ms of a local wall-clock time ('2026-12-07 22:30') in `tz`."""
    return int(datetime.fromisoformat(local).replace(tzinfo=zone(tz)).timestamp() * 1000)


def local(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts / 1000, zone(tz)).strftime("%a %Y-%m-%d %H:%M")


HOURS = QuietHours()


@pytest.mark.parametrize(
    "region, tz, sent, opens",
    [
        ("US-NY", NY, "2026-12-07 22:30", "Tue 2026-12-08 08:00"),  # federal: 08:00-21:00
        ("US-NY", NY, "2026-12-07 07:59", "Mon 2026-12-07 08:00"),
        ("US-NY", NY, "2026-12-07 20:59", "Mon 2026-12-07 20:59"),  # inside: now
        ("US-FL", NY, "2026-12-07 20:30", "Tue 2026-12-08 08:00"),  # Florida: 08:00-20:00
        ("US-CT", NY, "2026-12-07 08:30", "Mon 2026-12-07 09:00"),  # Connecticut: 09:00-20:00
        ("US-TX", CHICAGO, "2026-12-06 10:00", "Sun 2026-12-06 12:00"),  # Texas: Sunday from noon
        ("US-TX", CHICAGO, "2026-12-05 10:00", "Sat 2026-12-05 10:00"),  # Saturday from nine
        ("US-TX", CHICAGO, "2026-12-05 21:30", "Sun 2026-12-06 12:00"),
        ("US-OK", CHICAGO, "2026-12-07 20:00", "Tue 2026-12-08 08:00"),  # the end is excluded
        ("US-MD", NY, "2026-12-07 19:59", "Mon 2026-12-07 19:59"),
    ],
)
def test_a_send_outside_its_recipients_window_opens_when_the_local_window_does(region, tz, sent, opens):
    opening = HOURS.opening(ms(sent, tz), Place((tz,), region, "recipient_profile"))
    assert local(opening.at, tz) == opens


def test_daylight_saving_is_the_zones_own():
    # 2026-03-08: New York springs forward at 02:00; 08:00 local is then 12:00 UTC, not 13:00
    opening = HOURS.opening(ms("2026-03-08 03:30", NY), Place((NY,), "US", "number"))
    assert local(opening.at, NY) == "Sun 2026-03-08 08:00"
    assert datetime.utcfromtimestamp(opening.at / 1000).hour == 12


def test_a_place_in_several_zones_waits_until_every_zone_is_open():
    # 07:30 in Chicago is 08:30 in New York: open there, not yet in Chicago
    both = Place((CHICAGO, NY), "US", "number")
    opening = HOURS.opening(ms("2026-12-07 07:30", CHICAGO), both)
    assert local(opening.at, CHICAGO) == "Mon 2026-12-07 08:00"
    # 20:30 in Chicago is 21:30 in New York: closed in both until 08:00 in Chicago (09:00 in New York)
    opening = HOURS.opening(ms("2026-12-07 20:30", CHICAGO), both)
    assert local(opening.at, CHICAGO) == "Tue 2026-12-08 08:00" and local(opening.at, NY) == "Tue 2026-12-08 09:00"
    # Texas' Sunday noon holds in Chicago, while New York's window opened hours before
    texas_two = Place((CHICAGO, NY), "US-TX", "recipient_profile")
    assert local(HOURS.opening(ms("2026-12-06 11:30", NY), texas_two).at, NY) == "Sun 2026-12-06 13:00"


def test_windows_that_never_overlap_never_open():
    hours = QuietHours([("ZZ", "08:00-09:00")])
    apart = Place(("Pacific/Kiritimati", "Pacific/Pago_Pago"), "ZZ", "recipient_profile")  # 25 hours apart
    assert hours.opening(ms("2026-12-07 12:00", "Pacific/Pago_Pago"), apart).at is None


def test_no_window_without_a_place_or_for_a_region_the_table_lacks():
    assert HOURS.opening(0, None) is None
    assert HOURS.opening(0, Place(("Europe/London",), "GB", "number")) is None
    hours = QuietHours([("GB", "08:00-21:00"), ("US-FL", "09:00-20:00")])
    assert hours.window_for("GB").describe() == "08:00-21:00" and hours.window_for("US-FL").source == "policy"
    assert hours.window_for("US-WA") is hours.window_for("US")  # a state without its own window: its country's


def test_window_specs_parse_describe_and_refuse_nonsense():
    texas = Window.parse("US-TX", "Mon-Sat 09:00-21:00; Sun 12:00-21:00")
    assert texas.describe() == "Mon-Sat 09:00-21:00, Sun 12:00-21:00"
    assert Window.parse("X", "Sat-Sun 10:00-24:00").describe() == "Sat-Sun 10:00-24:00"
    assert Window.parse("X", "Fri-Mon 10:00-12:00").days[0] == (600, 720)  # wraps over the week's end
    for bad in ("", "8-21", "21:00-08:00", "Mon 25:00-26:00", "Funday 08:00-09:00", "08:00-21:00 extra"):
        with pytest.raises(QuietHoursError):
            Window.parse("X", bad)
    with pytest.raises(QuietHoursError, match="ISO 3166"):
        QuietHours([("florida", "08:00-20:00")])
    assert [r for r, _, _ in DEFAULT_WINDOWS] == ["US", "US-FL", "US-OK", "US-MD", "US-CT", "US-TX"]


@pytest.mark.parametrize(
    "number, place",
    [
        ("+13055551234", Place((NY,), "US-FL", "number")),  # Florida by its area code
        ("+12145551234", Place((CHICAGO,), "US-TX", "number")),
        ("+14155551234", Place(("America/Los_Angeles",), "US-CA", "number")),  # "San Francisco, CA"
        ("+18605551234", Place((NY,), "US-CT", "number")),
        ("+61212345678", Place(("Australia/Sydney",), "AU-NSW", "number")),
        ("+447700900123", None),  # a reserved (fictional) range: not a valid number
        ("u-42", None),
        ("+1 305 555 1234", None),
        ("+", None),
    ],
)
def test_a_number_says_where_it_was_registered(number, place):
    assert place_of_number(number) == place


def test_zones_come_from_the_pinned_tzdata_package_not_the_machine(monkeypatch):
    import zoneinfo

    zone.cache_clear()
    zoneinfo.reset_tzpath(to=[])  # no system zone files at all
    try:
        assert zone(NY).key == NY and local(ms("2026-07-01 12:00", NY), NY) == "Wed 2026-07-01 12:00"
    finally:
        zoneinfo.reset_tzpath()
        zone.cache_clear()
    for bad in ("Mars/Olympus", "../etc/passwd", "Etc/Unknown", ""):
        with pytest.raises(QuietHoursError):
            zone(bad)
