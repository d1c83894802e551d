"""Event time that a producer cannot bend, on a real broker.

An event's effective time is max(its `ts`, its record timestamp - max_ts_behind_s, the app's
event clock so far): the clock of an app never moves backwards, and an event that trails its
record timestamp by more than max_ts_behind_s (default 600 s) is decided at the bounded time.
Decisions carry the effective time as `ts`. With `events_timestamp_type = "LogAppendTime"` the
events topic sendgate creates has `message.timestamp.type=LogAppendTime`, so the record timestamp
is the broker's append time, which no producer can back-date.

The attack these tests are about: a sender with a real (old) inbound history replays it as
"replies" by back-dating each send's `ts` to just after its user's old inbound. Replies are
exempt from consent beyond the reply window and from burst pacing, so without a bound on `ts`
a marketing blast to 40 people passes as 40 replies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import fields

import orjson

from harness import MIN, decisions, ev, read_topic
from producing import Rec, create_topic, produce, topic_configs, wait_wall_clock_past

from sendgate.streams.config import Settings

HOUR = 60 * MIN
BEHIND_MS = 600 * 1000  # the contract's default max_ts_behind_s
APP, SENDER = "shop", "shop-promo"
NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Victor",
    "Wanda",
    "Xavier",
    "Yara",
    "Zeno",
    "Aiko",
    "Bruno",
    "Carla",
    "Dario",
    "Elif",
    "Femi",
    "Gita",
    "Hana",
    "Ivan",
    "Jade",
    "Kofi",
    "Lena",
    "Marco",
    "Nina",
]
TEMPLATE = "Hi {name}, our summer sale ends tonight: 30% off everything at shop.example/sale"
COUNT = 40
# The sender has no sender_profile, so it counts as young, hence risky: 5 free recipients, then paced
# (docs/rules.md, "Burst pacing"). 35 paced sends at 120-240 s intervals fit well within the 6 h limit.
PACED = Counter({("accepted", "conversation"): 5, ("delayed", "burst_paced"): 35})


def wall_ms() -> int:
    return int(time.time() * 1000)


def history(base: int) -> list[dict]:
    """40 users who each wrote to the sender once, at `base` (+ i ms, to keep the log ordered)."""
    return [
        ev(
            "inbound",
            event_id=f"i{i:02d}",
            app=APP,
            sender=SENDER,
            userkey=f"+1555000{i:04d}",
            network="sms",
            text=f"Where is my order {1000 + i}?",
            ts=base + i,
        )
        for i in range(COUNT)
    ]


def blast(base: int, reply_to: bool) -> list[dict]:
    """One near-identical text to the same 40 users, each back-dated to 1 s after its user's inbound."""
    out = []
    for i in range(COUNT):
        send = ev(
            "send",
            request_id=f"r{i:02d}",
            app=APP,
            sender=SENDER,
            userkey=f"+1555000{i:04d}",
            network="sms",
            text=TEMPLATE.format(name=NAMES[i]),
            ts=base + i + 1000,
        )
        if reply_to:
            send["reply_to"] = f"i{i:02d}"
        out.append(send)
    return out


def events_log(settings: Settings) -> list[dict]:
    """The events topic as the worker reads it: {partition, offset, value, timestamp, ...} in log order
    per partition (each test here uses one app, so one partition)."""
    return [r for r in read_topic(settings, settings.topic("events"), with_partition=True) if r["value"]["app"] == APP]


def effective_times(log: list[dict], behind_ms: int = BEHIND_MS) -> tuple[dict[str, int], set[str]]:
    """The contract applied to the log: request_id -> effective time of each send, and the request
    ids whose time was set by the skew bound (the bound strictly beat both `ts` and the clock)."""
    clock = None
    times: dict[str, int] = {}
    bounded: set[str] = set()
    for r in log:
        e, record_ts = r["value"], r["timestamp"]
        ts = e.get("ts", record_ts)
        floor = max(ts, clock) if clock is not None else ts
        clock = max(floor, record_ts - behind_ms)
        if e["type"] == "send":
            times[e["request_id"]] = clock
            if record_ts - behind_ms > floor:
                bounded.add(e["request_id"])
    return times, bounded


def by_request(records: list[dict]) -> dict[str, dict]:
    out = {d["request_id"]: d for d in records}
    assert len(out) == len(records), f"a request decided twice: {sorted(d['request_id'] for d in records)}"
    return out


