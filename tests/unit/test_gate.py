"""gate.py: the whole pipeline, `Gate.handle(validate(doc, record_ts), MemoryStore())`.

Order per send: release what is due -> consent -> burst pacing (replies skip it) -> decision
(+ delivery when accepted, or a pending row when delayed). Event time is the only clock.
"""

from __future__ import annotations


import orjson
import pytest

from conftest import APP, DAY, MINUTE, PARCEL, SECOND, T, UNRELATED, Harness, established, event, recipients, run, send
from sendgate.models.decisions import Decision, Delivery
from sendgate.models.events import InvalidEvent, Refusal, validate
from sendgate.models.gate import CONVERSATIONS, PENDING, TABLES, USERKEYS, Gate, MemoryStore, key
from sendgate.models.policy import Policy


def scenario() -> list[dict]:
    """A mixed day of app1: consent changes, a blast with pacing, junk, a reply, a cancel, ticks."""
    return [
        *established(),
        event("inbound", 0, event_id="in-1", userkey="fan", text="when is my parcel coming?"),
        event("inbound", 0, event_id="in-2", userkey="quitter", text="STOP"),
        *[send(u, at=SECOND, text=PARCEL) for u in recipients(12)],
        send("fan", at=2 * SECOND, text="Tomorrow morning!", reply_to="in-1"),
        send("quitter", at=2 * SECOND, text="You are unsubscribed, no more messages.", reply_to="in-2"),
        send("quitter", at=2 * SECOND + 1, text=PARCEL),
        event("junk_report", 3 * SECOND, event_id="jr-1", sender="S9", userkey="v1", text=UNRELATED[1]),
        send("u20", at=4 * SECOND, text=UNRELATED[1]),
        event("cancel", 5 * SECOND, request_id="r-u12-1000"),
        event("tick", 2 * MINUTE),
        event("tick", DAY),
    ]


def summary(decisions: list[Decision]) -> list[tuple]:
    return [(d.request_id, d.outcome, d.reason, d.deliver_at) for d in decisions]


def test_scenario_decisions():
    got = summary(run(scenario()))
    assert got == [
        *[(f"r-{u}-1000", "accepted", "unrestricted", None) for u in recipients(10)],
        ("r-u11-1000", "delayed", "burst_paced", T + SECOND + MINUTE),
        ("r-u12-1000", "delayed", "burst_paced", T + SECOND + 2 * MINUTE),
        ("r-fan-2000", "accepted", "reply", None),
        ("r-quitter-2000", "accepted", "opt_out_confirmation", None),  # the one confirmation allowed
        ("r-quitter-2001", "rejected", "opted_out", None),
        ("r-u20-4000", "accepted", "junk_similar", T + 4 * SECOND),  # paced from its first recipient
        ("r-u12-1000", "cancelled", "cancelled_by_app", None),
        ("r-u11-1000", "released", "slot_reached", T + SECOND + MINUTE),
    ]


def test_replay_gives_identical_decisions_and_ids():
    first, second = Harness(), Harness()
    first.feed(*scenario())
    second.feed(*scenario())
    assert [r.to_json() for r in first.records] == [r.to_json() for r in second.records]
    ids = [r.decision_id for r in first.records if isinstance(r, Decision)]
    assert ids[10] == f"{APP}:r-u11-1000:delayed:burst_paced"
    assert ids[-1] == f"{APP}:r-u11-1000:released:slot_reached"


def test_decision_ids_are_unique_within_a_run():
    ids = [d.decision_id for d in run(scenario())]
    assert len(ids) == len(set(ids))


def test_every_accepted_or_released_decision_has_exactly_one_delivery_right_after_it():
    h = Harness()
    h.feed(*scenario())
    recs = h.records
    for i, r in enumerate(recs):
        if isinstance(r, Decision):
            delivered = r.outcome in ("accepted", "released")
            follows = i + 1 < len(recs) and isinstance(recs[i + 1], Delivery)
            assert follows is delivered, r
            if delivered:
                assert (recs[i + 1].request_id, recs[i + 1].decision_id) == (r.request_id, r.decision_id)
    # 10 free, the reply, the opt-out confirmation, the junk-paced, the released
    assert sum(isinstance(r, Delivery) for r in recs) == 14


