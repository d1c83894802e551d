"""Platform signals on a real broker: delivery results and the reputation they move, a blast
spread over sender names, and an abusive unrestricted app losing its grant through its own log."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import orjson

from harness import DAY, MIN, T0, collect, decisions, ev, publish
from sendgate.streams.client import grant_revocations

TEMPLATE = "Hi {}! Your code {} gets 25% off today at http://shop.example/{}"


def established(app: str, sender: str, ts: int, grant: bool = False) -> list[dict]:
    events = [
        ev(
            "sender_profile",
            event_id=f"{app}-{sender}-p",
            app=app,
            sender=sender,
            registered_ts=ts - 400 * DAY,
            ts=ts - 2 * 60 * MIN,
        )
    ]
    events += [
        ev(
            "inbound",
            event_id=f"{app}-{sender}-c{i}",
            app=app,
            sender=sender,
            userkey=f"conv{i}",
            network="sms",
            text=f"hello {i}",
            ts=ts - 60 * MIN,
        )
        for i in range(3)
    ]
    if grant:
        events.append(
            ev("app_policy", event_id=f"{app}-grant", app=app, unrestricted=True, reason="contract", ts=ts - 60 * MIN)
        )
    return events


def sender_view(settings, app: str, sender: str, timeout: float = 30.0) -> dict:
    """The sender's inspection view, once its rows are there: a batch's decisions are out before
    its rows enter the worker's store (the crash protocol), so a 404 just after them is expected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{settings.web_port}/sendgate/senders/{app}/{sender}?ts={T0}", timeout=10
            ) as answer:
                return orjson.loads(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # poll interval


async def first_revocation(settings):
    async def first():
        async for revocation in grant_revocations(settings, from_beginning=True, app="blaster"):
            return revocation

    return await asyncio.wait_for(first(), 60)


def test_delivery_results_move_the_reputation_and_a_spread_blast_is_paced_app_wide(settings, worker):
    t = T0 + 3 * 60 * MIN
    names = [f"brand{i}" for i in range(6)]
    events = [e for name in names for e in established("shop", name, t, grant=True)]
    # the seed's case: one template through 6 names, 8 recipients each, 48 texts in 2 minutes
    events += [
        ev(
            "send",
            request_id=f"spread-{i}",
            app="shop",
            sender=names[i // 8],
            userkey=f"u{i}",
            network="sms",
            text=TEMPLATE.format(f"n{i}", 1000 + i, i),
            ts=t + i * 2500,
        )
        for i in range(48)
    ]
    # another app: its sender's deliveries are mostly refused by the platform
    events += established("news", "daily", t, grant=True)
    events += [
        ev(
            "delivery_status",
            event_id=f"ds{i}",
            app="news",
            sender="daily",
            userkey=f"r{i}",
            request_id=f"old{i}",
            status="not_delivered" if i < 7 else "delivered",
            ts=t + i,
        )
        for i in range(8)
    ]
    events += [
        ev(
            "send",
            request_id=f"news-{i}",
            app="news",
            sender="daily",
            userkey=f"reader{i}",
            network="sms",
            text="Today's headlines: the city council votes on the new tram line",
            ts=t + MIN + i,
        )
        for i in range(6)
    ]
    publish(settings, events)
    wanted = {f"spread-{i}" for i in range(48)} | {f"news-{i}" for i in range(6)}
    got: dict[str, dict] = {}
    for d in collect(settings, settings.topic("decisions"), lambda r: wanted <= {d["request_id"] for d in r}):
        got.setdefault(d["request_id"], d)  # each request's first decision (later sends release the paced ones)
    spread = [got[f"spread-{i}"] for i in range(48)]
    assert [d["outcome"] for d in spread] == ["accepted"] * 10 + ["delayed"] * 38
    assert all(
        d["cluster_id"].startswith("app-") and "across all of the app's sender names" in d["detail"]
        for d in spread[10:]
    )
    # 0.9 ** 7 * 1.02 = 0.488 -> 0.5: half the allowance, twice the interval
    news = [got[f"news-{i}"] for i in range(6)]
    assert [d["outcome"] for d in news] == ["accepted"] * 5 + ["delayed"]
    assert news[5]["deliver_at"] == t + MIN + 4 + 2 * MIN
    assert "its reputation is 0.50 (7 not-delivered result(s), 1 deliveries)" in news[0]["detail"]
    view = sender_view(settings, "news", "daily")
    assert view["reputation"]["signals"]["not_delivered"] == 7 and view["reputation"]["score"] <= 0.5


def test_an_abusive_unrestricted_app_loses_its_grant_through_its_log_and_an_operator_restores_it(settings, worker):
    t = T0 + 3 * 60 * MIN
    events = established("blaster", "promo", t, grant=True)
    events.append(
        ev(
            "send",
            request_id="before",
            app="blaster",
            sender="promo",
            userkey="stranger0",
            network="sms",
            text="Welcome to our club",
            ts=t,
        )
    )
    # five junk reports against another of its sender names within a day (policy grant_revoke_junk_reports)
    events += [
        ev(
            "junk_report",
            event_id=f"jr{i}",
            app="blaster",
            sender="other",
            userkey=f"victim{i}",
            text=f"WIN a free cruise {i}! call 0906 now",
            ts=t + MIN + i,
        )
        for i in range(5)
    ]
    publish(settings, events)
    [revocation] = collect(settings, settings.topic("grants"), lambda r: len(r) >= 1)
    subscribed = asyncio.run(first_revocation(settings))  # what an operator's subscriber gets
    assert (subscribed.app, subscribed.counts, subscribed.reason) == (
        "blaster",
        revocation["counts"],
        revocation["reason"],
    )
    assert revocation["type"] == "grant_revocation" and revocation["counts"]["junk_reports"] == 5
    assert "5 junk reports" in revocation["reason"]
    # the worker appended it to the app's log as an app_policy event, on the app's partition
    logged = collect(
        settings,
        settings.topic("events"),
        lambda r: any(e["value"].get("type") == "app_policy" and not e["value"]["unrestricted"] for e in r),
        with_partition=True,
    )
    appended = next(e for e in logged if e["value"].get("type") == "app_policy" and not e["value"]["unrestricted"])
    first = next(e for e in logged if e["value"].get("app") == "blaster" and e["value"]["type"] != "junk_shared")
    assert appended["partition"] == first["partition"] and appended["value"]["reason"] == revocation["reason"]

    deadline = time.monotonic() + 60  # the appended event is decided after the reports: poll for its effect
    n = 0
    while True:
        publish(
            settings,
            [
                ev(
                    "send",
                    request_id=f"after{n}",
                    app="blaster",
                    sender="promo",
                    userkey=f"s{n}",
                    network="sms",
                    text=f"Club news number {n}",
                    ts=t + 2 * MIN + n,
                )
            ],
        )
        d = [d for d in decisions(settings, 2 + n) if d["request_id"] == f"after{n}"][0]
        if d["reason"] == "no_conversation":
            break
        assert d["reason"] == "unrestricted" and time.monotonic() < deadline, d
        n += 1
    assert "the app lost its unrestricted-outbound grant" in d["detail"] and "5 junk reports" in d["detail"]
    publish(
        settings,
        [
            ev("app_policy", event_id="regrant", app="blaster", unrestricted=True, reason="reviewed", ts=t + 10 * MIN),
            ev(
                "send",
                request_id="restored",
                app="blaster",
                sender="promo",
                userkey="s-new",
                network="sms",
                text="We are back",
                ts=t + 10 * MIN + 1,
            ),
        ],
    )
    restored = [d for d in decisions(settings, 3 + n) if d["request_id"] == "restored"][0]
    assert restored["reason"] == "unrestricted"