def assert_paced_not_replies(settings: Settings, got: dict[str, dict]) -> None:
    """The blast's decisions: none a reply, 5 accepted then 35 paced, at their effective times."""
    replies = [d for d in got.values() if d["reason"] == "reply"]
    example = replies[0] if replies else None
    assert len(replies) == 0, (
        f"{len(replies)} of {COUNT} back-dated sends were decided as replies (exempt from "
        f"pacing); e.g. {example['request_id']}: ts={example['ts']} detail={example['detail']!r}"
    )
    counts = Counter((d["outcome"], d["reason"]) for d in got.values())
    assert counts == PACED, f"outcomes of the blast: {dict(counts)}; expected {dict(PACED)}"
    expected, bounded = effective_times(events_log(settings))
    wrong = {rid: (got[rid]["ts"], want) for rid, want in expected.items() if got[rid]["ts"] != want}
    assert not wrong, (
        f"decision ts != effective time (request: (decision ts, expected)): {dict(list(wrong.items())[:5])}"
    )
    assert "r00" in bounded  # the first send is the one the bound moves for sure (later ones may tie the clock)
    unexplained = [rid for rid in sorted(bounded) if "max_ts_behind_s" not in got[rid]["detail"]]
    assert not unexplained, (
        f"decisions moved by the skew bound whose detail does not say so: {unexplained[:5]}; "
        f"e.g. {got[unexplained[0]]['detail']!r}"
    )


# --- A: back-dated ts, current record timestamp ----------------------------------------------


def test_back_dated_sends_are_decided_at_their_bounded_time_and_paced(settings, worker):
    """Honest history 9 h ago (record timestamps = ts), then a blast whose `ts` claims to be 1 s after
    each user's inbound while its records carry the producer's timestamp, i.e. now. Effective time
    is now - 600 s for every send: 9 h after the inbounds, so no reply window, and the blast is
    paced like any other (today all 40 are accepted as replies)."""
    base = wall_ms() - 9 * HOUR
    produce(settings, [Rec(e, timestamp_ms=e["ts"]) for e in history(base)] + [Rec(e) for e in blast(base, False)])
    got = by_request(decisions(settings, COUNT))
    assert_paced_not_replies(settings, got)


# --- B: an honest backfill is decided as before -------------------------------------------------


def test_honest_backfill_keeps_its_event_times_and_replies(settings, worker):
    """The same history and sends, but each send's record timestamp is its `ts` (as `publish` of a
    backfill writes it): the bound does not apply, so all 40 are replies decided at their own ts."""
    base = wall_ms() - 9 * HOUR
    sends = blast(base, False)
    produce(settings, [Rec(e, timestamp_ms=e["ts"]) for e in history(base) + sends])
    got = by_request(decisions(settings, COUNT))
    assert Counter((d["outcome"], d["reason"]) for d in got.values()) == Counter({("accepted", "reply"): COUNT})
    assert {rid: d["ts"] for rid, d in got.items()} == {s["request_id"]: s["ts"] for s in sends}


# --- C: an app's clock never moves backwards -----------------------------------------------------


def test_the_app_clock_never_moves_backwards(settings, worker):
    """An inbound at T, then sends that claim earlier times (within the skew bound, record timestamps
    equal to their ts): they are decided at T, the app's clock, and so answer the inbound (age 0)
    instead of predating it. A later send moves the clock on as usual."""
    t = wall_ms() - HOUR
    common = dict(app=APP, sender=SENDER, userkey="+15550001", network="sms")
    events = [
        ev("inbound", event_id="i1", text="Is my order shipped?", ts=t, **common),
        ev("send", request_id="r1", text="Yes, it left today.", reply_to="i1", ts=t - 5 * MIN, **common),
        ev("send", request_id="r2", text="Tracking: shop.example/t/778", ts=t - 4 * MIN, **common),
        ev("send", request_id="r3", text="Anything else we can help with?", reply_to="i1", ts=t + 2000, **common),
    ]
    produce(settings, [Rec(e, timestamp_ms=e["ts"]) for e in events])
    got = by_request(decisions(settings, 3))
    times = {rid: got[rid]["ts"] for rid in ("r1", "r2", "r3")}
    assert times == {"r1": t, "r2": t, "r3": t + 2000}, (
        f"decision ts relative to the inbound at T: { {rid: ts - t for rid, ts in times.items()} } ms; "
        f"expected r1: 0, r2: 0, r3: 2000 (the clock stays at T until an event moves it on)"
    )
    assert [(rid, got[rid]["outcome"], got[rid]["reason"]) for rid in ("r1", "r2", "r3")] == [
        ("r1", "accepted", "reply"),
        ("r2", "accepted", "reply"),
        ("r3", "accepted", "reply"),
    ]


# --- D: LogAppendTime ---------------------------------------------------------------------------

REPLY_WINDOW_MS = 2000
GAP_MS = 3500


