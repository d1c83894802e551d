"""events.py: decoding and validation of v1 input events; errors name the field and the problem."""

from __future__ import annotations

import json
from typing import get_args

import orjson
import pytest

from conftest import T, event
from sendgate.models import events as ev
from sendgate.models.categories import CATEGORIES
from sendgate.models.events import InvalidEvent, decode_event, encode_event, validate

ALL_KINDS = (
    "inbound",
    "opt_in",
    "opt_out",
    "send",
    "app_policy",
    "sender_profile",
    "junk_report",
    "delivery_status",
    "contact",
    "tick",
    "cancel",
    "junk_shared",
    "recipient_profile",
)


def invalid(doc, record_ts: int = T) -> str:
    with pytest.raises(InvalidEvent) as info:
        validate(doc, record_ts)
    return str(info.value)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_validates_and_round_trips_through_its_canonical_json(kind):
    doc = event(kind)
    e = validate(doc, 0)
    assert ev.event_type(e) == kind
    assert e.ts == T
    assert decode_event(encode_event(e), 0) == e


def test_junk_report_without_request_id_round_trips():
    # Once defaulted to '', which encode_event wrote out and decode_event then rejected.
    e = validate(event("junk_report"), 0)
    assert orjson.loads(encode_event(e))["request_id"] is None
    assert decode_event(encode_event(e), 0) == e


def test_junk_report_with_request_id_round_trips():
    e = validate(event("junk_report", request_id="r-77"), 0)
    assert e.request_id == "r-77"
    assert decode_event(encode_event(e), 0) == e


def test_event_types_are_exactly_the_contract_v1_types():
    assert set(ev.EVENT_TYPES) == set(ALL_KINDS)


def test_send_fields_are_carried_over():
    e = validate(
        event("send", 5, request_id="r9", userkey="u7", sender="S2", network="whatsapp", text="Hi", reply_to="in-3"), 0
    )
    assert e == ev.Send("r9", "app1", "S2", "u7", "whatsapp", "Hi", "in-3", T + 5)


def test_optional_fields_get_their_defaults():
    assert validate(event("send"), 0).reply_to is None
    assert validate(event("send", reply_to=None), 0).reply_to is None
    assert validate(event("opt_in"), 0).source == ""
    assert validate(event("opt_out", source="web-form"), 0).source == "web-form"
    assert validate(event("app_policy"), 0).reason == ""
    assert validate(event("junk_report"), 0).request_id is None


# --- ts ---------------------------------------------------------------------------------------
def test_ts_defaults_to_the_record_timestamp_when_absent():
    assert validate(event("tick", at=None), record_ts=T + 42).ts == T + 42


def test_ts_null_also_defaults_to_the_record_timestamp():
    assert validate({**event("tick", at=None), "ts": None}, record_ts=T + 7).ts == T + 7


def test_an_explicit_ts_wins_over_the_record_timestamp():
    assert validate(event("tick", at=3), record_ts=T + 999_999).ts == T + 3


@pytest.mark.parametrize("bad, got", [(1.5e12, "float"), (True, "bool"), ("1700000000000", "str")])
def test_ts_must_be_an_integer(bad, got):
    msg = invalid({**event("tick"), "ts": bad})
    assert msg == f"field 'ts' must be an integer of epoch milliseconds, got {got}"


@pytest.mark.parametrize("bad", [-1, ev.MAX_TS + 1])
def test_ts_must_be_in_range(bad):
    assert "field 'ts' must be epoch milliseconds between 0 and" in invalid({**event("tick"), "ts": bad})


def test_ts_bounds_are_inclusive():
    assert validate({**event("tick"), "ts": 0}, T).ts == 0
    assert validate({**event("tick"), "ts": ev.MAX_TS}, T).ts == ev.MAX_TS


def test_invalid_record_ts_is_reported_when_it_is_used():
    assert "got -5" in invalid(event("tick", at=None), record_ts=-5)


# --- fields -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, field",
    [
        ("send", "request_id"),
        ("send", "app"),
        ("send", "sender"),
        ("send", "userkey"),
        ("send", "network"),
        ("send", "text"),
        ("inbound", "event_id"),
        ("inbound", "text"),
        ("opt_out", "userkey"),
        ("app_policy", "unrestricted"),
        ("sender_profile", "registered_ts"),
        ("junk_report", "text"),
        ("tick", "app"),
        ("cancel", "request_id"),
    ],
)
def test_missing_required_field_is_named(kind, field):
    doc = event(kind)
    del doc[field]
    assert invalid(doc) == f"{kind}: missing required field '{field}'"


