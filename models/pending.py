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

MINUTE_MS = 60_000
DUE_CHUNK = 256  # entries per DueBucket row: ~25 KB at most with 256-character request ids


@dataclass(slots=True)
class PendingRequest:
    send: Send
    deliver_at: int
    cluster_id: str
    decision: dict  # the `delayed` decision, repeated verbatim if the same request arrives again

    def to_bytes(self) -> bytes:
        s = self.send
        send = [s.request_id, s.app, s.sender, s.userkey, s.network, s.text, s.reply_to, s.ts]
        if s.valid_for_s is not None:  # appended only when set: older rows and rows without it read alike
            send.append(s.valid_for_s)
        return orjson.dumps([*send, self.deliver_at, self.cluster_id, self.decision])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "PendingRequest":
        *send, deliver_at, cluster_id, decision = orjson.loads(raw)
        return cls(Send(*send), deliver_at, cluster_id, decision)


@dataclass(slots=True)
class DueBucket:
    entries: list[list] = field(default_factory=list)  # [deliver_at, request_id]

    def split(self, ts: int) -> tuple[list[list], list[list]]:
        """(entries due at `ts`, entries still waiting)."""
        due = [e for e in self.entries if e[0] <= ts]
        return due, [e for e in self.entries if e[0] > ts]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.entries)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "DueBucket":
        return cls() if raw is None else cls(orjson.loads(raw))


@dataclass(slots=True)
class ReleaseSchedule:
    minutes: list[int] = field(default_factory=list)  # sorted minutes (deliver_at // 60000) with entries
    next_due: int | None = None  # the earliest deliver_at of any entry
    chunks: list[int] = field(default_factory=list)  # per minute: its DueBucket rows (chunks 0..n-1)
    held: int = 0  # pending requests of the app (cancelled ones leave their entries until they come due)

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
        return orjson.dumps([2, self.minutes, self.chunks, self.next_due, self.held])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "ReleaseSchedule":
        if raw is None:
            return cls()
        doc = orjson.loads(raw)
        if isinstance(doc[0], list):  # version 1: [minutes, next_due], one bucket row per minute, no count
            return cls(doc[0], doc[1], [1] * len(doc[0]))
        if doc[0] != 2:
            raise ValueError(f"ReleaseSchedule row of version {doc[0]}; this build reads versions 1 and 2")
        _, minutes, chunks, next_due, held = doc
        return cls(minutes, next_due, chunks, held)
