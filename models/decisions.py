"""Output records: the decision on a send request, and the delivery a network worker acts on."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson


class Outcome(StrEnum):
    """What is done with a send request (str-valued: the JSON says the value)."""

    ACCEPTED = "accepted"  # delivered now
    DELAYED = "delayed"  # held until deliver_at
    REJECTED = "rejected"  # not delivered (a cancel that found nothing to cancel is rejected too)
    RELEASED = "released"  # a delayed request delivered at its slot
    CANCELLED = "cancelled"  # a delayed request that will not be delivered


OUTCOMES = tuple(Outcome)


class Reason(StrEnum):
    """Why: the machine-readable reason of a decision (models/schemas/decision.json lists the same).
    Each is decided in one module of models/gate/ (its docstring's table), burst pacing's in
    models/burst.py, `expired_before_slot` by models/slots.py."""

    # accepted within the free allowance, named after the consent basis
    REPLY = "reply"  # answers the user's own recent message (never paced)
    CONVERSATION = "conversation"  # the userkey has written to the sender
    OPT_IN = "opt_in"  # the userkey opted in to the app
    UNRESTRICTED = "unrestricted"  # the app holds an unrestricted-outbound grant
    HELP_REPLY = "help_reply"  # answers a HELP inbound, even after an opt-out
    OPT_OUT_CONFIRMATION = "opt_out_confirmation"  # the one confirmation after an opt-out
    BURST_PACED = "burst_paced"  # paced near-identical text: accepted at a free slot, or delayed
    JUNK_SIMILAR = "junk_similar"  # like a text reported as junk: paced from its first recipient, or rejected
    BURST_LIMIT = "burst_limit"  # rejected: the next paced slot is more than max_delay_s away
    RECIPIENT_LIMIT = "recipient_limit"  # delayed, or rejected: the userkey's recipient_limits
    LOOP_SUSPECTED = "loop_suspected"  # a reply held or refused by the auto-reply loop guard
    DUPLICATE_TEXT = "duplicate_text"  # rejected: the same text went to the userkey too often lately
    EXPIRED_BEFORE_SLOT = "expired_before_slot"  # rejected: the slot comes after valid_for_s
    NOT_IN_CONTACTS = "not_in_contacts"  # rejected: the bot is not on the user's contact list of that network
    OPTED_OUT = "opted_out"  # rejected; or cancelled: the userkey opted out while the request waited
    NO_CONVERSATION = "no_conversation"  # rejected: no conversation, opt-in or grant
    NO_CONSENT_FOR_CATEGORY = "no_consent_for_category"  # rejected: the consent held does not cover the send's kind
    QUIET_HOURS = "quiet_hours"  # delayed to the recipient's window, or rejected: its validity ends first
    SUBJECT_LIMIT = "subject_limit"  # rejected: too many promotional sends on one subject to the userkey
    SLOT_REACHED = "slot_reached"  # released
    CANCELLED_BY_APP = "cancelled_by_app"  # cancelled
    EXPIRED = "expired"  # cancelled: event time reached the slot after valid_for_s
    NOT_PENDING = "not_pending"  # rejected cancel: nothing pending under that request_id
    REQUEST_ID_REUSED = "request_id_reused"  # rejected: the request_id was answered for another request


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    app: str
    sender: str
    userkey: str
    network: str
    outcome: Outcome | str  # str once read back from JSON (a StrEnum equals its value)
    reason: Reason | str
    detail: str
    ts: int
    deliver_at: int | None = None
    retry_after_s: int | None = None
    similarity: float | None = None
    similar_recipients: int | None = None
    cluster_id: str | None = None
    reply: bool = False  # exempt from burst pacing because it answers the user's own recent message

    @classmethod
    def on(cls, request: Any, outcome: Outcome, reason: Reason | str, detail: str, ts: int, **extra: Any) -> Decision:
        """The decision on `request`, a send request (its request_id, app, sender, userkey, network)."""
        return cls(
            request.request_id,
            request.app,
            request.sender,
            request.userkey,
            request.network,
            outcome,
            reason,
            detail,
            ts,
            **extra,
        )

    @property
    def decision_id(self) -> str:
        # Stable across replays and redeliveries, so subscribers can drop duplicates; scoped by app,
        # because a request_id is unique only within its app.
        return f"{scoped_app(self.app)}:{self.request_id}:{self.outcome}:{self.reason}"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "decision", "decision_id": self.decision_id}
        for name, value in zip(self.__slots__, _decision_fields(self)):
            if value is not None:
                doc[name] = value
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Decision":
        return cls(**{name: doc[name] for name in cls.__slots__ if name in doc})


@dataclass(slots=True)
class Delivery:
    """A send request as it should be delivered now; `ts` is the deciding event's time."""

    request_id: str
    app: str
    sender: str
    userkey: str
    network: str
    text: str
    reply_to: str | None
    ts: int
    decision_id: str

    def to_json(self) -> bytes:
        doc = {"type": "delivery"}
        doc.update(zip(self.__slots__, _delivery_fields(self)))
        return orjson.dumps(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Delivery":
        fields: dict[str, Any] = {name: doc.get(name) for name in cls.__slots__}
        return cls(**fields)


@dataclass(slots=True)
class ConsentRecord:
    """One entry of the consent audit trail (`<prefix>consent`): a consent change, or an inbound
    whose wording was ambiguous (an opt-out word negated or in another sense), for review."""

    app: str
    userkey: str  # as the tables key it: the HMAC-SHA-256 of the userkey when a secret is set
    kind: str  # opt_out | opt_in | ambiguous
    rule: str  # models/wording.py's rule, or "opt_out_event" / "opt_in_event"
    source: str  # inbound | opt_out event | opt_in event
    source_event_id: str
    sender: str  # the sender an inbound was written to ("" for an event)
    text: str  # the inbound as the rules read it, normalised ("" for an event)
    matched: str  # the word or phrase the rule matched
    ts: int
    scope: str = "app"  # opt-in and opt-out hold for every sender of the app
    categories: list[str] | None = None  # the kinds of message an opt-in covers (models/categories.py)
    evidence: dict[str, str] | None = None  # how, where and to what words an opt_in event's consent was given

    @property
    def record_id(self) -> str:
        # stable across replays and redeliveries, unique across apps: subscribers deduplicate on it
        origin = "inbound" if self.source == "inbound" else "event"  # an inbound and an event may share an id
        return f"{scoped_app(self.app)}:{origin}:{self.source_event_id}:{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "consent", "record_id": self.record_id}
        doc.update(zip(self.__slots__, _consent_fields(self)))
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ConsentRecord":
        return cls(**{name: doc[name] for name in cls.__slots__ if name in doc})


# each record's fields in order, read by one call (every output is written as JSON: the worker, replay, the identity bench)
_decision_fields = operator.attrgetter(*Decision.__slots__)
_delivery_fields = operator.attrgetter(*Delivery.__slots__)
_consent_fields = operator.attrgetter(*ConsentRecord.__slots__)

REVOCATION_ID = "sendgate-revoke:"  # the event_id prefix of the app_policy events sendgate appends


@dataclass(slots=True)
class GrantRevocation:
    """sendgate revokes an app's unrestricted-outbound grant (models/consent.py GrantWatch). The
    worker sends it to `<prefix>grants` for operators and appends it to the app's log as an
    `app_policy` event (`policy_event`), which takes effect when it is decided: the log holds the
    revocation, so replay reproduces it."""

    app: str
    reason: str  # what crossed which threshold, with the numbers
    counts: dict[str, int]
    ts: int

    @property
    def event_id(self) -> str:
        return f"{REVOCATION_ID}{self.ts}"  # decided again after a crash: the same id

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "grant_revocation",
            "revocation_id": f"{scoped_app(self.app)}:{self.event_id}",
            "app": self.app,
            "reason": self.reason,
            "counts": self.counts,
            "ts": self.ts,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "GrantRevocation":
        return cls(doc["app"], doc["reason"], doc["counts"], doc["ts"])

    def policy_event(self) -> bytes:
        return orjson.dumps(
            {
                "type": "app_policy",
                "event_id": self.event_id,
                "app": self.app,
                "unrestricted": False,
                "reason": self.reason,
                "ts": self.ts,
            }
        )


@dataclass(frozen=True, slots=True)
class JunkShare:
    """A junk report to append to every partition of the events log, as a `junk_shared` event
    (`to_json`): each partition counts it in its own junk index where its log shows it, so the
    index a send is matched against is a function of that partition's log alone (models/junk.py)."""

    event_id: str
    app: str
    reporter: int
    text: str
    ts: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "type": "junk_shared",
                "event_id": self.event_id,
                "app": self.app,
                "reporter": self.reporter,
                "text": self.text,
                "ts": self.ts,
            }
        )


