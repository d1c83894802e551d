"""Input events of contract v1: decoding and validation, in one place.

The worker, `sendgate publish` and the client all call `decode_event`, so a record the CLI accepts
is a record the worker accepts. Errors name the field and what is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Callable, Union

import orjson

from .categories import CATEGORIES
from .quiet_hours import is_zone

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
MAX_RECORD_BYTES = 64 * 1024  # a valid event is far smaller; bounds the JSON parser's work
NETWORK_RE = re.compile(r"[a-z0-9_-]{1,32}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class Refusal(StrEnum):
    """Why a record is dead-lettered, as a bounded code (metrics count by it, the dead letter says
    it); the message says the rest."""

    NOT_JSON = "not_json"  # not UTF-8 JSON, or not an object
    NO_VALUE = "no_value"
    TOO_LARGE = "too_large"  # over MAX_RECORD_BYTES
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"  # a field of the wrong type, length or form
    TS_AHEAD = "ts_ahead"  # event time too far ahead of the record's timestamp
    WRONG_KEY = "wrong_key"  # the record's key is not the event's app
    SPLIT_APP = "split_app"  # the app's events on two partitions
    UNAUTHORIZED = "unauthorized"  # models/sources.py: its signer may not say it


class InvalidEvent(ValueError):
    """A record that is not a valid v1 event; the message is the dead-letter reason, `code` its kind."""

    def __init__(self, message: str, code: Refusal = Refusal.INVALID_FIELD) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Inbound:
    event_id: str
    app: str
    sender: str
    userkey: str
    network: str
    text: str
    ts: int


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """What opt_in and opt_out events carry; the gate tells them apart by their type."""

    event_id: str
    app: str
    userkey: str
    source: str
    ts: int


@dataclass(frozen=True, slots=True)
class OptIn(ConsentChange):
    # the kinds of message the user consented to (models/categories.py; None: all), and the
    # evidence of that consent for the audit trail (GDPR Art. 7(1): the sender must prove it)
    categories: tuple[str, ...] | None = None
    method: str = ""  # how it was given, e.g. web_form, keyword, paper
    consent_text: str = ""  # the words the user agreed to ...
    consent_version: str = ""  # ... or their version
    location: str = ""  # where it was given, e.g. the form's URL


@dataclass(frozen=True, slots=True)
class OptOut(ConsentChange):
    pass


@dataclass(frozen=True, slots=True)
class Send:
    request_id: str
    app: str
    sender: str
    userkey: str
    network: str
    text: str
    reply_to: str | None
    ts: int
    valid_for_s: int | None = None  # the request is worthless this long after `ts` (None: the policy's default)
    category: str | None = None  # conversational | informational | promotional (None: the policy's default)


@dataclass(frozen=True, slots=True)
class AppPolicy:
    event_id: str
    app: str
    unrestricted: bool
    reason: str
    ts: int


@dataclass(frozen=True, slots=True)
class SenderProfile:
    event_id: str
    app: str
    sender: str
    registered_ts: int
    ts: int


@dataclass(frozen=True, slots=True)
class JunkReport:
    event_id: str
    app: str
    sender: str
    userkey: str
    request_id: str | None
    text: str
    ts: int


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """What the network API answered for a delivered request (examples/delivery_worker.py)."""

    event_id: str
    app: str
    sender: str
    userkey: str
    request_id: str
    status: str  # DELIVERY_STATUSES
    ts: int


@dataclass(frozen=True, slots=True)
class Contact:
    """Whether the app's bot is on the userkey's contact list of `network` (networks that deliver
    only to users who authorized the bot: the policy's `contact_list_networks`)."""

    event_id: str
    app: str
    userkey: str
    network: str
    authorized: bool
    ts: int


@dataclass(frozen=True, slots=True)
class RecipientProfile:
    """Where a userkey is, said by the platform: the zone and region its quiet hours are read in
    (models/quiet_hours.py). Without one, an E.164 userkey is placed by its number."""

    event_id: str
    app: str
    userkey: str
    timezone: str  # an IANA zone name
    region: str | None  # ISO 3166-2 such as US-FL, or a country such as GB
    ts: int


@dataclass(frozen=True, slots=True)
class Tick:
    app: str
    ts: int


@dataclass(frozen=True, slots=True)
class JunkShared:
    """A junk report as every partition's log carries it (models/decisions.py JunkShare): the
    junk index a send is matched against is the one its own partition's log has built, so that
    replay decides as live did, whichever partition it reads first."""

    event_id: str  # the report's
    app: str  # the reporting app's
    reporter: int  # the reporting recipient, hashed (models/burst.py recipient_hash)
    text: str
    ts: int


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: str
    app: str
    ts: int


Event = Union[
    Inbound,
    OptIn,
    OptOut,
    Send,
    AppPolicy,
    SenderProfile,
    JunkReport,
    DeliveryStatus,
    Contact,
    Tick,
    Cancel,
    JunkShared,
    RecipientProfile,
]


def _id(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_CHARS:
        raise InvalidEvent(f"field '{name}' must be 1-{MAX_ID_CHARS} characters, got {len(value)}")
    if _CONTROL_RE.search(value):
        raise InvalidEvent(f"field '{name}' must not contain control characters")
    return value


def _text(name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidEvent(f"field '{name}' is {len(value)} characters; the limit is {limit}")
    return value


def _network(name: str, value: Any) -> str:
    if not isinstance(value, str) or not NETWORK_RE.match(value):
        raise InvalidEvent(f"field '{name}' must match [a-z0-9_-]{{1,32}}, got {value!r:.60}")
    return value


def _ts(name: str, value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass; floats lose milliseconds silently
        raise InvalidEvent(f"field '{name}' must be an integer of epoch milliseconds, got {type(value).__name__}")
    if not 0 <= value <= MAX_TS:
        raise InvalidEvent(f"field '{name}' must be epoch milliseconds between 0 and {MAX_TS}, got {value}")
    return value


def _bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidEvent(f"field '{name}' must be true or false, got {type(value).__name__}")
    return value


def _optional_id(name: str, value: Any) -> str | None:
    return None if value is None else _id(name, value)


DELIVERY_STATUSES = ("delivered", "failed", "not_delivered")


def _status(name: str, value: Any) -> str:
    if value not in DELIVERY_STATUSES:
        raise InvalidEvent(f"field '{name}' must be one of {', '.join(DELIVERY_STATUSES)}, got {value!r:.60}")
    return value


def _reporter(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value < 2**64:
        raise InvalidEvent(f"field '{name}' must be an integer 0..2^64-1 (a hashed recipient), got {value!r:.60}")
    return value


MAX_VALID_FOR_S = 36_000  # Twilio's ValidityPeriod range, 1-36,000 s


def _valid_for(name: str, value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_VALID_FOR_S:
        raise InvalidEvent(f"field '{name}' must be an integer of seconds, 1-{MAX_VALID_FOR_S}, got {value!r:.60}")
    return value


MAX_EVIDENCE_CHARS = 2_000
_REGION_RE = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?\Z")


def _category(name: str, value: Any) -> str:
    if value not in CATEGORIES:
        raise InvalidEvent(f"field '{name}' must be one of {', '.join(CATEGORIES)}, got {value!r:.60}")
    return value


def _categories(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidEvent(f"field '{name}' must be a non-empty list of {', '.join(CATEGORIES)}")
    return tuple(sorted({_category(name, v) for v in value}, key=CATEGORIES.index))


def _evidence(name: str, value: Any) -> str:
    return _text(name, value, MAX_EVIDENCE_CHARS)


def _zone(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64 or not is_zone(value):
        raise InvalidEvent(
            f"field '{name}' must be an IANA time zone name such as America/New_York (tzdata), got {value!r:.60}"
        )
    return value


def _region(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _REGION_RE.match(value):
        raise InvalidEvent(
            f"field '{name}' must be a country (ISO 3166-1, e.g. GB) or region (ISO 3166-2, "
            f"e.g. US-FL), got {value!r:.60}"
        )
    return value


Check = Callable[[str, Any], Any]
# type -> (record class, required fields, optional fields); `ts` is handled for every type.
_KINDS: dict[str, tuple[type, tuple[tuple[str, Check], ...], tuple[tuple[str, Check], ...]]] = {
    "inbound": (
        Inbound,
        (("event_id", _id), ("app", _id), ("sender", _id), ("userkey", _id), ("network", _network), ("text", _text)),
        (),
    ),
    "opt_in": (
        OptIn,
        (("event_id", _id), ("app", _id), ("userkey", _id)),
        (
            ("source", _text),
            ("categories", _categories),
            ("method", _evidence),
            ("consent_text", _evidence),
            ("consent_version", _evidence),
            ("location", _evidence),
        ),
    ),
    "opt_out": (OptOut, (("event_id", _id), ("app", _id), ("userkey", _id)), (("source", _text),)),
    "send": (
        Send,
        (("request_id", _id), ("app", _id), ("sender", _id), ("userkey", _id), ("network", _network), ("text", _text)),
        (("reply_to", _optional_id), ("valid_for_s", _valid_for), ("category", _category)),
    ),
    "app_policy": (AppPolicy, (("event_id", _id), ("app", _id), ("unrestricted", _bool)), (("reason", _text),)),
    "sender_profile": (SenderProfile, (("event_id", _id), ("app", _id), ("sender", _id), ("registered_ts", _ts)), ()),
    "junk_report": (
        JunkReport,
        (("event_id", _id), ("app", _id), ("sender", _id), ("userkey", _id), ("text", _text)),
        (("request_id", _optional_id),),
    ),
    "delivery_status": (
        DeliveryStatus,
        (("event_id", _id), ("app", _id), ("sender", _id), ("userkey", _id), ("request_id", _id), ("status", _status)),
        (),
    ),
    "contact": (
        Contact,
        (("event_id", _id), ("app", _id), ("userkey", _id), ("network", _network), ("authorized", _bool)),
        (),
    ),
    "tick": (Tick, (("app", _id),), ()),
    "cancel": (Cancel, (("request_id", _id), ("app", _id)), ()),
    "junk_shared": (JunkShared, (("event_id", _id), ("app", _id), ("reporter", _reporter), ("text", _text)), ()),
    "recipient_profile": (
        RecipientProfile,
        (("event_id", _id), ("app", _id), ("userkey", _id), ("timezone", _zone)),
        (("region", _region),),
    ),
}
_OPTIONAL_DEFAULTS = {
    "source": "",
    "reason": "",
    "reply_to": None,
    "request_id": None,
    "valid_for_s": None,
    "category": None,
    "categories": None,
    "method": "",
    "consent_text": "",
    "consent_version": "",
    "location": "",
    "region": None,
}
EVENT_TYPES = tuple(_KINDS)


def validate(doc: Any, record_ts: int, max_ahead_ms: int | None = None) -> Event:
    """Turn a decoded JSON document into an event; `record_ts` (ms) is used when `ts` is absent.

    With `max_ahead_ms`, an event time further than that ahead of the record's own timestamp is
    refused: one such event would otherwise move its app's clock forward and release every
    pending request at once.
    """
    if not isinstance(doc, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(doc).__name__}", Refusal.NOT_JSON)
    kind = doc.get("type")
    spec = _KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise InvalidEvent(
            f"field 'type' must be one of {', '.join(EVENT_TYPES)}, got {kind!r:.60}", Refusal.UNKNOWN_TYPE
        )
    cls, required, optional = spec
    values: dict[str, Any] = {}
    for name, check in required:
        if name not in doc:
            raise InvalidEvent(f"{kind}: missing required field '{name}'", Refusal.MISSING_FIELD)
        values[name] = check(name, doc[name])
    for name, check in optional:
        value = doc.get(name)
        values[name] = _OPTIONAL_DEFAULTS[name] if value is None else check(name, value)
    ts = doc.get("ts")
    values["ts"] = _ts("ts", record_ts if ts is None else ts)
    if max_ahead_ms is not None and values["ts"] - record_ts > max_ahead_ms:
        raise InvalidEvent(
            f"field 'ts' is {(values['ts'] - record_ts) // 1000} s ahead of the record's timestamp; "
            f"the limit is {max_ahead_ms // 1000} s (max_ts_ahead_s)",
            Refusal.TS_AHEAD,
        )
    return cls(**values)


def decode_event(raw: bytes | None, record_ts: int, max_ahead_ms: int | None = None) -> Event:
    """Decode one record value (UTF-8 JSON) into a validated event, or raise InvalidEvent."""
    if raw is None:
        raise InvalidEvent("record has no value", Refusal.NO_VALUE)
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"record is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}", Refusal.TOO_LARGE)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {exc}", Refusal.NOT_JSON) from None
    return validate(doc, record_ts, max_ahead_ms)


def event_type(event: Event) -> str:
    return _TYPE_OF[type(event)]


def encode_event(event: Event) -> bytes:
    """The canonical JSON form of an event (what `publish` sends after validation)."""
    doc = {"type": event_type(event), **asdict(event)}
    return orjson.dumps(doc)


_TYPE_OF = {spec[0]: kind for kind, spec in _KINDS.items()}
