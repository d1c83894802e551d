"""Output records: the decision on a send request, and the delivery a network worker acts on."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import orjson

OUTCOMES = ("accepted", "delayed", "rejected", "released", "cancelled")


@dataclass(slots=True)
class Decision:
    request_id: str
    app: str
    sender: str
    userkey: str
    network: str
    outcome: str
    reason: str
    detail: str
    ts: int
    deliver_at: int | None = None
    retry_after_s: int | None = None
    similarity: float | None = None
    similar_recipients: int | None = None
    cluster_id: str | None = None
    reply: bool = False  # exempt from burst pacing because it answers the user's own recent message

    @property
    def decision_id(self) -> str:
        # Stable across replays and redeliveries, so subscribers can drop duplicates; scoped by app,
        # because a request_id is unique only within its app.
        return f"{scoped_app(self.app)}:{self.request_id}:{self.outcome}:{self.reason}"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "decision", "decision_id": self.decision_id}
        for name in self.__slots__:
            value = getattr(self, name)
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
        doc.update({name: getattr(self, name) for name in self.__slots__})
        return orjson.dumps(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Delivery":
        return cls(**{name: doc.get(name) for name in cls.__slots__})


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

    @property
    def record_id(self) -> str:
        # stable across replays and redeliveries, unique across apps: subscribers deduplicate on it
        origin = "inbound" if self.source == "inbound" else "event"  # an inbound and an event may share an id
        return f"{scoped_app(self.app)}:{origin}:{self.source_event_id}:{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "consent", "record_id": self.record_id}
        doc.update({name: getattr(self, name) for name in self.__slots__})
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ConsentRecord":
        return cls(**{name: doc[name] for name in cls.__slots__ if name in doc})


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
        return {"type": "grant_revocation", "revocation_id": f"{scoped_app(self.app)}:{self.event_id}",
                "app": self.app, "reason": self.reason, "counts": self.counts, "ts": self.ts}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "GrantRevocation":
        return cls(doc["app"], doc["reason"], doc["counts"], doc["ts"])

    def policy_event(self) -> bytes:
        return orjson.dumps({"type": "app_policy", "event_id": self.event_id, "app": self.app, "unrestricted": False,
                             "reason": self.reason, "ts": self.ts})


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
        return orjson.dumps({"type": "junk_shared", "event_id": self.event_id, "app": self.app,
                             "reporter": self.reporter, "text": self.text, "ts": self.ts})


def revocation_made_at(event_id: str) -> int | None:
    """When sendgate made the revocation an app_policy event carries (its event_id), or None for an
    operator's event (an id that only looks like one counts as an operator's)."""
    made_at = event_id[len(REVOCATION_ID):] if event_id.startswith(REVOCATION_ID) else ""
    return int(made_at) if made_at.isascii() and made_at.isdigit() and len(made_at) <= 16 else None


def scoped_app(app: str) -> str:
    """The app as the first part of an id: with `%` and `:` escaped, the first `:` ends it, so two
    apps can never form the same id (outcome and reason hold no `:`, so the id splits from both ends)."""
    return app.replace("%", "%25").replace(":", "%3A")


def iso(ts_ms: int) -> str:
    """Event time as a readable UTC instant for detail sentences (e.g. 2026-11-22T14:03:20Z)."""
    return _iso_second(ts_ms // 1000)


@lru_cache(maxsize=4096)  # a batch's details name a few seconds many times; strftime is ~2 µs
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