def test_event_time_is_the_only_clock():
    # The same story 20 years later (and with different record timestamps) decides the same way.
    shift = 20 * 365 * DAY

    def shifted(doc: dict) -> dict:
        doc = dict(doc, ts=doc["ts"] + shift)
        if "registered_ts" in doc:
            doc["registered_ts"] += shift
        return doc

    base = Harness()
    base.feed(*scenario(), record_ts=0)
    later = Harness()
    later.feed(*[shifted(d) for d in scenario()], record_ts=T)
    a = [(d.request_id, d.outcome, d.reason, d.deliver_at) for d in base.records if isinstance(d, Decision)]
    b = [
        (d.request_id, d.outcome, d.reason, d.deliver_at and d.deliver_at - shift)
        for d in later.records
        if isinstance(d, Decision)
    ]
    assert a == b


def test_record_ts_is_used_for_events_without_ts():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(11))
    assert h.feed(event("tick", at=None), record_ts=T + MINUTE - 1) == []
    [released] = h.feed(event("tick", at=None), record_ts=T + MINUTE)
    assert (released.outcome, released.ts) == ("released", T + MINUTE)


def test_replies_skip_burst_pacing_and_do_not_count_in_the_cluster():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(10))
    h.feed(event("inbound", 0, event_id="in-x", userkey="u50", text="is it there yet?"))
    reply = h.decide(send("u50", at=SECOND, text=PARCEL, reply_to="in-x"))
    assert (reply.outcome, reply.reason, reply.reply) == ("accepted", "reply", True)
    assert (reply.cluster_id, reply.similar_recipients, reply.deliver_at) == (None, None, None)
    assert h.last_deliveries[0].reply_to == "in-x"
    implicit = h.decide(send("u50", at=2 * SECOND, text=PARCEL))  # also a reply: wrote 2 s ago
    assert (implicit.reason, implicit.reply) == ("reply", True)
    eleventh = h.decide(send("u11", at=3 * SECOND, text=PARCEL))
    assert (eleventh.outcome, eleventh.deliver_at, eleventh.similar_recipients) == ("delayed", T + MINUTE, 11)


def test_replies_are_not_checked_against_the_junk_index():
    h = Harness()
    h.feed(*established(), *[event("junk_report", -DAY, sender="S9", userkey=v, text=PARCEL) for v in "abc"])
    h.feed(event("inbound", 0, event_id="in-1", userkey="u1"))
    d = h.decide(send("u1", at=SECOND, text=PARCEL, reply_to="in-1"))
    assert (d.outcome, d.reason) == ("accepted", "reply")


def test_sends_without_consent_do_not_take_burst_allowance():
    h = Harness()
    h.feed(
        *established(grant=False),
        *[event("opt_in", -DAY, userkey=u) for u in recipients(11)],
        event("opt_out", -DAY, userkey="u05"),
        event("opt_in", -DAY, userkey="gone"),
        event("opt_out", -DAY + 1, userkey="gone"),
    )
    ds = [h.decide(send(u, text=PARCEL)) for u in ["x1", "x2", "gone", *recipients(11)]]
    assert [(d.outcome, d.reason) for d in ds[:3]] == [("rejected", "no_conversation")] * 2 + [
        ("rejected", "opted_out")
    ]
    assert [d.cluster_id for d in ds[:3]] == [None] * 3
    rest = {d.userkey: d for d in ds[3:]}
    assert rest["u05"].reason == "opted_out"
    accepted = [d for d in ds[3:] if d.outcome == "accepted"]
    assert len(accepted) == 10 and {d.reason for d in accepted} == {"opt_in"}
    assert (rest["u11"].outcome, rest["u11"].deliver_at) == ("accepted", None)  # u05 was skipped: 10th


def test_state_is_stored_as_bytes_in_small_rows():
    h = Harness()
    h.feed(*scenario()[:-2])
    for name in TABLES:
        for k, v in h.store.tables[name].items():
            assert isinstance(k, bytes) and isinstance(v, bytes)
    assert key("app1", "u1") == b"app1\x1fu1"
    assert set(h.store.tables[USERKEYS]) == {key("app1", "quitter")}
    assert key("app1", "S1", "fan") in h.store.tables[CONVERSATIONS]
    assert h.store.tables[PENDING].keys() == {key("app1", "r-u11-1000")}  # u12 was cancelled


def test_handle_with_a_fresh_store_per_event_forgets_everything():
    # The gate itself keeps no state between events: all of it lives in the store.
    gate = Gate()
    doc = event("inbound", 0, userkey="u1")
    gate.handle(validate(doc, T), MemoryStore())
    out = gate.handle(validate(send("u1", at=SECOND), T), MemoryStore())
    assert [(d.outcome, d.reason) for d in out] == [("rejected", "no_conversation")]


