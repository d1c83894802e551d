"""Shared helpers for the unit tests: event builders on a fixed clock, and a gate harness.

Every time is event time: `T` plus an offset in milliseconds. Nothing here reads the wall clock.
Expected values in the tests are computed from the rules (see `paced_slots`), never copied from
the code's output.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sendgate.models.decisions import Decision, Delivery
from sendgate.models.events import validate
from sendgate.models.burst import SenderState
from sendgate.models.gate import Gate, MemoryStore, UnitOfWork
from sendgate.models.policy import Policy

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z, the base event time of every test
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

APP = "app1"
SENDER = "S1"

# A real-looking template and its per-recipient variants (names, numbers and URLs differ).
TEMPLATE = "Hi {name}, your parcel {num} is out for delivery today. Track it at {url} or reply HELP for help."
PARCEL = TEMPLATE.format(name="Anna", num="48213", url="https://track.example.com/p/48213")
# Texts unrelated to PARCEL and to each other (each starts its own cluster).
UNRELATED = (
    "Your table for two at Luigi's is confirmed for Friday evening. See you then!",
    "Flash sale! Everything in store half price this weekend only, don't miss out",
    "Reminder: the dentist appointment was moved; please call us back to rebook",
    "Congratulations, you have been selected for our quarterly customer survey panel",
)

_DEFAULTS: dict[str, dict[str, Any]] = {
    "inbound": {"app": APP, "sender": SENDER, "userkey": "u1", "network": "sms", "text": "hello"},
    "opt_in": {"app": APP, "userkey": "u1"},
    "opt_out": {"app": APP, "userkey": "u1"},
    "send": {"app": APP, "sender": SENDER, "userkey": "u1", "network": "sms", "text": "hello"},
    "app_policy": {"app": APP, "unrestricted": True},
    "sender_profile": {"app": APP, "sender": SENDER, "registered_ts": T - 365 * DAY},
    "junk_report": {"app": APP, "sender": SENDER, "userkey": "u1", "text": "junk"},
    "delivery_status": {"app": APP, "sender": SENDER, "userkey": "u1", "request_id": "r1", "status": "delivered"},
    "contact": {"app": APP, "userkey": "u1", "network": "xmpp", "authorized": True},
    "tick": {"app": APP},
    "cancel": {"app": APP, "request_id": "r1"},
    "junk_shared": {"app": APP, "reporter": 1, "text": "junk"},
    "recipient_profile": {"app": APP, "userkey": "u1", "timezone": "America/New_York", "region": "US-NY"},
}
_ID_FIELD = {
    "inbound": "event_id",
    "opt_in": "event_id",
    "opt_out": "event_id",
    "send": "request_id",
    "app_policy": "event_id",
    "sender_profile": "event_id",
    "junk_report": "event_id",
    "contact": "event_id",
    "delivery_status": "event_id",
    "junk_shared": "event_id",
    "recipient_profile": "event_id",
}
_ids = itertools.count(1)


def event(kind: str, at: int | None = 0, **fields: Any) -> dict[str, Any]:
    """A JSON-like event document of `kind` at event time T + `at` ms (`at=None`: no `ts` field).

    Unset fields get defaults (app1, sender S1, userkey u1, network sms); ids are generated.
    """
    doc: dict[str, Any] = {"type": kind, **_DEFAULTS[kind], **fields}
    id_field = _ID_FIELD.get(kind)
    if id_field is not None and id_field not in doc:
        doc[id_field] = f"{kind}-{next(_ids)}"
    if at is not None and "ts" not in doc:
        doc["ts"] = T + at
    return doc


def send(userkey: str, at: int = 0, text: str = "hello", **fields: Any) -> dict[str, Any]:
    """A send request; its request_id defaults to 'r-<userkey>-<at>' so tests can name it."""
    fields.setdefault("request_id", f"r-{userkey}-{at}")
    return event("send", at, userkey=userkey, text=text, **fields)


def recipients(n: int, start: int = 1) -> list[str]:
    return [f"u{i:02d}" for i in range(start, start + n)]


def established(
    app: str = APP, sender: str = SENDER, *, registered_ts: int = T - 365 * DAY, conversers: int = 3, grant: bool = True
) -> list[dict[str, Any]]:
    """Events that make `sender` a non-risky sender (profile older than 90 days, `conversers`
    distinct userkeys that wrote to it a day before T, outside any reply window) and, with
    `grant`, give the app an unrestricted grant so that any recipient may be messaged."""
    docs = [event("sender_profile", -2 * DAY, app=app, sender=sender, registered_ts=registered_ts)]
    docs += [
        event("inbound", -DAY, app=app, sender=sender, userkey=f"conv{i}", text="hi") for i in range(1, conversers + 1)
    ]
    if grant:
        docs.append(event("app_policy", -DAY, app=app, unrestricted=True, reason="test grant"))
    return docs


def paced_slots(first_slot: int, n: int, factor: int = 1) -> list[int]:
    """deliver_at of the first `n` paced sends, from the rule: the first paced slot is
    `first_slot`; the gap after paced send k (0-based) is factor * (60 s + 60 s * k / 50),
    i.e. 60 s, 61.2 s, 62.4 s, ... in exact milliseconds."""
    slots, slot = [], first_slot
    for k in range(n):
        slots.append(slot)
        slot += factor * (60_000 + 1_200 * k)
    return slots


class Harness:
    """Feeds event dicts through `Gate.handle_in_one_log(validate(doc, record_ts), store)` on one
    MemoryStore: a log of one partition, where a junk report's share comes right after it."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.gate = Gate(policy)
        self.store = MemoryStore()
        self.records: list[Decision | Delivery] = []  # everything output so far, in order
        self.last: list[Decision | Delivery] = []  # the output of the last `feed`

    def feed(self, *docs: dict[str, Any], record_ts: int = T) -> list[Decision]:
        """Handle the documents in order; returns the Decision records they caused."""
        self.last = []
        for doc in docs:
            self.last.extend(self.gate.handle_in_one_log(validate(doc, record_ts), self.store))
        self.records.extend(self.last)
        return [r for r in self.last if isinstance(r, Decision)]

    def decide(self, doc: dict[str, Any]) -> Decision:
        """The decision on `doc` itself (a send or cancel), after any releases it triggered."""
        decisions = self.feed(doc)
        assert decisions, f"no decision for {doc}"
        return decisions[-1]

    def sends(self, userkeys: list[str], at: int = 0, text: str = PARCEL, **fields: Any) -> list[Decision]:
        """One send of `text` to each userkey at T + `at`; returns the decision on each send."""
        return [self.decide(send(u, at=at, text=text, **fields)) for u in userkeys]

    def sender(self, app: str, name: str) -> SenderState:
        """A sender's state, as the gate reads it."""
        return UnitOfWork(self.store, self.gate.decoded).sender(app, name)

    @property
    def deliveries(self) -> list[Delivery]:
        return [r for r in self.records if isinstance(r, Delivery)]

    @property
    def last_deliveries(self) -> list[Delivery]:
        return [r for r in self.last if isinstance(r, Delivery)]


def run(docs: list[dict[str, Any]], policy: Policy | None = None) -> list[Decision]:
    """One-shot: feed `docs` through a fresh Gate and MemoryStore; returns all Decision records."""
    return Harness(policy).feed(*docs)


@pytest.fixture
def gate() -> Harness:
    return Harness()
