"""Promotional sends by subject to one userkey: Florida, Oklahoma and Maryland allow at most three
promotional messages on one subject to one person in 24 hours (Policy.subject_limit).

A subject is burst pacing's cluster of near-identical texts across all of an app's sender names
(models/gate/burst.py WHOLE_APP): a cluster lives while its texts keep coming (cluster_idle_s,
24 h by default), so a subject keeps its id over the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .rows import Row

# entries kept per userkey, newest last: bounds the row (about 30 bytes an entry) for a userkey
# sent promotions on many subjects; at the default limit of 3 that is 21 subjects a window
MAX_SUBJECT_SENDS = 64


@dataclass(slots=True)
class SubjectSends(Row):
    """[subject, at] pairs: when each promotional send to the userkey went (or goes) out, oldest first."""

    sent: list[list] = field(default_factory=list)

    row_version = 1  # [sent] (models/rows.py)

    def times(self, subject: str, at: int, window_s: int) -> list[int]:
        """When promotional sends on `subject` go out within the window either side of `at` (one
        held for later counts too), oldest first."""
        window_ms = window_s * 1000
        return sorted(t for s, t in self.sent if s == subject and abs(t - at) < window_ms)

    def record(self, subject: str, at: int, now: int, window_s: int) -> None:
        since = now - window_s * 1000
        self.sent = [entry for entry in self.sent if entry[1] > since][-(MAX_SUBJECT_SENDS - 1) :]
        self.sent.append([subject, at])

    def to_bytes(self) -> bytes:
        return self.pack([self.sent])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "SubjectSends":
        return cls() if raw is None else cls(*cls.unpack(raw))