def test_apps_are_isolated():
    h = Harness()
    h.feed(*established(app="app1"), *established(app="app2"))
    h.sends(recipients(10), app="app1")
    d = h.decide(send("u11", text=PARCEL, app="app2"))
    assert (d.outcome, d.reason, d.similar_recipients) == ("accepted", "unrestricted", 1)


@pytest.mark.parametrize("network", ["sms", "whatsapp"])
def test_delivery_carries_the_request(network):
    h = Harness()
    h.feed(event("app_policy", 0))
    d = h.decide(send("u1", at=SECOND, text="Your code is 1234", network=network, request_id="req-9"))
    [x] = h.last_deliveries
    assert x == Delivery("req-9", "app1", "S1", "u1", network, "Your code is 1234", None, T + SECOND, d.decision_id)


def test_policy_thresholds_are_honoured():
    h = Harness(
        Policy.from_mapping(
            {"free_recipients": 2, "reply_window_s": 60, "pace_interval_s": 30, "opt_out_keywords": ["basta"]}
        )
    )
    h.feed(
        *established(),
        event("inbound", 0, event_id="in-1", userkey="u1", text="ciao"),
        event("inbound", 0, userkey="u2", text=" Basta "),
    )
    assert h.decide(send("u1", at=60 * SECOND, text="ok", reply_to="in-1")).reason == "reply"
    assert h.decide(send("u1", at=60 * SECOND + 1, text="ok", reply_to="in-1", request_id="r2")).reason == (
        "conversation"
    )
    assert h.decide(send("u2", at=MINUTE, text=PARCEL)).reason == "opted_out"
    ds = h.sends(recipients(4, start=3), at=2 * MINUTE)
    assert [d.outcome for d in ds] == ["accepted", "accepted", "delayed", "delayed"]
    assert [d.deliver_at for d in ds[2:]] == [T + 2 * MINUTE + 30_000, T + 2 * MINUTE + 60_000]


def test_a_redelivered_delayed_send_gets_the_same_decision_and_no_second_slot():
    # Once decided again: a second slot under the same decision_id, later slots pushed back.
    h = Harness()
    h.feed(*established())
    first = h.sends(recipients(11))[-1]
    again = h.decide(send("u11", text=PARCEL))  # the very same request, delivered twice
    assert again.to_dict() == first.to_dict()
    assert h.last_deliveries == []
    assert h.decide(send("u12", text=PARCEL)).deliver_at == T + 120_000
    released = h.feed(event("tick", MINUTE))
    assert [(d.request_id, d.outcome, d.deliver_at) for d in released] == [("r-u11-0", "released", T + MINUTE)]


def test_a_send_redelivered_after_its_release_takes_no_second_slot():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(11))
    h.feed(event("tick", MINUTE))  # releases r-u11-0
    h.feed(send("u11", text=PARCEL))  # the very same request again (models/memory.py)
    assert h.decide(send("u12", at=MINUTE, text=PARCEL)).deliver_at == T + 2 * MINUTE


def test_a_sender_row_kept_decoded_is_not_used_once_the_stored_row_differs():
    # The gate keeps the sender rows it wrote decoded. A store whose row is not those bytes (a
    # batch aborted and its rows dropped) must be decided from what it holds.
    h = Harness()
    h.feed(*established())
    snapshot = {table: dict(rows) for table, rows in h.store.tables.items()}
    assert all(d.outcome == "accepted" for d in h.sends(recipients(10)))
    assert h.sends(["u11"])[0].reason == "burst_paced"  # the 11th recipient of the text
    h.store.tables = {table: dict(rows) for table, rows in snapshot.items()}  # the 11 sends undone
    assert h.sends(["u11"])[0].reason == "unrestricted"  # the 1st recipient again, not the 12th


def test_every_reader_of_the_log_refuses_an_app_split_over_two_partitions_but_not_a_shared_junk_report():
    gate, homes = Gate(), {}
    opt_in = orjson.dumps({"type": "opt_in", "event_id": "o1", "app": "shop", "userkey": "u", "ts": T})
    assert gate.admit(b"shop", opt_in, T, 2, homes.setdefault).app == "shop" and homes == {"shop": 2}
    with pytest.raises(InvalidEvent, match="app 'shop' lives on partition 2 .* this record is on partition 5") as info:
        gate.admit(b"shop", opt_in, T, 5, homes.setdefault)
    assert info.value.code == Refusal.SPLIT_APP
    shared = orjson.dumps({"type": "junk_shared", "event_id": "j1", "app": "shop", "reporter": 1, "text": "x", "ts": T})
    assert gate.admit(b"shop", shared, T, 5, homes.setdefault).app == "shop"  # on every partition
