"""Delayed requests and the schedule that releases them as event time passes.

A delayed send is one `PendingRequest` row per (app, request_id). To find what is due without
scanning, an app's `ReleaseSchedule` row lists the minutes that hold due entries and the earliest
`deliver_at`; each minute is one or more `DueBucket` rows per (app, minute, chunk) of at most
`DUE_CHUNK` entries each, so no row grows with the requests that share a minute (20,000 requests
due in one minute are 79 rows, not one of ~1 MB). Every pending request is due within
`max_delay_s` of the event that delayed it, so the schedule lists at most max_delay_s / 60 + 1
minutes (361 by default) however many requests wait.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import orjson

from .events import Send
from .rows import Row, by_field_count

MINUTE_MS = 60_000
DUE_CHUNK = 256  # entries per DueBucket row: ~25 KB at most with 256-character request ids


@dataclass(slots=True)
class PendingRequest(Row):
    send: Send
    deliver_at: int
    cluster_id: str | None  # None: a reply held by the loop guard
    decision: dict  # the `delayed` decision, repeated verbatim if the same request arrives again

    # v1: the send's fields up to its ts, then deliver_at, cluster_id, decision; v2: the send's
    # valid_for_s after its ts (rows from before versions have it only when it was set); v3: its
    # category after that
    row_version = 3
    untagged = by_field_count({11: 1, 12: 2})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields[:8], None, *fields[8:]]  # valid_for_s: the policy's default

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        return [*fields[:9], None, *fields[9:]]  # category: the policy's default

    def to_bytes(self) -> bytes:
        s = self.send
        return self.pack(
            [
                s.request_id,
                s.app,
                s.sender,
                s.userkey,
                s.network,
                s.text,
                s.reply_to,
                s.ts,
                s.valid_for_s,
                s.category,
                self.deliver_at,
                self.cluster_id,
                self.decision,
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> "PendingRequest":
        *send, deliver_at, cluster_id, decision = cls.unpack(raw)
        return cls(Send(*send), deliver_at, cluster_id, decision)


@dataclass(slots=True)
class DueBucket(Row):
    entries: list[list] = field(default_factory=list)  # [deliver_at, request_id]

    row_version = 1  # the entries are the fields (models/rows.py)

    @classmethod
    def untagged(cls, raw: bytes) -> tuple[int, list]:
        return 1, orjson.loads(raw)

    def split(self, ts: int) -> tuple[list[list], list[list]]:
        """(entries due at `ts`, entries still waiting)."""
        due = [e for e in self.entries if e[0] <= ts]
        return due, [e for e in self.entries if e[0] > ts]

    def to_bytes(self) -> bytes:
        return self.pack(self.entries)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "DueBucket":
        return cls() if raw is None else cls(cls.unpack(raw))


@dataclass(slots=True)
class ReleaseSchedule(Row):
    minutes: list[int] = field(default_factory=list)  # sorted minutes (deliver_at // 60000) with entries
    next_due: int | None = None  # the earliest deliver_at of any entry
    chunks: list[int] = field(default_factory=list)  # per minute: its DueBucket rows (chunks 0..n-1)
    held: int = 0  # pending requests of the app (cancelled ones leave their entries until they come due)

    # v1: [minutes, next_due], one bucket row a minute; v2: [minutes, chunks, next_due, held]
    row_version = 2

    @classmethod
    def untagged(cls, raw: bytes) -> tuple[int, list]:
        doc = orjson.loads(raw)
        return (1, doc) if isinstance(doc[0], list) else (doc[0], doc[1:])  # v2 wrote its version first

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        minutes, next_due = fields
        return [minutes, [1] * len(minutes), next_due, 0]  # held: counted from the next request held

    def add(self, deliver_at: int) -> int:
        """Record an entry; returns the minute whose bucket must hold it (its last chunk, or a new
        one if that is full: `chunk_of`, `new_chunk`)."""
        minute = deliver_at // MINUTE_MS
        i = bisect.bisect_left(self.minutes, minute)
        if i == len(self.minutes) or self.minutes[i] != minute:
            self.minutes.insert(i, minute)
            self.chunks.insert(i, 1)
        self.next_due = deliver_at if self.next_due is None else min(self.next_due, deliver_at)
        return minute

    def chunk_count(self, minute: int) -> int:
        i = bisect.bisect_left(self.minutes, minute)
        return self.chunks[i] if i < len(self.minutes) and self.minutes[i] == minute else 0

    def new_chunk(self, minute: int) -> int:
        """Open another DueBucket row for `minute` (its last one is full); returns its number."""
        i = self.minutes.index(minute)
        self.chunks[i] += 1
        return self.chunks[i] - 1

    def pop_first(self) -> None:
        del self.minutes[0], self.chunks[0]

    def is_due(self, ts: int) -> bool:
        return self.next_due is not None and ts >= self.next_due

    def to_bytes(self) -> bytes:
        return self.pack([self.minutes, self.chunks, self.next_due, self.held])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "ReleaseSchedule":
        if raw is None:
            return cls()
        minutes, chunks, next_due, held = cls.unpack(raw)
        return cls(minutes, next_due, chunks, held)
