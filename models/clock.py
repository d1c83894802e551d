"""An app's event clock: the time its events are decided at, which no producer can move back.

Event time comes from the producer (`ts`), and a producer may be careless or hostile: a send
stamped hours in the past would find the user's old inbound inside the reply window and skip
pacing. Two bounds hold it:
- an app's clock never moves backwards: an event older than the app's latest is decided at the
  app's latest time;
- an event may trail its record's timestamp by at most `max_ts_behind_s`: beyond that it is
  decided at the bounded time (record timestamp - max_ts_behind_s). Records whose timestamp is
  set by the broker (`message.timestamp.type=LogAppendTime`) make this a bound no producer can
  bend; history published with record timestamps equal to its `ts` (backfill) is unaffected.
(`max_ts_ahead_s`, the bound the other way, is checked by the decoder: such an event is refused.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .rows import Row, version_first


@dataclass(slots=True)
class AppClock(Row):
    ts: int = 0  # the latest event time decided in the app (epoch ms); 0: none yet
    sweep_at: int = 0  # when the app's next lapsed conversations are removed (models/retention.py); 0: none
    forget_at: int = 0  # when the app's next remembered requests are forgotten (models/memory.py); 0: none

    # v1: [ts]; v2 appends sweep_at, v3 forget_at (models/rows.py)
    row_version = 3
    untagged = version_first

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, 0]  # from before retention: no sweep due; the app's next inbound indexes its conversations

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        return [*fields, 0]  # from before the request memory: nothing remembered yet

    def advance(self, ts: int, floor: int | None) -> tuple[int, bool]:
        """The time to decide an event stamped `ts` at, given `floor` = record timestamp - the
        allowed skew (None: no record timestamp). Returns (time, whether the skew bound moved it)."""
        skewed = floor is not None and ts < floor
        at = floor if floor is not None and skewed else ts
        if at < self.ts:
            at = self.ts
        self.ts = at
        return at, skewed and at == floor

    def to_bytes(self) -> bytes:
        return self.pack([self.ts, self.sweep_at, self.forget_at])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "AppClock":
        return cls() if raw is None else cls(*cls.unpack(raw))
