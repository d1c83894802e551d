"""models/schemas/*.json: the JSON Schemas of contract v1 agree with the Python code.

Input events: on a table of valid and invalid documents, the schema (`event.json`, and the schema
of the document's own kind) accepts exactly what `models.events.validate` accepts. Outputs: the
records that `Decision`, `Delivery` and `GateWorker.dead_letter` produce conform to `decision.json`,
`delivery.json` and `deadletter.json`. The known differences are asserted as such (see
`test_known_difference_*`), so a change on either side shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import msgspec
import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from conftest import APP, DAY, MINUTE, SENDER, T, Harness, event, send
from sendgate.models import events as ev
from sendgate.models.decisions import ConsentRecord, Decision, Delivery, GrantRevocation
from sendgate.models.events import InvalidEvent, decode_event, encode_event, validate
from sendgate.models.policy import Policy

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "models" / "schemas"
BASE = "https://sendgate.example/schemas/v1/"
KINDS = (
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
OUTPUTS = ("decision", "delivery", "deadletter", "consent", "grant_revocation")

SCHEMAS: dict[str, dict[str, Any]] = {p.stem: json.loads(p.read_text("utf-8")) for p in SCHEMA_DIR.glob("*.json")}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
VALIDATORS = {name: Draft202012Validator(s, registry=REGISTRY) for name, s in SCHEMAS.items()}


def schema_accepts(name: str, doc: Any) -> bool:
    return VALIDATORS[name].is_valid(doc)


def python_accepts(doc: Any) -> bool:
    try:
        validate(doc, T)
    except InvalidEvent:
        return False
    return True


# --- the schema files themselves -------------------------------------------------------------------
def test_every_expected_schema_exists_and_is_a_valid_2020_12_schema():
    assert set(KINDS) | set(OUTPUTS) | {"event"} <= set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert schema["$id"] == f"{BASE}{name}.json", name


def test_every_top_level_property_has_a_description():
    for name in (*KINDS, *OUTPUTS, "event"):
        for prop, sub in SCHEMAS[name]["properties"].items():
            assert sub.get("description", "").strip(), f"{name}.json: property '{prop}' has no description"


def test_event_union_covers_exactly_the_python_event_types():
    union = SCHEMAS["event"]
    assert set(ev.EVENT_TYPES) == set(KINDS)
    assert [m["$ref"] for m in union["oneOf"]] == [f"{kind}.json" for kind in ev.EVENT_TYPES]
    assert union["properties"]["type"]["enum"] == list(ev.EVENT_TYPES)


@pytest.mark.parametrize("kind", KINDS)
def test_kind_schema_lists_the_fields_the_validator_reads(kind):
    # Drift guard: the schema's required/optional fields are the event type's (ts is optional for all).
    [cls] = [cls for cls in get_args(ev.Event) if cls.__struct_config__.tag == kind]
    fields = msgspec.structs.fields(cls)
    schema = SCHEMAS[kind]
    assert schema["required"] == ["type", *(f.name for f in fields if f.required)]
    assert set(schema["properties"]) == {"type", *(f.name for f in fields)}
    assert schema["properties"]["type"]["const"] == kind
    assert schema.get("additionalProperties", True) is True  # unknown fields are ignored, not rejected


def test_schema_limits_are_the_validator_constants():
    defs = SCHEMAS["common"]["$defs"]
    assert defs["id"]["maxLength"] == ev.MAX_ID_CHARS and defs["id"]["minLength"] == 1
    assert defs["text"]["maxLength"] == ev.MAX_TEXT_CHARS
    assert defs["epoch_ms"]["maximum"] == ev.MAX_TS and defs["epoch_ms"]["minimum"] == 0
    assert defs["network"]["pattern"] == "^" + ev.NETWORK_RE.pattern.removesuffix(r"\Z") + "$"


# --- input events: the agreement table --------------------------------------------------------------
FULL: dict[str, dict[str, Any]] = {
    "inbound": {
        "type": "inbound",
        "event_id": "in-1",
        "app": APP,
        "sender": SENDER,
        "userkey": "u1",
        "network": "sms",
        "text": "hello",
        "ts": T,
    },
    "opt_in": {
        "type": "opt_in",
        "event_id": "oi-1",
        "app": APP,
        "userkey": "u1",
        "source": "web-form",
        "categories": ["informational", "promotional"],
        "method": "web_form",
        "consent_text": "Yes, send me offers",
        "consent_version": "v3",
        "location": "https://shop.example/signup",
        "ts": T,
    },
    "opt_out": {"type": "opt_out", "event_id": "oo-1", "app": APP, "userkey": "u1", "source": "support call", "ts": T},
    "send": {
        "type": "send",
        "request_id": "r1",
        "app": APP,
        "sender": SENDER,
        "userkey": "u1",
        "network": "whatsapp",
        "text": "Hi there",
        "reply_to": "in-1",
        "valid_for_s": 600,
        "ts": T,
    },
    "app_policy": {
        "type": "app_policy",
        "event_id": "ap-1",
        "app": APP,
        "unrestricted": True,
        "reason": "contract signed",
        "ts": T,
    },
    "sender_profile": {
        "type": "sender_profile",
        "event_id": "sp-1",
        "app": APP,
        "sender": SENDER,
        "registered_ts": T - 365 * DAY,
        "ts": T,
    },
    "junk_report": {
        "type": "junk_report",
        "event_id": "jr-1",
        "app": APP,
        "sender": SENDER,
        "userkey": "u1",
        "request_id": "r1",
        "text": "win a prize now",
        "ts": T,
    },
    "delivery_status": {
        "type": "delivery_status",
        "event_id": "ds-1",
        "app": APP,
        "sender": SENDER,
        "userkey": "u1",
        "request_id": "r1",
        "status": "not_delivered",
        "ts": T,
    },
    "contact": {
        "type": "contact",
        "event_id": "ct-1",
        "app": APP,
        "userkey": "u1",
        "network": "xmpp",
        "authorized": True,
        "ts": T,
    },
    "tick": {"type": "tick", "app": APP, "ts": T},
    "cancel": {"type": "cancel", "request_id": "r1", "app": APP, "ts": T},
    "junk_shared": {
        "type": "junk_shared",
        "event_id": "jr-1",
        "app": APP,
        "reporter": 2**64 - 1,
        "text": "win a prize now",
        "ts": T,
    },
    "recipient_profile": {
        "type": "recipient_profile",
        "event_id": "rp-1",
        "app": APP,
        "userkey": "u1",
        "timezone": "America/New_York",
        "region": "US-FL",
        "ts": T,
    },
}
FIELD_KIND = {
    "event_id": "id",
    "app": "id",
    "sender": "id",
    "userkey": "id",
    "request_id": "id",
    "network": "network",
    "text": "text",
    "unrestricted": "bool",
    "registered_ts": "epoch",
    "source": "opt_text",
    "reason": "opt_text",
    "reply_to": "opt_id",
    "authorized": "bool",
    "valid_for_s": "valid_for",
    "status": "status",
    "reporter": "reporter",
    "category": "category",
    "categories": "categories",
    "method": "evidence",
    "consent_text": "evidence",
    "consent_version": "evidence",
    "location": "evidence",
    "timezone": "zone",
    "region": "region",
}
OPTIONAL = {
    "opt_in": ("source", "categories", "method", "consent_text", "consent_version", "location"),
    "opt_out": ("source",),
    "send": ("reply_to", "valid_for_s", "category"),
    "recipient_profile": ("region",),
    "app_policy": ("reason",),
    "junk_report": ("request_id",),
}
MAX_TS = 253_402_300_799_999

# Values by field kind: (label, value, valid?). Text lengths count code points, like Python's len.
ID_VALUES = [
    ("ascii", "abc-123", True),
    ("one-char", "x", True),
    ("256-chars", "x" * 256, True),
    ("256-astral", "\U0001f600" * 256, True),
    ("non-ascii", "Zoë-Ärger", True),
    ("space", "a b", True),
    ("c1-control-U+0085", "a\x85b", True),  # the contract's control characters are U+0000-U+001F, U+007F only
    ("empty", "", False),
    ("257-chars", "x" * 257, False),
    ("257-astral", "\U0001f600" * 257, False),
    ("newline", "a\nb", False),
    ("trailing-newline", "abc\n", False),
    ("nul", "a\x00", False),
    ("tab", "a\tb", False),
    ("unit-sep", "a\x1fb", False),
    ("del", "a\x7fb", False),
    ("int", 42, False),
    ("bool", True, False),
    ("null", None, False),
    ("list", ["a"], False),
    ("object", {}, False),
]
TEXT_VALUES = [
    ("empty", "", True),
    ("10000-chars", "x" * 10_000, True),
    ("10000-astral", "\U0001f600" * 10_000, True),
    ("control-chars-allowed", "line1\nline2\ttab\x00", True),
    ("10001-chars", "x" * 10_001, False),
    ("10001-astral", "\U0001f600" * 10_001, False),
    ("int", 42, False),
    ("bool", False, False),
    ("null", None, False),
    ("list", [], False),
]
NETWORK_VALUES = [
    ("sms", "sms", True),
    ("all-classes", "a-z_0-9", True),
    ("32-chars", "n" * 32, True),
    ("digit", "5", True),
    ("SMS!", "SMS!", False),
    ("upper", "SMS", False),
    ("empty", "", False),
    ("33-chars", "n" * 33, False),
    ("trailing-newline", "sms\n", False),
    ("leading-newline", "\nsms", False),
    ("space", "sm s", False),
    ("dot", "sms.eu", False),
    ("accent", "smś", False),
    ("int", 7, False),
    ("null", None, False),
]
EPOCH_VALUES = [
    ("zero", 0, True),
    ("now", T, True),
    ("max", MAX_TS, True),
    ("negative", -1, False),
    ("above-max", MAX_TS + 1, False),
    ("float", 1.5, False),
    ("float-big", 1.7e12 + 0.5, False),
    ("true", True, False),
    ("false", False, False),
    ("string", "1700000000000", False),
    ("list", [T], False),
]
BOOL_VALUES = [
    ("true", True, True),
    ("false", False, True),
    ("int-1", 1, False),
    ("int-0", 0, False),
    ("string", "true", False),
    ("null", None, False),
]
VALID_FOR_VALUES = [
    ("null", None, True),
    ("one", 1, True),
    ("max", 36_000, True),
    ("zero", 0, False),
    ("above-max", 36_001, False),
    ("negative", -5, False),
    ("float", 60.5, False),
    ("true", True, False),
    ("string", "60", False),
]
STATUS_VALUES = [
    ("delivered", "delivered", True),
    ("failed", "failed", True),
    ("not_delivered", "not_delivered", True),
    ("upper", "DELIVERED", False),
    ("other", "read", False),
    ("empty", "", False),
    ("null", None, False),
    ("int", 1, False),
]
OPT_ID_VALUES = [("null", None, True)] + [v for v in ID_VALUES if v[0] != "null"]
OPT_TEXT_VALUES = [("null", None, True)] + [v for v in TEXT_VALUES if v[0] != "null"]
TS_VALUES = [("null", None, True)] + EPOCH_VALUES  # ts: null means "use the record timestamp"
REPORTER_VALUES = [
    ("zero", 0, True),
    ("max", 2**64 - 1, True),
    ("2^64", 2**64, False),
    ("negative", -1, False),
    ("float", 1.5, False),
    ("string", "1", False),
    ("bool", True, False),
    ("null", None, False),
]
CATEGORY_VALUES = [
    ("null", None, True),
    ("conversational", "conversational", True),
    ("informational", "informational", True),
    ("promotional", "promotional", True),
    ("upper", "PROMOTIONAL", False),
    ("other", "marketing", False),
    ("empty", "", False),
    ("int", 1, False),
    ("list", ["promotional"], False),
]
CATEGORIES_VALUES = [
    ("null", None, True),
    ("one", ["promotional"], True),
    ("all", ["conversational", "informational", "promotional"], True),
    ("repeated", ["promotional", "promotional"], True),
    ("empty", [], False),
    ("other", ["marketing"], False),
    ("string", "promotional", False),
    ("int", 1, False),
    ("list-of-int", [1], False),
]
EVIDENCE_VALUES = [
    ("null", None, True),
    ("empty", "", True),
    ("2000-chars", "x" * 2000, True),
    ("2001-chars", "x" * 2001, False),
    ("int", 1, False),
    ("list", ["x"], False),
]
ZONE_VALUES = [
    ("new-york", "America/New_York", True),
    ("utc", "UTC", True),
    ("three-parts", "America/Argentina/Salta", True),
    ("empty", "", False),
    ("65-chars", "x" * 65, False),
    ("null", None, False),
    ("int", 5, False),
]
REGION_VALUES = [
    ("null", None, True),
    ("country", "GB", True),
    ("us-state", "US-FL", True),
    ("three", "FR-75C", True),
    ("lower", "us-fl", False),
    ("empty", "", False),
    ("long", "US-FLOR", False),
    ("int", 1, False),
]
VALUES = {
    "reporter": REPORTER_VALUES,
    "category": CATEGORY_VALUES,
    "categories": CATEGORIES_VALUES,
    "evidence": EVIDENCE_VALUES,
    "zone": ZONE_VALUES,
    "region": REGION_VALUES,
    "id": ID_VALUES,
    "text": TEXT_VALUES,
    "network": NETWORK_VALUES,
    "epoch": EPOCH_VALUES,
    "bool": BOOL_VALUES,
    "opt_id": OPT_ID_VALUES,
    "opt_text": OPT_TEXT_VALUES,
    "valid_for": VALID_FOR_VALUES,
    "status": STATUS_VALUES,
}


# Every value list runs in full on the first field of its kind in each event type; other fields of
# the same kind get the values that tell the definitions apart (enough to catch a wrong $ref).
SIGNATURE = {
    "empty",
    "256-chars",
    "257-chars",
    "trailing-newline",
    "10001-chars",
    "control-chars-allowed",
    "SMS!",
    "int",
    "null",
}


def _case_groups() -> dict[str, list[tuple[str, Any, bool]]]:
    """Test groups (one pytest item each): group id -> [(label, document, verdict both must give)]."""
    groups: dict[str, list[tuple[str, Any, bool]]] = {}

    def add(group: str, label: str, doc: Any, expected: bool) -> None:
        groups.setdefault(group, []).append((label, doc, expected))

    for kind, full in FULL.items():
        optional = OPTIONAL.get(kind, ())
        required = [f for f in full if f not in ("type", "ts") and f not in optional]
        add(f"{kind}/document", "full", full, True)
        add(f"{kind}/document", "minimal", {"type": kind, **{f: full[f] for f in required}}, True)
        add(f"{kind}/document", "extra-fields", {**full, "x_trace": {"id": 1}, "priority": None, "tags": ["a"]}, True)
        # Fields of other kinds, with values invalid there, are unknown fields here: ignored.
        foreign = {"unrestricted": "no", "registered_ts": -1, "network": "SMS!", "text": 5, "reply_to": ""}
        add(f"{kind}/document", "invalid-fields-of-other-kinds", {**foreign, **full}, True)
        seen_kinds: set[str] = set()
        for field in [f for f in full if f not in ("type", "ts")]:
            field_kind = FIELD_KIND[field]
            if field in optional and field_kind == "id":
                field_kind = "opt_id"  # junk_report.request_id
            values = VALUES[field_kind]
            if field_kind in seen_kinds:
                values = [v for v in values if v[0] in SIGNATURE]
            seen_kinds.add(field_kind)
            if field in optional:
                add(f"{kind}/{field}", "absent", {k: v for k, v in full.items() if k != field}, True)
            else:
                add(f"{kind}/{field}", "missing", {k: v for k, v in full.items() if k != field}, False)
            for label, value, ok in values:
                add(f"{kind}/{field}", label, {**full, field: value}, ok)
        add(f"{kind}/ts", "absent", {k: v for k, v in full.items() if k != "ts"}, True)
        for label, value, ok in TS_VALUES:
            add(f"{kind}/ts", label, {**full, "ts": value}, ok)
        add(f"{kind}/type", "missing", {k: v for k, v in full.items() if k != "type"}, False)
        for label, value in [
            ("unknown", "sms"),
            ("upper-case", kind.upper()),
            ("int", 5),
            ("null", None),
            ("list", [kind]),
            ("padded", f" {kind}"),
        ]:
            add(f"{kind}/type", label, {**full, "type": value}, False)
    for label, doc in [("list", [FULL["tick"]]), ("string", "tick"), ("null", None), ("int", 5), ("empty", {})]:
        add("not-an-object", label, doc, False)
    for group, cases in groups.items():
        assert len({label for label, _, _ in cases}) == len(cases), f"duplicate labels in {group}"
    return groups


CASE_GROUPS = _case_groups()


# event.json adds only the dispatch on `type` to the kind schemas, and for its oneOf jsonschema
# evaluates all nine of them in full (about ten times the cost of one). So the kind's own schema
# is checked on every case, event.json on the type and document groups and on this sample of
# every other group.
UNION_SAMPLE = {"missing", "absent", "null", "257-chars", "10001-chars", "SMS!", "float"}


@pytest.mark.parametrize("group", CASE_GROUPS)
def test_schema_and_validator_agree(group):
    """Both accept or both reject, and the verdict is the table's (the kind's schema and event.json)."""
    wrong = []
    whole_group = group == "not-an-object" or group.endswith(("/document", "/type"))
    for label, doc, expected in CASE_GROUPS[group]:
        verdict = {"validate": python_accepts(doc)}
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind in KINDS:
            verdict[f"{kind}.json"] = schema_accepts(kind, doc)
        if whole_group or label in UNION_SAMPLE:
            verdict["event.json"] = schema_accepts("event", doc)
        if verdict != dict.fromkeys(verdict, expected):
            wrong.append((label, f"expected {'accept' if expected else 'reject'}", verdict))
    assert not wrong, wrong


def test_the_table_is_large_enough():
    cases = [c for group in CASE_GROUPS.values() for c in group]
    assert len(cases) > 400
    assert sum(ok for _, _, ok in cases) > 100 and sum(not ok for _, _, ok in cases) > 300


@pytest.mark.parametrize("kind", KINDS)
def test_canonical_encoding_of_a_validated_event_conforms(kind):
    doc = event(kind)  # conftest defaults: optional fields absent
    assert python_accepts(doc)
    assert schema_accepts("event", orjson.loads(encode_event(validate(doc, 0))))


@pytest.mark.parametrize("kind", KINDS)
def test_canonical_encoding_of_a_full_event_conforms(kind):
    assert schema_accepts("event", orjson.loads(encode_event(validate(FULL[kind], 0))))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"tick","app":"app1","ts":1700000000000.0}',
        b'{"type":"tick","app":"app1","ts":1.7e12}',
        b'{"type":"sender_profile","event_id":"e","app":"a","sender":"s","registered_ts":0.0}',
    ],
)
def test_known_difference_integral_float_literals(raw):
    # KNOWN DIFFERENCE: JSON Schema's "integer" is a mathematical integer, so 1700000000000.0 and
    # 1.7e12 conform; models/events.py requires a JSON integer literal (orjson decodes these to
    # float, and `type(value) is not int` rejects them). No JSON Schema keyword can tell the two
    # apart after parsing; common.json documents it in a $comment. Producers must write integers.
    with pytest.raises(InvalidEvent, match="must be an integer"):
        decode_event(raw, T)
    assert schema_accepts("event", orjson.loads(raw))


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "America/Nowhere"])
def test_known_difference_time_zone_names(name):
    # KNOWN DIFFERENCE: a recipient_profile's timezone must be a zone the pinned tzdata package
    # knows (models/quiet_hours.py); the schema says only its shape (the list of zones changes with
    # tzdata, which the schema cannot follow).
    doc = {**FULL["recipient_profile"], "timezone": name}
    with pytest.raises(InvalidEvent, match="IANA time zone"):
        validate(doc, T)
    assert schema_accepts("recipient_profile", doc)


def test_record_size_limit_is_outside_the_schema():
    # KNOWN DIFFERENCE: decode_event rejects records over 64 KiB before parsing; the schema sees
    # only the parsed document (event.json says so in its description).
    doc = {**FULL["send"], "padding": "x" * ev.MAX_RECORD_BYTES}
    assert python_accepts(doc) and schema_accepts("event", doc)
    with pytest.raises(InvalidEvent, match="bytes; the limit is"):
        decode_event(orjson.dumps(doc), T)


# --- outputs --------------------------------------------------------------------------------------
BURST = dict(similarity=0.875, similar_recipients=11, cluster_id="c3")
DECISIONS = {
    "accepted": Decision(
        "r1",
        APP,
        SENDER,
        "u1",
        "sms",
        "accepted",
        "conversation",
        "userkey has written to sender 'S1'; 1st recipient of this text",
        T,
        similarity=1.0,
        similar_recipients=1,
        cluster_id="c1",
    ),
    "accepted-reply": Decision(
        "r2", APP, SENDER, "u1", "sms", "accepted", "reply", "reply: answers in-1", T, reply=True
    ),
    "accepted-paced-now": Decision(
        "r3", APP, SENDER, "u9", "sms", "accepted", "burst_paced", "slot is free now", T, deliver_at=T, **BURST
    ),
    "delayed": Decision(
        "r4", APP, SENDER, "u12", "sms", "delayed", "burst_paced", "deliver at ...", T, deliver_at=T + 61_200, **BURST
    ),
    "rejected-burst-limit": Decision(
        "r5", APP, SENDER, "u13", "sms", "rejected", "burst_limit", "retry in 42 s", T, retry_after_s=42, **BURST
    ),
    "rejected-no-conversation": Decision("r6", APP, SENDER, "u2", "sms", "rejected", "no_conversation", "...", T),
    "released": Decision(
        "r4",
        APP,
        SENDER,
        "u12",
        "sms",
        "released",
        "slot_reached",
        "delivered",
        T + MINUTE,
        deliver_at=T + 61_200,
        cluster_id="c3",
    ),
    "cancelled": Decision("r7", APP, SENDER, "u2", "sms", "cancelled", "cancelled_by_app", "cancelled", T),
    "rejected-cancel-not-pending": Decision("r8", APP, "", "", "", "rejected", "not_pending", "not pending", T),
}


@pytest.mark.parametrize("name", DECISIONS)
def test_decision_conforms(name):
    decision = DECISIONS[name]
    assert schema_accepts("decision", decision.to_dict())
    wire = orjson.loads(decision.to_json())
    assert schema_accepts("decision", wire)
    assert Decision.from_dict(wire) == decision


def test_decision_fields_are_all_declared():
    props, required = SCHEMAS["decision"]["properties"], SCHEMAS["decision"]["required"]
    optional = {"deliver_at", "retry_after_s", "similarity", "similar_recipients", "cluster_id"}
    assert set(props) == {"type", "decision_id", *Decision.__slots__}
    assert set(required) == set(props) - optional


@pytest.mark.parametrize(
    ("change", "drop"),
    [
        ({"outcome": "maybe"}, ()),
        ({"reply": None}, ()),
        ({"deliver_at": None}, ()),
        ({"ts": 1.5}, ()),
        ({"similarity": 1.5}, ()),
        ({"retry_after_s": 0}, ()),
        ({"network": "SMS"}, ()),
        ({"type": "delivery"}, ()),
        ({}, ("deliver_at",)),
        ({}, ("reply",)),
        ({}, ("decision_id",)),
        ({"decision_id": "r4"}, ()),
    ],
    ids=lambda v: repr(v),
)
def test_decision_schema_rejects_malformed_records(change, drop):
    doc = {**DECISIONS["delayed"].to_dict(), **change}
    for name in drop:
        del doc[name]
    assert not schema_accepts("decision", doc)


def test_the_request_controls_decisions_conform():
    h = Harness(Policy(recipient_limits=[[1, 3600]], contact_list_networks=["xmpp"], max_delay_s=1800))
    h.feed(event("app_policy", -DAY, unrestricted=True), event("sender_profile", -DAY, registered_ts=T - 400 * DAY))
    h.feed(*[send(f"u{i}", text="Your parcel is out for delivery") for i in range(11)])
    h.feed(
        send("u11", text="Your parcel is out for delivery", valid_for_s=30),  # its slot is 60 s away
        send("u12", text="Your parcel is out for delivery", valid_for_s=1000),  # paced, but nothing comes in time
        send("u0", at=1, text="A second text within the hour"),  # 1 an hour: beyond max_delay_s
        send("u1", at=1, network="xmpp"),
    )
    for i in range(6):  # the user's bot repeats itself
        h.feed(
            event("inbound", 30 * MINUTE + i, event_id=f"bot-{i}", userkey="bot", text="I am away (auto-reply)"),
            send("bot", at=30 * MINUTE + i, text=f"ok {i}", reply_to=f"bot-{i}"),
        )
    h.feed(event("tick", 60 * MINUTE))
    decisions = [r for r in h.records if isinstance(r, Decision)]
    reasons = {(d.outcome, d.reason) for d in decisions}
    assert {
        ("rejected", "expired_before_slot"),
        ("cancelled", "expired"),
        ("rejected", "recipient_limit"),
        ("rejected", "not_in_contacts"),
        ("delayed", "loop_suspected"),
    } <= reasons, reasons
    assert all(schema_accepts("decision", orjson.loads(d.to_json())) for d in decisions)


def test_burst_limit_decision_requires_retry_after_s():
    doc = DECISIONS["rejected-burst-limit"].to_dict()
    del doc["retry_after_s"]
    assert not schema_accepts("decision", doc)


@pytest.mark.parametrize("reply_to", [None, "in-1"])
def test_delivery_conforms(reply_to):
    delivery = Delivery("r1", APP, SENDER, "u1", "sms", "Hi there", reply_to, T, "r1:accepted:conversation")
    wire = orjson.loads(delivery.to_json())
    assert schema_accepts("delivery", wire)
    assert set(wire) == set(SCHEMAS["delivery"]["properties"]) == set(SCHEMAS["delivery"]["required"])
    for broken in ({"reply_to": ""}, {"ts": True}, {"network": "SMS!"}, {"text": "x" * 10_001}):
        assert not schema_accepts("delivery", {**wire, **broken})
    assert not schema_accepts("delivery", {k: v for k, v in wire.items() if k != "reply_to"})


def test_every_record_of_a_gate_run_conforms():
    """Real outputs: accepted, delayed, rejected (burst_limit, opted_out, not_pending), released,
    cancelled, and the deliveries, from one short run through the gate."""
    h = Harness(Policy(free_recipients=1, max_delay_s=150))
    text = "Your parcel 123 is out for delivery today, track it at https://t.example/123"
    h.feed(
        event("app_policy", -DAY, unrestricted=True, reason="test"),
        event("sender_profile", -DAY, registered_ts=T - 365 * DAY),
        *[event("inbound", -DAY, userkey=f"conv{i}", text="hi") for i in range(3)],
    )
    h.feed(*[event("send", i, request_id=f"r{i}", userkey=f"u{i}", text=text) for i in range(4)])
    h.feed(
        event("cancel", 10, request_id="r2"),
        event("cancel", 11, request_id="nope"),
        event("opt_out", 12, userkey="u9"),
        event("send", 13, request_id="r9", userkey="u9"),
        event("tick", 2 * MINUTE),
    )
    decisions = [r for r in h.records if isinstance(r, Decision)]
    seen = {(d.outcome, d.reason) for d in decisions}
    assert {
        ("accepted", "unrestricted"),
        ("delayed", "burst_paced"),
        ("rejected", "burst_limit"),
        ("cancelled", "cancelled_by_app"),
        ("rejected", "not_pending"),
        ("rejected", "opted_out"),
        ("released", "slot_reached"),
    } <= seen, seen
    assert len(h.deliveries) == 2
    assert any(isinstance(r, ConsentRecord) for r in h.records)
    for record in h.records:
        name = (
            "decision"
            if isinstance(record, Decision)
            else "consent"
            if isinstance(record, ConsentRecord)
            else "delivery"
        )
        doc = orjson.loads(record.to_json())
        assert schema_accepts(name, doc), (name, doc, list(VALIDATORS[name].iter_errors(doc)))


def test_a_grant_revocation_and_the_app_policy_event_it_appends_conform():
    h = Harness()
    h.feed(event("app_policy", -DAY, unrestricted=True))
    h.feed(*[event("junk_report", i, sender=SENDER, userkey=f"v{i}", text=f"win {i}") for i in range(5)])
    [revocation] = [r for r in h.records if isinstance(r, GrantRevocation)]
    doc = orjson.loads(revocation.to_json())
    assert schema_accepts("grant_revocation", doc), list(VALIDATORS["grant_revocation"].iter_errors(doc))
    assert GrantRevocation.from_dict(doc) == revocation
    assert schema_accepts("event", orjson.loads(revocation.policy_event())) and python_accepts(
        orjson.loads(revocation.policy_event())
    )


def _dead_letter(
    key: bytes | None, value: bytes | None, error: str, code: ev.Refusal = ev.Refusal.INVALID_FIELD
) -> dict[str, Any]:
    """The record value the worker's real dead-letter code builds."""
    from sendgate.streams.worker.batch import dead_letter_record  # imports faust: only this test pays for it

    message = SimpleNamespace(topic="sendgate.events", partition=3, offset=1234, key=key)
    return orjson.loads(dead_letter_record(message, value, error, code))


