"""pending.py: delayed requests, their due buckets and the release schedule; release and cancel.

Rules: a delayed request is released (`released`/`slot_reached` + a Delivery) by any later event
of the same app whose ts >= deliver_at, in deliver_at order. A user who opted out meanwhile gets
`cancelled`/`opted_out`. A `cancel` event cancels a pending request (`cancelled_by_app`); cancelling
an unknown, released or already cancelled request yields `rejected`/`not_pending`.
"""

from __future__ import annotations

import pytest

from conftest import DAY, MINUTE, PARCEL, SECOND, T, UNRELATED, Harness, established, event, recipients, send
from sendgate.models.decisions import Decision, Delivery
from sendgate.models.events import Send, Tick
from sendgate.models.gate import DUE, PENDING, SCHEDULES, Gate, MemoryStore, UnitOfWork, key
from sendgate.models.gate.pending import put_in_schedule
from sendgate.models.pending import DUE_CHUNK, MINUTE_MS, DueBucket, PendingRequest, ReleaseSchedule

SLOT = T + MINUTE  # deliver_at of the 11th recipient when 11 sends arrive at T
R11 = "r-u11-0"  # its request id


# === aggregates ===============================================================================
@pytest.mark.parametrize("reply_to", [None, "in-1"])
def test_pending_request_round_trip(reply_to):
    decision = {
        "type": "decision",
        "decision_id": "r1:delayed:burst_paced",
        "request_id": "r1",
        "ts": T,
        "deliver_at": T + 5,
        "reply": False,
    }
    p = PendingRequest(Send("r1", "app1", "S1", "u1", "sms", "Hi é", reply_to, T), T + 5, "c3", decision)
    assert PendingRequest.from_bytes(p.to_bytes()) == p


def test_due_bucket_split_is_inclusive():
    b = DueBucket([[T + 10, "a"], [T + 5, "b"], [T + 11, "c"]])
    assert b.split(T + 10) == ([[T + 10, "a"], [T + 5, "b"]], [[T + 11, "c"]])
    assert b.split(T + 4) == ([], b.entries)


def test_due_bucket_round_trip():
    b = DueBucket([[T, "r1"], [T + 1, "r2"]])
    assert DueBucket.from_bytes(b.to_bytes()) == b
    assert DueBucket.from_bytes(None) == DueBucket([])


def test_schedule_lists_each_minute_once_in_order_and_the_earliest_due():
    s = ReleaseSchedule()
    assert not s.is_due(T)
    m = T // MINUTE_MS
    assert s.add(T + 2 * MINUTE + 5) == m + 2
    assert s.add(T + 30) == m
    assert s.add(T + 2 * MINUTE + 1) == m + 2
    assert s.minutes == [m, m + 2]
    assert s.next_due == T + 30
    assert not s.is_due(T + 29)
    assert s.is_due(T + 30)


def test_schedule_round_trip():
    s = ReleaseSchedule()
    s.add(T + 3 * MINUTE)
    s.add(T)
    assert ReleaseSchedule.from_bytes(s.to_bytes()) == s
    assert ReleaseSchedule.from_bytes(None) == ReleaseSchedule([], None, [])


def test_schedule_rows_of_version_1_are_read_as_one_bucket_a_minute():
    m = T // MINUTE_MS
    old = b"[[%d,%d],%d]" % (m, m + 2, T + 30)  # [minutes, next_due], as written before chunks
    s = ReleaseSchedule.from_bytes(old)
    assert (s.minutes, s.chunks, s.next_due) == ([m, m + 2], [1, 1], T + 30)
    with pytest.raises(ValueError, match="version 3"):
        ReleaseSchedule.from_bytes(b"[3,[],[],null]")


