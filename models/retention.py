"""Conversations that lapse: state that stops growing with every user an app has ever seen.

A conversation gives consent only while its user keeps writing: one whose last inbound is more
than `conversation_horizon_days` before the event being decided counts as none (`lapsed`), and
its row is removed. Opt-outs and opt-ins are `Userkey` rows, which never lapse: an opt-out is
never forgotten.

Removal is decided from the log alone, like everything else, so a replay removes the same rows.
Each app keeps a `LapseIndex` row: the days (UTC, of a conversation's last inbound) that have
`LapseBucket` rows, each of at most LAPSE_CHUNK [sender, userkey] entries. An inbound that moves
a conversation to a new day appends it to that day's bucket (once a day per conversation; the
old day's entry stays and is skipped when swept). Once the app's clock is past a day plus the
horizon, every entry of that day has lapsed or moved on: each event of the app then sweeps one
bucket row (`AppClock.sweep_at` says when, so an event that sweeps nothing costs one
comparison), deleting the conversations whose last inbound is still that old. At most
horizon + 1 days are listed, so the index row stays small however many users an app has.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .rows import Row, version_first

DAY_MS = 86_400_000
LAPSE_CHUNK = 256  # entries per LapseBucket row (a few KB)


def lapsed(last_ts: int, ts: int, horizon_ms: int) -> bool:
    """Has a conversation whose last inbound was at `last_ts` (0: there is none) lapsed at `ts`?
    (horizon 0: never)"""
    return horizon_ms > 0 and last_ts > 0 and ts - last_ts > horizon_ms


@dataclass(slots=True)
class LapseIndex(Row):
    days: list[int] = field(default_factory=list)  # sorted days (epoch ms // DAY_MS) with buckets
    chunks: list[int] = field(default_factory=list)  # per day: its LapseBucket rows (chunks 0..n-1)

    row_version = 1  # [days, chunks] (models/rows.py)
    untagged = version_first

    def chunk_count(self, day: int) -> int:
        i = bisect.bisect_left(self.days, day)
        return self.chunks[i] if i < len(self.days) and self.days[i] == day else 0

    def open_chunk(self, day: int) -> int:
        """Open a new bucket row for `day` (its first, or its last one is full); returns its number."""
        i = bisect.bisect_left(self.days, day)
        if i == len(self.days) or self.days[i] != day:
            self.days.insert(i, day)
            self.chunks.insert(i, 0)
        self.chunks[i] += 1
        return self.chunks[i] - 1

    def sweep_at(self, horizon_ms: int) -> int:
        """When the first listed day's entries have all lapsed (0: nothing listed)."""
        return (self.days[0] + 1) * DAY_MS + horizon_ms if self.days else 0

    def take_last_chunk(self) -> tuple[int, int]:
        """The first day's last bucket row (day, chunk), forgotten by the index."""
        day, chunk = self.days[0], self.chunks[0] - 1
        if chunk == 0:
            del self.days[0], self.chunks[0]
        else:
            self.chunks[0] = chunk
        return day, chunk

    def to_bytes(self) -> bytes:
        return self.pack([self.days, self.chunks])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "LapseIndex":
        return cls() if raw is None else cls(*cls.unpack(raw))


@dataclass(slots=True)
class LapseBucket(Row):
    """Up to LAPSE_CHUNK conversations of one app and day, as (sender, userkey). Stored as its
    version and one `\x1e sender \x1f userkey` entry each (ids hold no control characters), so
    that an inbound appends to it without decoding it."""

    body: bytes = b""
    # its entries, counted once when read rather than on every append (most events append to one)
    size: int = field(default=0, compare=False)

    row_version = 1  # the body is the fields (models/rows.py); every bucket was written with its version
    dump = load = staticmethod(bytes)  # type: ignore[assignment]

    @property
    def full(self) -> bool:
        return self.size >= LAPSE_CHUNK

    def add(self, sender: str, userkey: str) -> None:
        self.body += f"\x1e{sender}\x1f{userkey}".encode()
        self.size += 1

    @property
    def entries(self) -> list[tuple[str, str]]:
        return [
            (sender, userkey)
            for entry in self.body.split(b"\x1e")[1:]
            for sender, userkey in [entry.decode().split("\x1f")]
        ]

    def to_bytes(self) -> bytes:
        return self.pack(self.body)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "LapseBucket":
        if raw is None:
            return cls()
        body = cls.unpack(raw)
        return cls(body, body.count(b"\x1e"))