def test_the_dead_letter_codes_are_the_decoders():
    assert SCHEMAS["deadletter"]["properties"]["code"]["enum"] == [code.value for code in ev.Refusal]


def test_dead_letter_records_conform():
    def error_of(raw: bytes | None) -> str:
        with pytest.raises(InvalidEvent) as info:
            decode_event(raw, T)
        return str(info.value)

    bad_json = b'{"type":"send","app":"app1"}'
    not_utf8 = b'\xff\xfe{"type":"tick"}'
    records = {
        "invalid-event": _dead_letter(b"app1", bad_json, error_of(bad_json)),
        "not-utf8": _dead_letter(b"app1", not_utf8, error_of(not_utf8)),
        "no-value": _dead_letter(None, None, error_of(None)),
        "binary-key": _dead_letter(b"\x80\x81", b"{}", "internal error: KeyError: 'x'"),
    }
    for name, doc in records.items():
        assert schema_accepts("deadletter", doc), (name, doc, list(VALIDATORS["deadletter"].iter_errors(doc)))
    assert records["invalid-event"]["raw"] == bad_json.decode() and "raw_encoding" not in records["invalid-event"]
    assert records["not-utf8"]["raw_encoding"] == "base64"
    assert records["no-value"]["raw"] is None and records["no-value"]["key"] is None
    # The key of a non-UTF-8 record is base64 too, but there is no "key_encoding" flag: a reader
    # cannot tell it from a UTF-8 key that happens to look like base64 (see deadletter.json).
    assert records["binary-key"]["key"] == "gIE="

    good = records["not-utf8"]
    for broken in (
        {"raw_encoding": "hex"},
        {"raw": None},
        {"raw": "not base64!"},
        {"partition": -1},
        {"offset": "12"},
        {"key": 5},
        {"error": None},
    ):
        assert not schema_accepts("deadletter", {**good, **broken}), broken
    for name in ("error", "topic", "partition", "offset", "key", "raw"):
        assert not schema_accepts("deadletter", {k: v for k, v in good.items() if k != name}), name
