"""Conversations lapse after `conversation_horizon_days` without an inbound, and their rows go;
opt-outs and opt-ins never do (models/retention.py)."""

from __future__ import annotations

import pytest

from conftest import APP, DAY, HOUR, SENDER, T, event, send
from sendgate.models.clock import AppClock
from sendgate.models.consent import Userkey
from sendgate.models.decisions import Decision, iso
from sendgate.models.events import validate
from sendgate.models.gate import CLOCKS, CONVERSATIONS, LAPSE_DAYS, LAPSES, USERKEYS, Gate, MemoryStore, key
from sendgate.models.policy import Policy, PolicyError
from sendgate.models.retention import LAPSE_CHUNK, LapseBucket, LapseIndex

HORIZON = 400 * DAY


def run(gate: Gate, store: MemoryStore, *docs: dict) -> list[Decision]:
    out = []
    for doc in docs:
        out += [r for r in gate.handle(validate(doc, 0), store) if isinstance(r, Decision)]
    return out


def conversations(store: MemoryStore) -> set[bytes]:
    return set(store.tables[CONVERSATIONS])


def test_a_conversation_gives_consent_until_its_horizon_and_then_lapses():
    gate, store = Gate(), MemoryStore()
    run(gate, store, event("inbound", 0, userkey="u1"))
    (inside,) = run(gate, store, send("u1", HORIZON - HOUR))
    assert (inside.outcome, inside.reason) == ("accepted", "conversation")
    (after,) = run(gate, store, send("u1", HORIZON + HOUR))
    assert (after.outcome, after.reason) == ("rejected", "no_conversation")
    assert "lapsed" in after.detail and "conversation_horizon_days = 400" in after.detail
    # the user writes again: a conversation again, from that message
    run(gate, store, event("inbound", HORIZON + 2 * HOUR, userkey="u1", text="hi again"))
    (again,) = run(gate, store, send("u1", HORIZON + 3 * HOUR + 20 * 60_000))
    assert (again.outcome, again.reason) == ("accepted", "conversation")
    assert f"first at {iso(T + HORIZON + 2 * HOUR)}" in again.detail  # not the message of 400 days before


def test_lapsed_conversations_are_removed_a_bucket_row_per_event_and_renewed_ones_kept():
    gate, store = Gate(), MemoryStore()
    users = [f"u{i}" for i in range(2 * LAPSE_CHUNK + 10)]  # three bucket rows on day 0
    run(gate, store, *[event("inbound", 0, userkey=u) for u in users])
    renewed = users[:7] + users[-5:]
    run(gate, store, *[event("inbound", 200 * DAY, userkey=u) for u in renewed])
    assert len(conversations(store)) == len(users)
    assert LapseIndex.from_bytes(store.get(LAPSE_DAYS, key(APP))).chunks == [3, 1]

    # Past day 0 + the horizon, each event of the app sweeps one bucket row of day 0.
    remaining = []
    for i in range(4):
        run(gate, store, event("tick", HORIZON + DAY + i * 1000))
        remaining.append(len(conversations(store)))
    # the last row first: its 10 users (5 renewed), then 256 (none renewed), then 256 (7 renewed)
    n = len(users)
    assert remaining == [n - 5, n - 5 - LAPSE_CHUNK, len(renewed), len(renewed)]
    assert {k.split(b"\x1f")[-1].decode() for k in conversations(store)} == set(renewed)
    day_200 = (T + 200 * DAY) // DAY
    assert LapseIndex.from_bytes(store.get(LAPSE_DAYS, key(APP))).days == [day_200]
    assert AppClock.from_bytes(store.get(CLOCKS, key(APP))).sweep_at == (day_200 + 1) * DAY + HORIZON
    assert len(store.tables[LAPSES]) == 1

    # Past day 200 + the horizon, the rest go, and with them the index.
    run(gate, store, event("tick", 200 * DAY + HORIZON + DAY))
    assert conversations(store) == set() and not store.tables[LAPSES] and not store.tables[LAPSE_DAYS]
    assert AppClock.from_bytes(store.get(CLOCKS, key(APP))).sweep_at == 0


def test_an_opt_out_is_never_forgotten():
    gate, store = Gate(), MemoryStore()
    run(gate, store, event("inbound", 0, userkey="u1"), event("inbound", HOUR, userkey="u1", text="STOP"))
    run(gate, store, event("tick", 5 * HORIZON))
    assert conversations(store) == set()  # the conversation went
    (later,) = run(gate, store, send("u1", 5 * HORIZON + DAY))
    assert (later.outcome, later.reason) == ("rejected", "opted_out")  # the opt-out stayed
    assert Userkey.from_bytes(store.get(USERKEYS, key(APP, "u1"))).opted_out is True


def test_an_opt_in_does_not_lapse():
    gate, store = Gate(), MemoryStore()
    run(gate, store, event("opt_in", 0, userkey="fan"))
    (later,) = run(gate, store, send("fan", 3 * HORIZON))
    assert (later.outcome, later.reason) == ("accepted", "opt_in")


def test_a_horizon_of_zero_keeps_every_conversation_and_writes_no_index():
    gate, store = Gate(Policy(conversation_horizon_days=0)), MemoryStore()
    run(gate, store, event("inbound", 0, userkey="u1"), event("tick", 3 * HORIZON))
    (later,) = run(gate, store, send("u1", 3 * HORIZON + HOUR))
    assert (later.outcome, later.reason) == ("accepted", "conversation")
    assert not store.tables[LAPSE_DAYS] and not store.tables[LAPSES]
    with pytest.raises(PolicyError, match="conversation_horizon_days"):
        Policy(conversation_horizon_days=-1)


def test_a_conversation_is_listed_once_a_day_and_rows_stay_bounded():
    gate, store = Gate(), MemoryStore()
    run(gate, store, *[event("inbound", h * HOUR, userkey="u1") for h in range(24 * 3)])  # three days, hourly
    days = sorted({(T + h * HOUR) // DAY for h in range(24 * 3)})
    assert LapseIndex.from_bytes(store.get(LAPSE_DAYS, key(APP))).days == days
    assert len(store.tables[LAPSES]) == len(days)
    assert all(len(LapseBucket.from_bytes(v).entries) == 1 for v in store.tables[LAPSES].values())
    assert AppClock.from_bytes(store.get(CLOCKS, key(APP))).sweep_at == (days[0] + 1) * DAY + HORIZON


def test_the_rows_are_versioned():
    assert LapseIndex([5], [2]).to_bytes() == b"1[[5],[2]]"  # version 1, then the fields (models/rows.py)
    assert LapseIndex.from_bytes(LapseIndex([5], [2]).to_bytes()) == LapseIndex([5], [2])
    bucket = LapseBucket()
    bucket.add(SENDER, "u1")
    bucket.add(SENDER, "u2")
    assert bucket.to_bytes() == b"1\x1eS1\x1fu1\x1eS1\x1fu2"
    assert LapseBucket.from_bytes(bucket.to_bytes()).entries == [(SENDER, "u1"), (SENDER, "u2")]
    assert LapseBucket.from_bytes(bucket.to_bytes()).size == bucket.size == 2  # (counted when read, not per append)
    with pytest.raises(ValueError, match="version"):
        LapseBucket.from_bytes(b"2")