@pytest.mark.parametrize(
    "field, value, got",
    [
        ("userkey", 42, "int"),
        ("app", None, "NoneType"),
        ("text", ["hi"], "list"),
        ("sender", 1.0, "float"),
    ],
)
def test_wrong_type_is_named(field, value, got):
    assert invalid({**event("send"), field: value}) == f"field '{field}' must be a string, got {got}"


def test_unrestricted_must_be_a_boolean_not_a_truthy_value():
    assert invalid(event("app_policy", unrestricted=1)) == "field 'unrestricted' must be true or false, got int"
    assert invalid(event("app_policy", unrestricted="true")) == "field 'unrestricted' must be true or false, got str"


def test_registered_ts_is_checked_like_ts():
    assert invalid(event("sender_profile", registered_ts="2020-01-01")) == (
        "field 'registered_ts' must be an integer of epoch milliseconds, got str"
    )


def test_text_at_the_limit_is_accepted_and_one_more_character_is_not():
    assert len(validate(event("send", text="x" * 10_000), 0).text) == 10_000
    assert invalid(event("send", text="x" * 10_001)) == "field 'text' is 10001 characters; the limit is 10000"


def test_oversized_inbound_and_junk_text_are_rejected_too():
    assert "field 'text' is 10001 characters" in invalid(event("inbound", text="y" * 10_001))
    assert "field 'text' is 10001 characters" in invalid(event("junk_report", text="y" * 10_001))


def test_empty_text_is_allowed():
    assert validate(event("send", text=""), 0).text == ""


@pytest.mark.parametrize("network", ["sms", "whatsapp", "rcs_2", "a-b", "x" * 32, "0"])
def test_good_network_names(network):
    assert validate(event("send", network=network), 0).network == network


@pytest.mark.parametrize("network", ["SMS", "", "x" * 33, "sms ", "sms\n", "e-mail!", "wäp", 7])
def test_bad_network_name_is_rejected_with_the_pattern(network):
    msg = invalid(event("send", network=network))
    assert msg.startswith("field 'network' must match [a-z0-9_-]{1,32}, got ")
    assert repr(network)[:60] in msg


def test_bad_network_value_in_message_is_truncated():
    msg = invalid(event("inbound", network="Q" * 500))
    assert len(msg) < 120


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "must be 1-256 characters, got 0"),
        ("x" * 257, "must be 1-256 characters, got 257"),
        ("a\x1fb", "must not contain control characters"),
        ("a\nb", "must not contain control characters"),
        ("a\x7fb", "must not contain control characters"),
    ],
)
def test_id_fields_are_bounded_and_free_of_control_characters(value, problem):
    assert invalid(event("send", userkey=value)) == f"field 'userkey' {problem}"


def test_id_of_exactly_256_characters_is_accepted():
    assert validate(event("send", app="a" * 256), 0).app == "a" * 256


def test_reply_to_is_checked_as_an_id_when_present():
    assert invalid(event("send", reply_to="")) == "field 'reply_to' must be 1-256 characters, got 0"
    assert invalid(event("send", reply_to=5)) == "field 'reply_to' must be a string, got int"


def test_optional_source_must_be_text():
    assert invalid(event("opt_out", source=3)) == "field 'source' must be a string, got int"


def test_unknown_fields_are_ignored():
    assert validate({**event("tick"), "extra": {"nested": 1}}, 0) == ev.Tick("app1", T)


# --- type and document shape ------------------------------------------------------------------
def test_unknown_type_lists_the_known_types():
    msg = invalid({**event("tick"), "type": "unsubscribe"})
    assert msg == (
        "field 'type' must be one of inbound, opt_in, opt_out, send, app_policy, sender_profile, "
        "junk_report, delivery_status, contact, tick, cancel, junk_shared, recipient_profile, got 'unsubscribe'"
    )


@pytest.mark.parametrize("kind", [None, 3, ["send"]])
def test_type_must_be_a_known_string(kind):
    doc = {**event("tick"), "type": kind}
    assert invalid(doc).startswith("field 'type' must be one of ")


