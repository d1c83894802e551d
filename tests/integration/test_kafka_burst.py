"""The burst gate on a real broker: a paced blast, ticks, junk across apps, a restart."""

from __future__ import annotations

import random

from harness import DAY, MIN, T0, collect, decisions, ev, outcomes, publish

NAMES = ["Anna", "Ben", "Chloe", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas"]


def audience(app: str, sender: str, count: int, ts: int) -> list[dict]:
    """An established sender whose `count` users wrote to it an hour before `ts`."""
    events = [
        ev(
            "sender_profile",
            event_id=f"{sender}-p",
            app=app,
            sender=sender,
            registered_ts=ts - 400 * DAY,
            ts=ts - 2 * 60 * MIN,
        )
    ]
    events += [
        ev(
            "inbound",
            event_id=f"{sender}-i{i}",
            app=app,
            sender=sender,
            userkey=f"user{i}",
            network="sms",
            text=f"question {i}",
            ts=ts - 60 * MIN,
        )
        for i in range(count)
    ]
    return events


def blast(app: str, sender: str, count: int, ts: int, prefix: str = "b") -> list[dict]:
    return [
        ev(
            "send",
            request_id=f"{prefix}{i:02d}",
            app=app,
            sender=sender,
            userkey=f"user{i}",
            network="sms",
            text=f"Hi {NAMES[i % 10]}! Your code {1000 + 37 * i} gets 25% off today at http://shop.example/{i}",
            ts=ts + i * 1000,
        )
        for i in range(count)
    ]


def test_blast_is_paced_and_released_in_order_as_ticks_arrive(settings, worker):
    t = T0 + 3 * 60 * MIN
    sends = blast("acme", "s1", 40, t)
    unrelated = ev(
        "send",
        request_id="note",
        app="acme",
        sender="s1",
        userkey="user3",
        network="sms",
        text="Your parcel 77 is at the pickup point until Friday",
        ts=t + 20_500,
    )
    publish(settings, audience("acme", "s1", 40, t) + sends[:21] + [unrelated] + sends[21:])
    got = decisions(settings, 41)
    by_id = {d["request_id"]: d for d in got}
    assert by_id["note"]["outcome"] == "accepted" and by_id["note"]["reason"] == "conversation"
    blast_decisions = [by_id[s["request_id"]] for s in sends]
    assert [d["outcome"] for d in blast_decisions] == ["accepted"] * 10 + ["delayed"] * 30
    assert {d["cluster_id"] for d in blast_decisions} == {"c1"} and by_id["note"]["cluster_id"] != "c1"
    delayed = blast_decisions[10:]
    slots = [d["deliver_at"] for d in delayed]
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert slots[0] == t + 9 * 1000 + 60_000  # one interval after the 10th free send
    assert gaps[0] == 60_000 and all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:])) and gaps[-1] > gaps[0]
    assert delayed[0]["similar_recipients"] == 11 and "11th recipient" in delayed[0]["detail"]

    # Nothing is released before its slot; each tick releases exactly what has come due, in order.
    ticks = [slots[0] - 1, slots[4], slots[-1]]
    publish(settings, [ev("tick", app="acme", ts=ts) for ts in ticks])
    everything = decisions(settings, 41 + 30)
    released = [d for d in everything[41:]]
    assert [d["outcome"] for d in released] == ["released"] * 30
    assert [d["request_id"] for d in released] == [d["request_id"] for d in delayed]
    assert [d["ts"] for d in released] == [ticks[1]] * 5 + [ticks[2]] * 25
    deliveries = collect(settings, settings.topic("deliveries.sms"), lambda r: len(r) >= 41)
    assert sorted(d["request_id"] for d in deliveries) == sorted([s["request_id"] for s in sends] + ["note"])


