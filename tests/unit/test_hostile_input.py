"""Property tests: whatever bytes arrive, the decoder and the gate answer with an event, a decision
or a precise InvalidEvent, and nothing else (the worker dead-letters InvalidEvent and goes on)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendgate.models.events import EVENT_TYPES, InvalidEvent, decode_event
from sendgate.models.gate import Gate, MemoryStore

RECORD_TS = 1_700_000_000_000
GATE = Gate()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
field_values = st.one_of(json_values, st.text(max_size=300), st.sampled_from(["sms", "SMS", "", "a" * 257]))
FIELDS = [
    "event_id",
    "request_id",
    "app",
    "sender",
    "userkey",
    "network",
    "text",
    "reply_to",
    "source",
    "reason",
    "unrestricted",
    "registered_ts",
    "ts",
]
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES + ("bogus",))},
    optional={name: field_values for name in FIELDS},
)


def decide(raw: bytes | None, key: bytes | None = b"a") -> str:
    """'ok' or the dead-letter reason; any other exception fails the test."""
    try:
        GATE.handle_record(key, raw, RECORD_TS, MemoryStore())
        return "ok"
    except InvalidEvent as exc:
        assert str(exc), "a dead-letter reason must not be empty"
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(raw):
    decide(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_like, st.sampled_from([b"a", b"other", None]))
def test_event_shaped_documents_are_decided_or_refused_precisely(doc, key):
    doc.setdefault("app", "a")
    try:
        raw = orjson.dumps(doc)
    except TypeError:  # orjson refuses ints beyond 64 bits: a producer could not send that either
        return
    decide(raw, key)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"[" * 100_000, "the limit is 65536"),  # huge
        (b"[" * 5_000 + b"]" * 5_000, "not valid UTF-8 JSON"),  # deep: orjson refuses past 1024 levels
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (None, "record has no value"),
        (b'{"type":"tick","app":"a","ts":-5}', "between 0 and"),
        (b'{"type":"tick","app":"a","ts":1e3}', "must be an integer"),
        (
            b'{"type":"send","request_id":"r","app":"a","sender":"s","userkey":"u","network":"sms","text":5}',
            "field 'text' must be a string",
        ),
    ],
)
def test_hostile_records_get_precise_reasons(raw, reason):
    assert reason in decide(raw)


def test_an_event_far_ahead_of_its_record_time_is_refused():
    ahead = RECORD_TS + GATE.policy.max_ts_ahead_s * 1000
    assert decide(orjson.dumps({"type": "tick", "app": "a", "ts": ahead})) == "ok"
    reason = decide(orjson.dumps({"type": "tick", "app": "a", "ts": ahead + 1}))
    assert reason == "field 'ts' is 600 s ahead of the record's timestamp; the limit is 600 s (max_ts_ahead_s)"


def test_decode_without_a_bound_keeps_historic_imports_possible():
    assert decode_event(b'{"type":"tick","app":"a","ts":9999999999999}', 0).ts == 9_999_999_999_999
