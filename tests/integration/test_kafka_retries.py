"""Delivered once, on the real broker: producers retry (the same request published again, with the
record timestamp of the retry), and each retried request gets its first answer, field for field,
with no second delivery (models/memory.py, docs/guarantees.md)."""

from __future__ import annotations

from harness import MIN, T0, decisions, ev, publish, read_topic, wait_consumed
from producing import Rec, produce

SEC = 1000


def send(request_id, userkey, text, ts, **extra):
    return ev(
        "send",
        request_id=request_id,
        app="acme",
        sender="s1",
        userkey=userkey,
        network="sms",
        text=text,
        ts=ts,
        **extra,
    )


def inbound(event_id, userkey, text, ts):
    return ev("inbound", event_id=event_id, app="acme", sender="s1", userkey=userkey, network="sms", text=text, ts=ts)


def test_retried_requests_get_their_first_answer_and_are_delivered_once(settings, worker):
    blast = [send(f"b{i:02d}", f"u{i:02d}", "Big sale today, 20% off everything", T0 + MIN + i) for i in range(14)]
    first = [
        ev("app_policy", event_id="g1", app="acme", unrestricted=True, reason="test", ts=T0),
        ev("sender_profile", event_id="p1", app="acme", sender="s1", registered_ts=T0 - 400 * 86_400_000, ts=T0),
        *[inbound(f"c{i}", f"conv{i}", "hi", T0 + i) for i in range(3)],
        inbound("q1", "alice", "where is my parcel?", T0 + 10 * SEC),
        send("reply-1", "alice", "On its way.", T0 + 20 * SEC, reply_to="q1"),
        inbound("q2", "bob", "send me the invoice", T0 + 30 * SEC),
        send("invoice-7", "bob", "Invoice #7: $20", T0 + 40 * SEC),
        *blast,
        ev("tick", app="acme", ts=T0 + 10 * MIN),  # releases the four paced sends of the blast
        inbound("stop-bob", "bob", "STOP", T0 + 11 * MIN),
    ]
    publish(settings, first)
    live = decisions(settings, 2 + 14 + 4)
    by_id = {(d["request_id"], d["outcome"]): d for d in live}
    assert [d["outcome"] for d in live if d["request_id"].startswith("b")].count("delayed") == 4
    # the retries, as a producer that timed out sends them again, record timestamp = the retry's
    retries = [
        send(f"b{i:02d}", f"u{i:02d}", "Big sale today, 20% off everything", T0 + 12 * MIN + i) for i in range(10, 14)
    ]
    retries += [
        send("reply-1", "alice", "On its way.", T0 + 20 * SEC + 17 * MIN, reply_to="q1"),
        send("invoice-7", "bob", "Invoice #7: $20", T0 + 11 * MIN + 100 * SEC),
    ]
    produce(settings, [Rec(r, timestamp_ms=r["ts"]) for r in retries])
    again = decisions(settings, len(live) + len(retries))[len(live) :]
    assert [d["request_id"] for d in again] == [r["request_id"] for r in retries]
    for d in again:  # the first answer: a paced send's is its delay, not its release
        original = (
            by_id[d["request_id"], "delayed"] if d["request_id"].startswith("b") else by_id[d["request_id"], "accepted"]
        )
        assert d == original
    wait_consumed(settings)  # every retry decided and its outputs written: then count the deliveries
    deliveries = read_topic(settings, settings.topic("deliveries.sms"))
    assert sorted(d["request_id"] for d in deliveries) == sorted(
        ["reply-1", "invoice-7", *[f"b{i:02d}" for i in range(14)]]
    )  # each once