def test_missing_type():
    doc = event("tick")
    del doc["type"]
    assert invalid(doc).endswith("got None")


@pytest.mark.parametrize("doc, got", [([1, 2], "list"), ("send", "str"), (None, "NoneType"), (3, "int")])
def test_event_must_be_an_object(doc, got):
    assert invalid(doc) == f"an event must be a JSON object, got {got}"


# --- raw records ------------------------------------------------------------------------------
def decode_error(raw, record_ts: int = T) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, record_ts)
    return str(info.value)


def test_decode_uses_record_ts_for_missing_ts():
    raw = orjson.dumps({"type": "cancel", "app": "a", "request_id": "r"})
    assert decode_event(raw, T + 1) == ev.Cancel("r", "a", T + 1)


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"type": "tick", "app": "a"', b"\xff\xfe{}"])
def test_not_json(raw):
    assert decode_error(raw).startswith("not valid UTF-8 JSON: ")


def test_record_without_value():
    assert decode_error(None) == "record has no value"


def test_oversized_record_is_rejected_before_parsing():
    raw = b" " * (ev.MAX_RECORD_BYTES + 1)
    assert decode_error(raw) == f"record is {ev.MAX_RECORD_BYTES + 1} bytes; the limit is {ev.MAX_RECORD_BYTES}"


def test_decode_reports_validation_errors_too():
    raw = orjson.dumps({"type": "send", "app": "a"})
    assert decode_error(raw) == "send: missing required field 'request_id'"


def test_invalid_event_is_a_value_error():
    assert issubclass(InvalidEvent, ValueError)


# --- the msgspec decoder and the explanation agree -----------------------------------------------
def test_the_category_names_are_the_categories():
    assert get_args(ev.CategoryName) == CATEGORIES


def outcome(call):
    try:
        return call()
    except InvalidEvent as exc:
        return exc.code, str(exc)


# Records the msgspec decoder refuses or passes on to the checks after it: each must come out of
# decode_event as it comes out of validate (the same event, or the same code and message).
AGREEMENT = [
    event("send"),
    event("send", userkey="a\nb"),  # an escape: the id is scanned
    event("send", text="line\none", userkey="a\x7fb"),  # DEL travels unescaped
    event("send", text='say "hi"'),  # an escape, and no control character in an id
    event("send", reply_to=None, valid_for_s=None, category=None),  # null is absent
    event("send", category="urgent"),
    event("opt_out", source=None),
    event("opt_in", categories=["promotional", "informational", "promotional"]),
    event("opt_in", categories=[]),
    event("junk_shared", reporter=2**64 - 1),
    event("junk_shared", reporter=-1),  # (2**64 reads as a float in orjson: refused as one)
    event("recipient_profile", timezone="Mars/Olympus_Mons"),
    event("recipient_profile", region="gb"),
    {**event("tick", at=None), "ts": None},
    event("tick", at=None),
    {"type": "send", "request_id": 5},  # the first field at fault is named, not a missing later one
    {"type": "send", "request_id": "a\tb"},
    {"type": "cancel", "app": "a", "request_id": "r", "ts": 2.0},
]


@pytest.mark.parametrize("doc", AGREEMENT)
@pytest.mark.parametrize("ascii", [False, True])  # True: non-ASCII escaped, as Python's json writes it
def test_decode_event_says_what_validate_says(doc, ascii):
    raw = json.dumps(doc, ensure_ascii=ascii).encode()
    assert outcome(lambda: decode_event(raw, T)) == outcome(lambda: validate(doc, T))


def test_a_record_nested_deeper_than_the_stack_is_read_as_orjson_reads_it():
    # msgspec raises RecursionError near the interpreter's limit; orjson reads 1,024 levels
    nested = b"[" * 1000 + b"]" * 1000
    raw = b'{"type": "tick", "app": "a", "x": ' + nested + b"}"
    assert decode_event(raw, T) == ev.Tick("a", T)


def test_a_number_beyond_a_double_in_an_unknown_field_is_ignored_with_the_field():
    # A change with msgspec: orjson refused the whole record (not_json); msgspec skips the field.
    assert decode_event(b'{"type": "tick", "app": "a", "x": 1e999}', T) == ev.Tick("a", T)
    assert "not valid UTF-8 JSON" in decode_error(b'{"type": "tick", "app": "a", "ts": 1e999}')
