"""clock.py and the gate's event time: no producer can move an app's clock back or bend it far."""

from __future__ import annotations

import orjson
import pytest

from conftest import APP, DAY, HOUR, MINUTE, PARCEL, SECOND, T, event, send
from sendgate.models.clock import AppClock
from sendgate.models.gate import CLOCKS, Gate, MemoryStore, key
from sendgate.models.policy import Policy, PolicyError


def test_the_clock_never_moves_back():
    clock = AppClock()
    assert clock.advance(T, None) == (T, False)
    assert clock.advance(T - MINUTE, None) == (T, False)  # an older event is decided at the app's time
    assert clock.advance(T + SECOND, None) == (T + SECOND, False)


def test_an_event_trailing_its_record_beyond_the_skew_is_decided_at_the_bound():
    clock = AppClock()
    assert clock.advance(T - 9 * HOUR, T - 10 * MINUTE) == (T - 10 * MINUTE, True)
    # within the skew, the event's own time stands (it is ahead of the clock)
    assert clock.advance(T - 5 * MINUTE, T - 10 * MINUTE) == (T - 5 * MINUTE, False)
    # the app's clock dominates: no note about the skew
    assert clock.advance(T - 9 * HOUR, T - 20 * MINUTE) == (T - 5 * MINUTE, False)


def test_the_row_is_versioned_and_round_trips():
    raw = AppClock(T, T + DAY).to_bytes()
    assert raw == b"3[%d,%d,0]" % (T, T + DAY)  # version 3, then the fields (models/rows.py)
    assert AppClock.from_bytes(raw) == AppClock(T, T + DAY) and AppClock.from_bytes(None) == AppClock()
    assert AppClock.from_bytes(orjson.dumps([1, T])) == AppClock(T, 0)  # written before retention
    with pytest.raises(ValueError, match="version 4"):
        AppClock.from_bytes(orjson.dumps([4, T, 0, 0]))


def test_max_ts_behind_s_is_a_positive_policy_setting():
    assert Policy().max_ts_behind_s == 600
    with pytest.raises(PolicyError, match="max_ts_behind_s"):
        Policy(max_ts_behind_s=0)


def _record(doc: dict) -> tuple[bytes, bytes]:
    return doc["app"].encode(), orjson.dumps(doc)


def _backdated_blast(record_ts_of) -> list:
    """40 users wrote 9 h before T; 40 near-identical sends stamped 1 s after each user's inbound,
    their records stamped `record_ts_of(send ts)`. Returns the decisions on the sends."""
    gate, store = Gate(), MemoryStore()
    out = []
    for i in range(40):
        at = -9 * HOUR + i * SECOND
        inbound = event("inbound", at, userkey=f"u{i}", event_id=f"i{i}", text="hi")
        gate.handle_record(*_record(inbound), T + at, store)  # honest history: record time = ts
    for i in range(40):
        doc = send(f"u{i}", at=-9 * HOUR + i * SECOND + SECOND, text=f"Dear u{i}, {PARCEL}")
        out += [r for r in gate.handle_record(*_record(doc), record_ts_of(doc["ts"]), store) if hasattr(r, "outcome")]
    return out


def test_a_backdated_blast_is_paced_not_taken_for_replies():
    decisions = _backdated_blast(lambda ts: T)  # records stamped now, ts 9 h in the past
    assert not [d for d in decisions if d.reason == "reply"]
    assert sum(d.outcome == "delayed" for d in decisions) >= 30
    first = decisions[0]
    assert first.ts == T - 10 * MINUTE and "max_ts_behind_s = 600 s" in first.detail


def test_backfill_with_record_time_equal_to_ts_decides_as_before():
    decisions = _backdated_blast(lambda ts: ts)
    assert [(d.outcome, d.reason) for d in decisions] == [("accepted", "reply")] * 40
    assert all("max_ts_behind_s" not in d.detail for d in decisions)


def test_the_clock_is_a_row_of_the_app():
    gate, store = Gate(), MemoryStore()
    gate.handle_record(*_record(event("inbound", 0)), T, store)
    assert AppClock.from_bytes(store.get(CLOCKS, key(APP))).ts == T
    assert store.get(CLOCKS, key("other")) is None