def log_append_time_attack(settings: Settings) -> None:
    """The attack on a topic whose record timestamps are the broker's append times.

    Why the policy has a 2 s reply window and the test waits 3.5 s: on a LogAppendTime topic
    nothing can be older than its append time - max_ts_behind_s, so the inbounds (ts 9 h ago) are
    clamped to their append time - 600 s, and so are the back-dated sends: the age of each send's
    inbound becomes the true wall-clock gap between their appends. An old reply window can only be
    reached by an inbound that was appended longer than the window ago; with the default 15 min
    that would take 15 min, so the window is 2 s and the sends are appended > 3 s after the
    inbounds. The sends back-date both `ts` and their CreateTime to 1 s after each inbound:
    - today (`ts` decides): 1 s <= 2 s, all 40 are replies;
    - contract on a CreateTime topic: the back-dated CreateTime keeps the bound 9 h in the past and
      the clock sits at the last inbound, so they would still be replies (that is why
      LogAppendTime exists);
    - contract on a LogAppendTime topic: decided at (append time - 600 s), > 3 s after the
      inbounds' effective times: no replies, the blast is paced.
    No tick or clock jump is used: the app clock alone would defeat the attack whatever the topic's
    timestamp type, and this test is about the timestamp type.
    """
    base = wall_ms() - 9 * HOUR
    inbounds = produce(settings, [Rec(e, timestamp_ms=e["ts"]) for e in history(base)], create_topic=False)
    assert {p.timestamp_type for p in inbounds} == {1}, "precondition: the broker stamps append times"
    wait_wall_clock_past(max(p.timestamp for p in inbounds) + GAP_MS)
    sends = blast(base, reply_to=True)
    produce(settings, [Rec(e, timestamp_ms=e["ts"]) for e in sends], create_topic=False)  # hostile: back-dated
    got = by_request(decisions(settings, COUNT))
    log = events_log(settings)
    inbound_times = [r["timestamp"] for r in log if r["value"]["type"] == "inbound"]
    send_times = [r["timestamp"] for r in log if r["value"]["type"] == "send"]
    assert min(send_times) - max(inbound_times) > REPLY_WINDOW_MS, "precondition: sends appended > window later"
    assert min(send_times) > base + 8 * HOUR, "the broker kept the back-dated CreateTime of the sends"
    assert_paced_not_replies(settings, got)


def short_reply_window(tmp_path) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(f"[consent]\nreply_window_s = {REPLY_WINDOW_MS // 1000}\n")
    return str(path)


def test_log_append_time_setting_makes_back_dated_record_times_useless(settings, workers, tmp_path):
    assert "events_timestamp_type" in {f.name for f in fields(Settings)}, "Settings has no field events_timestamp_type"
    settings = settings.with_(events_timestamp_type="LogAppendTime", policy_file=short_reply_window(tmp_path))
    workers.start(settings)  # the worker creates the events topic
    configs = topic_configs(settings, settings.topic("events"))
    assert configs.get("message.timestamp.type") == "LogAppendTime", (
        f"events topic created by the worker has message.timestamp.type={configs.get('message.timestamp.type')}"
    )
    log_append_time_attack(settings)


def test_on_a_log_append_time_topic_back_dated_sends_are_decided_at_broker_time(settings, workers, tmp_path):
    """The same attack on an events topic the operator created with LogAppendTime: whichever way the
    topic got its type, the gate decides by the record timestamp the broker wrote."""
    settings = settings.with_(policy_file=short_reply_window(tmp_path))
    create_topic(settings, settings.topic("events"), {"message.timestamp.type": "LogAppendTime"})
    workers.start(settings)
    log_append_time_attack(settings)


def test_the_worker_creates_the_events_topic_with_the_configured_timestamp_type(settings, workers):
    """The worker creates the events topic when it is missing (no client does: `publish` names the
    missing topic): with SENDGATE_EVENTS_TIMESTAMP_TYPE=LogAppendTime it has
    message.timestamp.type=LogAppendTime, and without it CreateTime (the default)."""
    event = orjson.dumps(ev("opt_in", event_id="o1", app=APP, userkey="+15550001")) + b"\n"
    for prefix_tag, env_value, expected in (
        ("lat", "LogAppendTime", "LogAppendTime"),
        ("ct", "CreateTime", "CreateTime"),
    ):
        s = settings.with_(topic_prefix=f"{settings.topic_prefix}{prefix_tag}.", events_timestamp_type=env_value)
        result = subprocess.run(
            [sys.executable, "-m", "sendgate.streams.cli", "publish", "-"],
            input=event,
            env={**os.environ, **s.to_env()},
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2 and b"does not exist" in result.stderr, result.stderr.decode()
        workers.start(s).stop()
        configs = topic_configs(s, s.topic("events"))
        assert configs.get("message.timestamp.type") == expected, (
            f"SENDGATE_EVENTS_TIMESTAMP_TYPE={env_value}: the worker created {s.topic('events')} with "
            f"message.timestamp.type={configs.get('message.timestamp.type')}, expected {expected}"
        )