def test_junk_reported_template_is_paced_from_its_first_recipient_in_another_app(settings, worker):
    t = T0 + 3 * 60 * MIN
    template = "Congratulations {}! You have won a 2000 prize. Call 0906{} now to claim, T&C apply"
    reports = [
        ev(
            "junk_report",
            event_id=f"j{i}",
            app="other",
            sender="spammy",
            userkey=f"victim{i}",
            request_id=f"x{i}",
            text=template.format(NAMES[i], 1000 + i),
            ts=t,
        )
        for i in range(2)
    ]
    # A decision in the same app after the reports proves the reports were processed first.
    probe = [
        ev("opt_in", event_id="po", app="other", userkey="p", ts=t),
        ev("send", request_id="probe", app="other", sender="x", userkey="p", network="sms", text="ok", ts=t),
    ]
    publish(settings, reports + probe)
    assert outcomes(decisions(settings, 1)) == [("probe", "accepted", "opt_in")]
    sends = [
        ev(
            "send",
            request_id=f"s{i}",
            app="acme",
            sender="brand",
            userkey=f"user{i}",
            network="sms",
            text=template.format(NAMES[i + 3], 2000 + i),
            ts=t + i,
        )
        for i in range(3)
    ]
    publish(settings, audience("acme", "brand", 3, t) + sends)
    got = [d for d in decisions(settings, 4) if d["app"] == "acme"]
    assert [(d["outcome"], d["reason"]) for d in got] == [
        ("accepted", "junk_similar"),
        ("delayed", "junk_similar"),
        ("delayed", "junk_similar"),
    ]
    # the junk match makes the intervals those of a risky sender: doubled (60 s -> 120 s, 61.2 s -> 122.4 s)
    assert got[1]["deliver_at"] == t + 120_000 and got[2]["deliver_at"] == t + 120_000 + 122_400


def test_restart_loses_no_pending_request_and_releases_none_twice(settings, workers, tmp_path):
    t = T0 + 3 * 60 * MIN
    sends = blast("acme", "s1", 20, t)
    first = workers.start(settings)
    publish(settings, audience("acme", "s1", 20, t) + sends)
    delayed = [d for d in decisions(settings, 20) if d["outcome"] == "delayed"]
    assert len(delayed) == 10
    publish(settings, [ev("tick", app="acme", ts=delayed[2]["deliver_at"])])
    assert [d["outcome"] for d in decisions(settings, 23)[20:]] == ["released"] * 3
    assert first.stop() == 0  # a clean stop commits: nothing may be decided twice
    workers.start(settings.with_(data_dir=str(tmp_path / "fresh-store")))
    publish(
        settings,
        [
            ev("tick", app="acme", ts=delayed[-1]["deliver_at"] + 1),
            ev(
                "send",
                request_id="after",
                app="acme",
                sender="s1",
                userkey="user0",
                network="sms",
                text="A different message entirely, about your invoice",
                ts=delayed[-1]["deliver_at"] + 2,
            ),
        ],
    )
    # "after" is the app's last event, so any duplicate release would stand before its decision.
    everything = collect(settings, settings.topic("decisions"), lambda r: any(d["request_id"] == "after" for d in r))
    released = [d["request_id"] for d in everything if d["outcome"] == "released"]
    assert sorted(released) == sorted(d["request_id"] for d in delayed)  # each exactly once
    assert len(everything) == 31 and everything[-1]["request_id"] == "after"


LOOKALIKES = {
    "a": "а",
    "e": "е",
    "o": "о",
    "p": "р",
    "c": "с",
    "x": "х",
    "i": "і",
    "s": "ѕ",
    "A": "Α",
    "B": "Β",
    "E": "Ε",
    "H": "Η",
    "K": "Κ",
    "M": "Μ",
    "O": "Ο",
    "P": "Ρ",
    "T": "Τ",
}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def disguised(text: str, seed: int) -> str:
    """A copy that reads the same but differs in code points: about a third of the letters that
    have a Cyrillic or Greek look-alike swapped for it, zero-width characters between letters."""
    rng = random.Random(seed)
    out = []
    for ch in text:
        out.append(LOOKALIKES[ch] if ch in LOOKALIKES and rng.random() < 0.35 else ch)
        if ch.isalpha() and rng.random() < 0.3:
            out.append(rng.choice(INVISIBLE))
    return "".join(out)


def test_a_blast_disguised_with_look_alikes_and_invisible_characters_is_paced(settings, worker):
    t = T0 + 3 * 60 * MIN
    text = "MEGA SALE at Ace Shop! Take 50% off every Pick of the Season: visit shop.example/sale today"
    sends = [
        ev(
            "send",
            request_id=f"d{i:02d}",
            app="sly",
            sender="s1",
            userkey=f"user{i}",
            network="sms",
            text=disguised(text, i),
            ts=t + i * 1000,
        )
        for i in range(40)
    ]
    assert len({s["text"] for s in sends}) == 40  # to the gate of before, 40 different texts
    publish(settings, audience("sly", "s1", 40, t) + sends)
    got = {d["request_id"]: d for d in decisions(settings, 40)}
    decided = [got[s["request_id"]] for s in sends]
    assert [d["outcome"] for d in decided] == ["accepted"] * 10 + ["delayed"] * 30
    assert {d["cluster_id"] for d in decided} == {"c1"}
