"""Compliance by kind of message and by the recipient's clock, on a real broker (issue 32): a
promotion without consent to marketing, quiet hours in New York, Florida and Texas, the per-subject
cap, and a replay that decides each of them as live did."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from harness import decisions, ev, publish

NY, CHICAGO = ZoneInfo("America/New_York"), ZoneInfo("America/Chicago")
OFFER = "Flash sale at Luigi's: {}% off every pizza this weekend, show this text at the counter"


def ms(local: str, tz: ZoneInfo) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=tz).timestamp() * 1000)


def local(ts: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts / 1000, tz).strftime("%a %H:%M")


def promotion(app: str, rid: str, user: str, ts: int, pct: int = 30) -> dict:
    return ev(
        "send",
        request_id=rid,
        app=app,
        sender="s1",
        userkey=user,
        network="sms",
        text=OFFER.format(pct),
        category="promotional",
        ts=ts,
    )


def consented(app: str, user: str, ts: int, tz: str | None = None, region: str | None = None) -> list[dict]:
    out = [
        ev(
            "opt_in",
            event_id=f"{app}-{user}-in",
            app=app,
            userkey=user,
            source="web form",
            method="web_form",
            consent_text="Yes, text me offers",
            ts=ts,
        )
    ]
    if tz is not None:
        out.append(
            ev(
                "recipient_profile",
                event_id=f"{app}-{user}-where",
                app=app,
                userkey=user,
                timezone=tz,
                region=region,
                ts=ts,
            )
        )
    return out


def test_kinds_quiet_hours_and_subjects_are_decided_live_and_in_a_replay(settings, workers, tmp_path):
    workers.start(settings)
    monday = ms("2026-11-30 12:00", NY)
    events = [  # 1. a promotion to a user who only wrote; the same user may get an informational text
        ev(
            "inbound",
            event_id="talk-1",
            app="kinds",
            sender="s1",
            userkey="talker",
            network="sms",
            text="is the shop open on sunday?",
            ts=monday - 86_400_000,
        ),
        promotion("kinds", "promo-talker", "talker", monday),
        ev(
            "send",
            request_id="info-talker",
            app="kinds",
            sender="s1",
            userkey="talker",
            network="sms",
            text="Your order 48213 has shipped",
            ts=monday + 1,
        ),
    ]
    # 3. quiet hours: New York at 22:30, Florida at 20:30 (its window ends at 20:00), Texas on a
    # Sunday morning (from noon); each app's log in event-time order
    ny, fl, tx = ms("2026-11-30 22:30", NY), ms("2026-11-30 20:30", NY), ms("2026-11-29 10:00", CHICAGO)
    events += [*consented("nyc", "u1", ny - 3_600_000, "America/New_York", "US-NY"), promotion("nyc", "late", "u1", ny)]
    events += [*consented("fla", "u1", fl - 3_600_000, "America/New_York", "US-FL"), promotion("fla", "late", "u1", fl)]
    events += [
        *consented("tex", "u1", tx - 3_600_000, "America/Chicago", "US-TX"),
        promotion("tex", "sunday", "u1", tx),
    ]
    # 4. the fourth promotion on one subject to one user within 24 h (no quiet hours: no place known)
    events += [
        *consented("subj", "deal", monday - 3_600_000),
        *[promotion("subj", f"deal-{i}", "deal", monday + i * 3_600_000, 30 + 5 * i) for i in range(4)],
    ]
    publish(settings, events)
    live = decisions(settings, 2 + 3 + 4)
    got = {(d["app"], d["request_id"]): d for d in live}
    refused = got["kinds", "promo-talker"]
    assert (refused["outcome"], refused["reason"]) == ("rejected", "no_consent_for_category")
    assert "express consent to marketing" in refused["detail"]
    assert got["kinds", "info-talker"]["reason"] == "conversation"
    for app, rid, tz, opens in (
        ("nyc", "late", NY, "Tue 08:00"),
        ("fla", "late", NY, "Tue 08:00"),
        ("tex", "sunday", CHICAGO, "Sun 12:00"),
    ):
        d = got[app, rid]
        assert (d["outcome"], d["reason"], local(d["deliver_at"], tz)) == ("delayed", "quiet_hours", opens), d
    assert "quiet hours of US-FL: texts 08:00-20:00" in got["fla", "late"]["detail"]
    assert "Sun 12:00-21:00" in got["tex", "sunday"]["detail"]
    assert [got["subj", f"deal-{i}"]["outcome"] for i in range(4)] == ["accepted"] * 3 + ["rejected"]
    assert got["subj", "deal-3"]["reason"] == "subject_limit" and got["subj", "deal-3"]["retry_after_s"] == 21 * 3600

    # the held promotions go out when each app's event time reaches the window's opening
    publish(
        settings,
        [
            ev("tick", app="nyc", ts=ms("2026-12-01 08:00", NY)),
            ev("tick", app="tex", ts=ms("2026-11-29 12:00", CHICAGO)),
        ],
    )
    released = [d for d in decisions(settings, 9 + 2) if d["outcome"] == "released"]
    assert sorted((d["app"], d["request_id"], d["ts"]) for d in released) == [
        ("nyc", "late", ms("2026-12-01 08:00", NY)),
        ("tex", "sunday", ms("2026-11-29 12:00", CHICAGO)),
    ]

    assert_replay_decides_as_live(settings, tmp_path, 9)


def assert_replay_decides_as_live(settings, tmp_path, requests: int) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sendgate.streams.cli",
            "replay",
            "--name",
            "compliance",
            "--compare",
            "--changed-out",
            str(tmp_path / "changed.jsonl"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **settings.to_env()},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"requests: {requests} live, {requests} replayed, 0 changed" in result.stdout, result.stdout


@pytest.mark.parametrize("scope", ["all", "category"])
def test_both_opt_out_scopes_on_the_broker(settings, workers, tmp_path, scope):
    """`all` (the default) stops every kind; `category` the kind of the message the STOP answered
    (and those needing more consent), and "stop all" everything."""
    if scope == "category":
        policy = tmp_path / "scope.toml"
        policy.write_text('[compliance]\nopt_out_scope = "category"\n')
        settings = settings.with_(policy_file=str(policy))
    workers.start(settings)
    t, app = ms("2026-11-30 12:00", NY), "scope"
    events = [
        *consented(app, "u1", t - 3_600_000),
        *consented(app, "u2", t - 3_600_000),
        promotion(app, "promo-1", "u1", t),
        promotion(app, "promo-2", "u2", t, 31),
        ev(
            "inbound", event_id="stop-1", app=app, sender="s1", userkey="u1", network="sms", text="Stop.", ts=t + 60_000
        ),
        ev(
            "inbound",
            event_id="stop-2",
            app=app,
            sender="s1",
            userkey="u2",
            network="sms",
            text="STOP ALL",
            ts=t + 60_000,
        ),
        promotion(app, "promo-3", "u1", t + 120_000, 40),
    ]
    events += [
        ev(
            "send",
            request_id=f"info-{u}",
            app=app,
            sender="s1",
            userkey=u,
            network="sms",
            text="Your order 48213 has shipped",
            ts=t + 180_000,
        )
        for u in ("u1", "u2")
    ]
    publish(settings, events)
    got = {d["request_id"]: d for d in decisions(settings, 5)}
    assert [got[r]["outcome"] for r in ("promo-1", "promo-2")] == ["accepted"] * 2
    assert (got["promo-3"]["outcome"], got["promo-3"]["reason"]) == ("rejected", "opted_out")
    assert got["info-u2"]["reason"] == "opted_out"  # "stop all" stops everything under both scopes
    assert got["info-u1"]["outcome"] == ("rejected" if scope == "all" else "accepted"), got["info-u1"]
    assert_replay_decides_as_live(settings, tmp_path, 5)
