"""Output records: the decision on a send request, and the delivery a network worker acts on."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
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


def scoped_app(app: str) -> str:
    """The app as the first part of an id: with `%` and `:` escaped, the first `:` ends it, so two
    apps can never form the same id (outcome and reason hold no `:`, so the id splits from both ends)."""
    return app.replace("%", "%25").replace(":", "%3A")


def iso(ts_ms: int) -> str:
    """Event time as a readable UTC instant for detail sentences (e.g. 2026-11-22T14:03:20Z)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