def test_20000_requests_due_in_one_minute_of_one_app_keep_every_row_bounded():
    gate, store = Gate(), MemoryStore()
    minute_start = (T // MINUTE_MS + 1) * MINUTE_MS
    n = 20_000
    for i in range(n):
        request_id = f"req-{i:05d}-" + "x" * 40  # long ids: ~60 bytes an entry
        deliver_at = minute_start + (i * 7919) % MINUTE_MS  # spread over the minute, out of order
        decision = {"type": "decision", "request_id": request_id, "outcome": "delayed"}
        pending = PendingRequest(
            Send(request_id, "app1", "S1", f"u{i}", "sms", "hi", None, T), deliver_at, "c", decision
        )
        store.set(PENDING, key("app1", request_id), pending.to_bytes())
        unit = UnitOfWork(store, gate.decoded)
        put_in_schedule(gate, "app1", request_id, deliver_at, unit)
        unit.commit()
    rows = store.tables[DUE]
    assert len(rows) == -(-n // DUE_CHUNK)  # the minute spans ceil(n / DUE_CHUNK) rows
    assert max(map(len, rows.values())) <= DUE_CHUNK * 70  # 69-byte entries: ~18 KB, far below 1 MB
    assert len(store.tables[SCHEDULES][key("app1")]) < 100
    # half the minute: exactly the due half is released, in deliver_at order; the rest waits
    first_half = sum((i * 7919) % MINUTE_MS < MINUTE_MS // 2 for i in range(n))
    half = gate.handle(Tick("app1", minute_start + MINUTE_MS // 2 - 1), store)
    assert len(half) == 2 * first_half  # a decision and a delivery each
    slots = [d.deliver_at for d in half if isinstance(d, Decision)]
    assert slots == sorted(slots) and slots[-1] < minute_start + MINUTE_MS // 2
    rest = gate.handle(Tick("app1", minute_start + MINUTE_MS), store)
    assert len(rest) == 2 * (n - first_half)
    assert store.tables[DUE] == {} and store.tables[PENDING] == {}
    assert ReleaseSchedule.from_bytes(store.tables[SCHEDULES][key("app1")]) == ReleaseSchedule([], None, [])


# === release through the gate ================================================================
@pytest.fixture
def delayed() -> Harness:
    """app1/S1 established; 11 sends at T, so u11's request R11 waits for SLOT (T + 60 s)."""
    h = Harness()
    h.feed(*established())
    ds = h.sends(recipients(11))
    assert (ds[-1].request_id, ds[-1].outcome, ds[-1].deliver_at) == (R11, "delayed", SLOT)
    return h


def test_tick_before_the_slot_releases_nothing_and_at_the_slot_releases(delayed):
    assert delayed.feed(event("tick", SLOT - T - 1)) == []
    assert delayed.last == []
    ds = delayed.feed(event("tick", SLOT - T))
    assert [(d.request_id, d.outcome, d.reason, d.deliver_at, d.ts) for d in ds] == [
        (R11, "released", "slot_reached", SLOT, SLOT)
    ]
    assert ds[0].userkey == "u11" and ds[0].sender == "S1" and ds[0].cluster_id is not None
    [delivery] = delayed.last_deliveries
    assert delivery == Delivery(
        R11, "app1", "S1", "u11", "sms", PARCEL, None, SLOT, f"app1:{R11}:released:slot_reached"
    )


def test_release_happens_once(delayed):
    delayed.feed(event("tick", 2 * MINUTE))
    assert delayed.feed(event("tick", 3 * MINUTE)) == []


def test_release_cleans_up_its_rows(delayed):
    delayed.feed(event("tick", 2 * MINUTE))
    assert delayed.store.tables[PENDING] == {}
    assert delayed.store.tables[DUE] == {}
    assert ReleaseSchedule.from_bytes(delayed.store.get(SCHEDULES, b"app1")) == ReleaseSchedule([], None)


def test_events_of_another_app_do_not_release(delayed):
    assert delayed.feed(event("tick", DAY, app="app2"), event("inbound", DAY, app="app2")) == []


@pytest.mark.parametrize(
    "doc",
    [
        event("inbound", MINUTE, userkey="someone", text="hello"),
        event("opt_in", MINUTE, userkey="someone"),
        event("opt_out", MINUTE, userkey="someone"),
        event("app_policy", MINUTE),
        event("sender_profile", MINUTE, sender="S2"),
        event("junk_report", MINUTE, sender="S7", userkey="v1", text="unrelated junk"),
        event("cancel", MINUTE, request_id="nothing-like-it"),
        send("u99", at=MINUTE, text=UNRELATED[0]),
    ],
    ids=lambda d: d["type"],
)
def test_any_later_event_of_the_app_releases_first(delayed, doc):
    ds = delayed.feed(doc)
    assert (ds[0].request_id, ds[0].outcome, ds[0].ts) == (R11, "released", SLOT)
    assert isinstance(delayed.last[1], Delivery) and delayed.last[1].request_id == R11


def test_releases_come_in_deliver_at_order_across_clusters(gate: Harness):
    gate.feed(*established())
    a = gate.sends(recipients(12), text=PARCEL)  # a11 @ T+60 s, a12 @ T+120 s
    b = gate.sends(recipients(11, start=21), at=30 * SECOND, text=UNRELATED[0])  # b11 @ T+90 s
    pending = {d.request_id: d.deliver_at for d in a + b if d.outcome == "delayed"}
    assert sorted(pending.values()) == [T + 60_000, T + 90_000, T + 120_000]
    ds = gate.feed(event("tick", 2 * DAY))
    assert [d.request_id for d in ds] == sorted(pending, key=pending.get)
    assert [d.deliver_at for d in ds] == [T + 60_000, T + 90_000, T + 120_000]
    assert [x.request_id for x in gate.last_deliveries] == [d.request_id for d in ds]


def test_a_tick_releases_only_what_is_due(gate: Harness):
    gate.feed(*established())
    ds = gate.sends(recipients(14))
    slots = [d.deliver_at for d in ds[10:]]
    assert slots == [T + 60_000, T + 120_000, T + 181_200, T + 243_600]
    first = gate.feed(event("tick", 181_200 - 1))
    assert [d.deliver_at for d in first] == slots[:2]
    second = gate.feed(event("tick", 181_200))
    assert [d.deliver_at for d in second] == slots[2:3]
    third = gate.feed(event("tick", 10 * MINUTE))
    assert [d.deliver_at for d in third] == slots[3:]


@pytest.mark.parametrize(
    "opt_out",
    [
        event("opt_out", SECOND, userkey="u11"),
        event("inbound", SECOND, userkey="u11", sender="S1", text=" stop"),
    ],
    ids=["event", "keyword"],
)
def test_user_who_opted_out_meanwhile_is_cancelled_on_release(delayed, opt_out):
    delayed.feed(opt_out)
    ds = delayed.feed(event("tick", SLOT - T))
    assert [(d.request_id, d.outcome, d.reason, d.ts) for d in ds] == [(R11, "cancelled", "opted_out", SLOT)]
    assert delayed.last_deliveries == []


def test_opt_out_then_opt_in_before_the_slot_is_released(delayed):
    delayed.feed(event("opt_out", SECOND, userkey="u11"), event("opt_in", 2 * SECOND, userkey="u11"))
    ds = delayed.feed(event("tick", SLOT - T))
    assert [(d.outcome, d.reason) for d in ds] == [("released", "slot_reached")]


def test_opt_out_after_the_slot_does_not_cancel_a_release_it_triggers(delayed):
    # The opt-out event is itself the first event past the slot: the slot came first.
    ds = delayed.feed(event("opt_out", MINUTE + 1, userkey="u11"))
    assert [(d.request_id, d.outcome) for d in ds] == [(R11, "released")]


# === cancel ==================================================================================
def test_cancel_pending_request(delayed):
    d = delayed.decide(event("cancel", SECOND, request_id=R11))
    assert (d.request_id, d.outcome, d.reason, d.ts) == (R11, "cancelled", "cancelled_by_app", T + SECOND)
    assert (d.app, d.sender, d.userkey, d.network) == ("app1", "S1", "u11", "sms")
    assert delayed.feed(event("tick", DAY)) == []
    assert delayed.last_deliveries == []


def test_cancel_twice_is_not_pending(delayed):
    delayed.feed(event("cancel", SECOND, request_id=R11))
    d = delayed.decide(event("cancel", 2 * SECOND, request_id=R11))
    assert (d.request_id, d.outcome, d.reason) == (R11, "rejected", "not_pending")


def test_cancel_after_release_is_not_pending(delayed):
    delayed.feed(event("tick", MINUTE))
    d = delayed.decide(event("cancel", 2 * MINUTE, request_id=R11))
    assert (d.outcome, d.reason) == ("rejected", "not_pending")


def test_cancel_at_the_slot_comes_too_late(delayed):
    ds = delayed.feed(event("cancel", MINUTE, request_id=R11))
    assert [(d.request_id, d.outcome, d.reason) for d in ds] == [
        (R11, "released", "slot_reached"),
        (R11, "rejected", "not_pending"),
    ]


def test_cancel_unknown_request(gate: Harness):
    d = gate.decide(event("cancel", 0, request_id="r-nope"))
    assert (d.request_id, d.app, d.outcome, d.reason, d.ts) == ("r-nope", "app1", "rejected", "not_pending", T)
    assert "r-nope" in d.detail


def test_cancel_of_an_accepted_request_is_not_pending(delayed):
    d = delayed.decide(event("cancel", SECOND, request_id="r-u01-0"))
    assert (d.outcome, d.reason) == ("rejected", "not_pending")


def test_cancel_is_per_app(delayed):
    d = delayed.decide(event("cancel", SECOND, app="app2", request_id=R11))
    assert (d.outcome, d.reason) == ("rejected", "not_pending")
    ds = delayed.feed(event("tick", MINUTE))
    assert [(x.request_id, x.outcome) for x in ds] == [(R11, "released")]


def test_cancelling_one_of_several_keeps_the_others(gate: Harness):
    gate.feed(*established())
    ds = gate.sends(recipients(13))
    gate.feed(event("cancel", SECOND, request_id="r-u12-0"))
    assert [d.deliver_at for d in ds[10:]] == [T + 60_000, T + 120_000, T + 181_200]
    out = gate.feed(event("tick", 10 * MINUTE))
    assert [(d.request_id, d.outcome, d.deliver_at) for d in out] == [
        ("r-u11-0", "released", T + 60_000),
        ("r-u13-0", "released", T + 181_200),
    ]
