"""Input events of contract v1: decoding and validation, in one place.

The worker, `sendgate publish` and the client all call `decode_event`, so a record the CLI accepts
is a record the worker accepts. Errors name the field and what is wrong with it.

The events are msgspec Structs whose annotations are the contract's constraints: one msgspec
decoder parses and validates a record in one C pass. A record it refuses is read again as a
plain JSON document (`validate`), which says what is wrong in the words below: the first field
at fault, in the order the type declares them, then `ts`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Callable, Literal, Union, get_args

import msgspec
import orjson
from msgspec import Meta, Struct

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


MAX_VALID_FOR_S = 36_000  # Twilio's ValidityPeriod range, 1-36,000 s
MAX_EVIDENCE_CHARS = 2_000
_REGION_RE = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?\Z")

# The types of the contract's fields: msgspec checks them as it decodes. `_CHECKS` adds what no
# Meta says (an id's control characters: a pattern would cost a regular expression per field).
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
Evidence = Annotated[str, Meta(max_length=MAX_EVIDENCE_CHARS)]  # an opt-in's evidence
Network = Annotated[str, Meta(pattern="^" + NETWORK_RE.pattern)]
EpochMs = Annotated[int, Meta(ge=0, le=MAX_TS)]
ValidFor = Annotated[int, Meta(ge=1, le=MAX_VALID_FOR_S)]
Reporter = Annotated[int, Meta(ge=0)]  # below 2**64 too (`_CHECKS`): msgspec's bounds are int64s
CategoryName = Literal["conversational", "informational", "promotional"]  # models/categories.py CATEGORIES
Categories = Annotated[tuple[CategoryName, ...], Meta(min_length=1)]
Status = Literal["delivered", "failed", "not_delivered"]
DELIVERY_STATUSES: tuple[str, ...] = get_args(Status)
Zone = Annotated[str, Meta(max_length=64)]  # and a zone of tzdata (`_CHECKS`)
Region = Annotated[str, Meta(pattern="^" + _REGION_RE.pattern)]

NO_TS = -1  # the ts of a record without one, never a valid ts: decode_event gives it the record's


class _Event(Struct, frozen=True, gc=False, tag_field="type"):
    """An input event; its `type` is the class's tag. (Each subclass says frozen=True again for
    mypy, which does not inherit it.) gc=False: an event holds only strings and
    numbers, so it cannot be part of a reference cycle and the collector need not track it."""


class Inbound(_Event, frozen=True, tag="inbound"):
    event_id: Id
    app: Id
    sender: Id
    userkey: Id
    network: Network
    text: Text
    ts: EpochMs = NO_TS


class ConsentChange(_Event, frozen=True):
    """What opt_in and opt_out events carry; the gate tells them apart by their type."""

    event_id: Id
    app: Id
    userkey: Id
    source: Text = ""
    ts: EpochMs = NO_TS


class OptIn(ConsentChange, frozen=True, tag="opt_in"):
    # the kinds of message the user consented to (models/categories.py; None: all), and the
    # evidence of that consent for the audit trail (GDPR Art. 7(1): the sender must prove it)
    categories: Categories | None = None
    method: Evidence = ""  # how it was given, e.g. web_form, keyword, paper
    consent_text: Evidence = ""  # the words the user agreed to ...
    consent_version: Evidence = ""  # ... or their version
    location: Evidence = ""  # where it was given, e.g. the form's URL

    def __post_init__(self) -> None:
        if self.categories is not None:  # one order and no repeats, whatever the producer wrote
            ordered = tuple(sorted(set(self.categories), key=CATEGORIES.index))
            msgspec.structs.force_setattr(self, "categories", ordered)


class OptOut(ConsentChange, frozen=True, tag="opt_out"):
    pass


class Send(_Event, frozen=True, tag="send"):
    request_id: Id
    app: Id
    sender: Id
    userkey: Id
    network: Network
    text: Text
    reply_to: Id | None = None
    ts: EpochMs = NO_TS
    valid_for_s: ValidFor | None = None  # the request is worthless this long after `ts` (None: the policy's default)
    category: CategoryName | None = None  # conversational | informational | promotional (None: the policy's default)


class AppPolicy(_Event, frozen=True, tag="app_policy"):
    event_id: Id
    app: Id
    unrestricted: bool
    reason: Text = ""
    ts: EpochMs = NO_TS


class SenderProfile(_Event, frozen=True, tag="sender_profile"):
    event_id: Id
    app: Id
    sender: Id
    registered_ts: EpochMs
    ts: EpochMs = NO_TS


class JunkReport(_Event, frozen=True, tag="junk_report"):
    event_id: Id
    app: Id
    sender: Id
    userkey: Id
    text: Text
    request_id: Id | None = None
    ts: EpochMs = NO_TS


class DeliveryStatus(_Event, frozen=True, tag="delivery_status"):
    """What the network API answered for a delivered request (examples/delivery_worker.py)."""

    event_id: Id
    app: Id
    sender: Id
    userkey: Id
    request_id: Id
    status: Status
    ts: EpochMs = NO_TS


class Contact(_Event, frozen=True, tag="contact"):
    """Whether the app's bot is on the userkey's contact list of `network` (networks that deliver
    only to users who authorized the bot: the policy's `contact_list_networks`)."""

    event_id: Id
    app: Id
    userkey: Id
    network: Network
    authorized: bool
    ts: EpochMs = NO_TS


class RecipientProfile(_Event, frozen=True, tag="recipient_profile"):
    """Where a userkey is, said by the platform: the zone and region its quiet hours are read in
    (models/quiet_hours.py). Without one, an E.164 userkey is placed by its number."""

    event_id: Id
    app: Id
    userkey: Id
    timezone: Zone  # an IANA zone name
    region: Region | None = None  # ISO 3166-2 such as US-FL, or a country such as GB
    ts: EpochMs = NO_TS


class Tick(_Event, frozen=True, tag="tick"):
    app: Id
    ts: EpochMs = NO_TS


class JunkShared(_Event, frozen=True, tag="junk_shared"):
    """A junk report as every partition's log carries it (models/decisions.py JunkShare): the
    junk index a send is matched against is the one its own partition's log has built, so that
    replay decides as live did, whichever partition it reads first."""

    event_id: Id  # the report's
    app: Id  # the reporting app's
    reporter: Reporter  # the reporting recipient, hashed (models/burst.py recipient_hash)
    text: Text
    ts: EpochMs = NO_TS


class Cancel(_Event, frozen=True, tag="cancel"):
    request_id: Id
    app: Id
    ts: EpochMs = NO_TS


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
_CLASSES: dict[str, type[Event]] = {str(cls.__struct_config__.tag): cls for cls in get_args(Event)}
_TYPE_OF = {cls: kind for kind, cls in _CLASSES.items()}
EVENT_TYPES = tuple(_CLASSES)
_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()


def _no_controls(value: str) -> bool:
    return _CONTROL_RE.search(value) is None


# The rules no Meta says, by field type: run after msgspec (`_holds`).
_CHECKS: dict[Any, Callable[[Any], bool]] = {Id: _no_controls, Zone: is_zone, Reporter: lambda v: v < 2**64}


def _a_string(value: Any) -> str:
    return f"must be a string, got {type(value).__name__}"


def _id_problem(value: Any) -> str:
    if not isinstance(value, str):
        return _a_string(value)
    if not 1 <= len(value) <= MAX_ID_CHARS:
        return f"must be 1-{MAX_ID_CHARS} characters, got {len(value)}"
    return "must not contain control characters"


def _text_problem(limit: int) -> Callable[[Any], str]:
    def problem(value: Any) -> str:
        return f"is {len(value)} characters; the limit is {limit}" if isinstance(value, str) else _a_string(value)

    return problem


def _epoch_ms_problem(value: Any) -> str:
    if type(value) is not int:  # bool is an int subclass; floats lose milliseconds silently
        return f"must be an integer of epoch milliseconds, got {type(value).__name__}"
    return f"must be epoch milliseconds between 0 and {MAX_TS}, got {value}"


def _categories_problem(value: Any) -> str:
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of {', '.join(CATEGORIES)}"
    return _one_of(CATEGORIES)(next(v for v in value if v not in CATEGORIES))


def _one_of(names: tuple[str, ...]) -> Callable[[Any], str]:
    return lambda value: f"must be one of {', '.join(names)}, got {value!r:.60}"


# What is wrong with a value its field's type refuses, in words that name the rule.
_PROBLEMS: dict[Any, Callable[[Any], str]] = {
    Id: _id_problem,
    Text: _text_problem(MAX_TEXT_CHARS),
    Evidence: _text_problem(MAX_EVIDENCE_CHARS),
    Network: lambda v: f"must match [a-z0-9_-]{{1,32}}, got {v!r:.60}",
    EpochMs: _epoch_ms_problem,
    bool: lambda v: f"must be true or false, got {type(v).__name__}",
    ValidFor: lambda v: f"must be an integer of seconds, 1-{MAX_VALID_FOR_S}, got {v!r:.60}",
    Reporter: lambda v: f"must be an integer 0..2^64-1 (a hashed recipient), got {v!r:.60}",
    CategoryName: _one_of(CATEGORIES),
    Categories: _categories_problem,
    Status: _one_of(DELIVERY_STATUSES),
    Zone: lambda v: f"must be an IANA time zone name such as America/New_York (tzdata), got {v!r:.60}",
    Region: lambda v: f"must be a country (ISO 3166-1, e.g. GB) or region (ISO 3166-2, e.g. US-FL), got {v!r:.60}",
}


def _field_type(annotation: Any) -> Any:
    """The type of an optional field's value (`X | None` -> X): null is read as absent."""
    return (
        next(t for t in get_args(annotation) if t is not type(None))
        if type(None) in get_args(annotation)
        else annotation
    )


# each type's fields but ts, in order: (name, required, type)
_FIELDS = {
    cls: tuple((f.name, f.required, _field_type(f.type)) for f in msgspec.structs.fields(cls) if f.name != "ts")
    for cls in _CLASSES.values()
}
_REQUIRED = {cls: {"type", *(name for name, required, _ in fields if required)} for cls, fields in _FIELDS.items()}
_CHECKED = {cls: tuple((name, _CHECKS[t]) for name, _, t in fields if t in _CHECKS) for cls, fields in _FIELDS.items()}
_CHECKED_UNESCAPED = {cls: tuple(c for c in checks if c[1] is not _no_controls) for cls, checks in _CHECKED.items()}


def _holds(event: Event, checks: tuple[tuple[str, Callable[[Any], bool]], ...]) -> bool:
    return all(value is None or check(value) for value, check in ((getattr(event, n), check) for n, check in checks))


def _problem(field_type: Any, value: Any) -> str | None:
    """What is wrong with `value` as a value of `field_type`, or None."""
    try:
        msgspec.convert(value, field_type)
    except msgspec.ValidationError:
        return _PROBLEMS[field_type](value)
    check = _CHECKS.get(field_type)
    return None if check is None or check(value) else _PROBLEMS[field_type](value)


def _refusal(cls: type[Event], doc: dict, record_ts: int, said: str) -> InvalidEvent:
    """Why `doc` is not a `cls`: its first field at fault, in the type's order, then ts."""
    kind = _TYPE_OF[cls]
    for name, required, field_type in _FIELDS[cls]:
        if required and name not in doc:
            return InvalidEvent(f"{kind}: missing required field '{name}'", Refusal.MISSING_FIELD)
        value = doc.get(name)
        problem = None if value is None and not required else _problem(field_type, value)
        if problem is not None:
            return InvalidEvent(f"field '{name}' {problem}")
    ts = doc.get("ts")
    problem = _problem(EpochMs, record_ts if ts is None else ts)
    # msgspec's own words (they name the field) if the walk finds nothing: never expected, but a
    # record refused must be dead-lettered, not stop the worker
    return InvalidEvent(f"field 'ts' {problem}" if problem is not None else f"{kind}: {said}")


def _timed(event: Event, record_ts: int, max_ahead_ms: int | None) -> Event:
    """The event at its time: its own ts, or the record's; refused if too far ahead of the record."""
    if event.ts == NO_TS:
        problem = _problem(EpochMs, record_ts)
        if problem is not None:
            raise InvalidEvent(f"field 'ts' {problem}")
        msgspec.structs.force_setattr(event, "ts", record_ts)  # a fresh event, shared with no one yet
    if max_ahead_ms is not None and event.ts - record_ts > max_ahead_ms:
        raise InvalidEvent(
            f"field 'ts' is {(event.ts - record_ts) // 1000} s ahead of the record's timestamp; "
            f"the limit is {max_ahead_ms // 1000} s (max_ts_ahead_s)",
            Refusal.TS_AHEAD,
        )
    return event


def validate(doc: Any, record_ts: int, max_ahead_ms: int | None = None) -> Event:
    """Turn a decoded JSON document into an event; `record_ts` (ms) is used when `ts` is absent
    (or null, as is any optional field).

    With `max_ahead_ms`, an event time further than that ahead of the record's own timestamp is
    refused: one such event would otherwise move its app's clock forward and release every
    pending request at once.
    """
    if not isinstance(doc, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(doc).__name__}", Refusal.NOT_JSON)
    kind = doc.get("type")
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEvent(
            f"field 'type' must be one of {', '.join(EVENT_TYPES)}, got {kind!r:.60}", Refusal.UNKNOWN_TYPE
        )
    required = _REQUIRED[cls]
    try:
        event = msgspec.convert({k: v for k, v in doc.items() if v is not None or k in required}, cls)
    except msgspec.ValidationError as exc:
        raise _refusal(cls, doc, record_ts, str(exc)) from None
    if not _holds(event, _CHECKED[cls]):
        raise _refusal(cls, doc, record_ts, "")
    return _timed(event, record_ts, max_ahead_ms)


def _parsed(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {exc}", Refusal.NOT_JSON) from None


def decode_event(raw: bytes | None, record_ts: int, max_ahead_ms: int | None = None) -> Event:
    """Decode one record value (UTF-8 JSON) into a validated event, or raise InvalidEvent."""
    if raw is None:
        raise InvalidEvent("record has no value", Refusal.NO_VALUE)
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"record is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}", Refusal.TOO_LARGE)
    try:
        event = _DECODER.decode(raw)
    except (msgspec.MsgspecError, RecursionError):  # (nested deeper than the stack allows)
        return validate(_parsed(raw), record_ts, max_ahead_ms)  # which says why, or takes a null as absent
    # JSON strings hold a control character only as an escape, or as DEL (the others must be
    # escaped), so a record with neither has no id to scan for one
    escaped = b"\\" in raw or b"\x7f" in raw
    if not _holds(event, (_CHECKED if escaped else _CHECKED_UNESCAPED)[type(event)]):
        return validate(_parsed(raw), record_ts, max_ahead_ms)  # which says why
    return _timed(event, record_ts, max_ahead_ms)


def event_type(event: Event) -> str:
    return _TYPE_OF[type(event)]


def encode_event(event: Event) -> bytes:
    """The canonical JSON form of an event (what `publish` sends after validation)."""
    return _ENCODER.encode(event)