# every record the gate outputs (models/gate/)
Record = Decision | Delivery | ConsentRecord | GrantRevocation | JunkShare


def revocation_made_at(event_id: str) -> int | None:
    """When sendgate made the revocation an app_policy event carries (its event_id), or None for an
    operator's event (an id that only looks like one counts as an operator's)."""
    made_at = event_id[len(REVOCATION_ID) :] if event_id.startswith(REVOCATION_ID) else ""
    return int(made_at) if made_at.isascii() and made_at.isdigit() and len(made_at) <= 16 else None


def scoped_app(app: str) -> str:
    """The app as the first part of an id: with `%` and `:` escaped, the first `:` ends it, so two
    apps can never form the same id (outcome and reason hold no `:`, so the id splits from both ends)."""
    return app.replace("%", "%25").replace(":", "%3A")


def iso(ts_ms: int) -> str:
    """Event time as a readable UTC instant for detail sentences (e.g. 2026-11-22T14:03:20Z)."""
    return _iso_second(ts_ms // 1000)


def duration(seconds: int) -> str:
    """A policy's span for detail sentences, in the largest unit that says it exactly: 6 h, 30 min, 90 s."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


@lru_cache(maxsize=4096)  # a batch's details name a few seconds many times; strftime is ~2 µs
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
