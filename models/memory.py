"""What an app said before: a retried request gets its first answer, a repeated event counts once.

Producers retry: an API server that timed out waiting for the broker's acknowledgement publishes
the same request again, seconds or minutes later. Deciding it anew would deliver it twice, or
let a retry of an invoice accepted before a STOP pass after it. As Twilio, Infobip and Stripe do
(Stripe remembers an Idempotency-Key for 24 h), a send whose (app, request_id) was answered
within `request_memory_s` gets that first answer again, field for field (so the same
`decision_id`), takes no slot and causes no delivery; a request_id reused for another request
(another sender, userkey, network or text) is refused. An inbound or consent event whose
event_id the app sent within the same memory is applied once.

Rows (table `seen`): (app, kind, id) -> `AnsweredRequest` (kind `r`) or `SeenEvent` (kind `e`).
Forgetting is decided by event time, from the log alone: each app lists its rows by the UTC day
they were written in the retention module's `LapseIndex` (table `seen_days`) and `LapseBucket`s of
(kind, id) entries (table `seen_lists`); once the app's clock is a day plus the memory past a day,
each event of the app removes one bucket's rows (`AppClock.forget_at` says when). A row is
honoured only while its answer is younger than the memory, so whether a sweep has run yet never
changes a decision.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass

from .decisions import Decision
from .rows import Row

REQUEST, EVENT = "r", "e"  # kinds of `seen` rows
_ANSWER = (
    "outcome",
    "reason",
    "detail",
    "ts",
    "deliver_at",
    "retry_after_s",
    "similarity",
    "similar_recipients",
    "cluster_id",
    "reply",
)  # the Decision fields a repeat restores; the rest come from the retry itself
_OUTCOME, _REASON, _TS = (_ANSWER.index(name) for name in ("outcome", "reason", "ts"))
_answer_fields = operator.attrgetter(*_ANSWER)  # (one call: every send's answer is remembered)


def said_digest(*parts: str) -> str:
    """What tells a retry from another request (or event) under the same id: 64 bits of what it
    says, the userkey as the tables store it (its HMAC with a userkey secret)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class AnsweredRequest(Row):
    digest: str
    answer: list  # the first decision's _ANSWER fields

    row_version = 1

    @classmethod
    def of(cls, digest: str, decision: Decision) -> "AnsweredRequest":
        return cls(digest, list(_answer_fields(decision)))

    @property
    def outcome(self) -> str:
        return self.answer[_OUTCOME]

    @property
    def reason(self) -> str:
        return self.answer[_REASON]

    @property
    def ts(self) -> int:
        return self.answer[_TS]

    def again(self, request_id: str, app: str, sender: str, userkey: str, network: str) -> Decision:
        """The first decision, as it was (the retry carries the fields the row does not keep)."""
        return Decision(request_id, app, sender, userkey, network, *self.answer)

    def to_bytes(self) -> bytes:
        return self.pack([self.digest, self.answer])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "AnsweredRequest":
        return cls(*cls.unpack(raw))


@dataclass(slots=True)
class SeenEvent(Row):
    digest: str
    ts: int  # when the event was applied (event time)

    row_version = 1

    def to_bytes(self) -> bytes:
        return self.pack([self.digest, self.ts])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "SeenEvent":
        return cls(*cls.unpack(raw))
