"""Retention: conversations lapse after `conversation_horizon_days` without an inbound, and their
rows go (models/retention.py); the same day lists sweep the requests the memory keeps (memory.py).

Send step: `lapsed_conversation` (a lapsed conversation gives no consent: the send meets the
rules as if the user had never written).
"""

from __future__ import annotations

from typing import Callable

from ..clock import AppClock
from ..consent import Conversation
from ..decisions import Record, iso
from ..retention import LapseBucket, LapseIndex, lapsed
from .context import SendContext
from .tables import CLOCKS, CONVERSATIONS, LAPSES_BY_DAY, DayLists
from .unit import UnitOfWork


def lapsed_conversation(c: SendContext) -> list[Record] | None:
    if lapsed(c.conv.last_ts, c.e.ts, c.gate.horizon_ms):
        c.lapse_note = (
            f"; its conversation with this sender lapsed: the user last wrote at "
            f"{iso(c.conv.last_ts)}, more than conversation_horizon_days = "
            f"{c.policy.conversation_horizon_days} days before"
        )
        c.conv = Conversation()
    return None


def index_lapse(app: str, sender: str, user_id: str, day: int, horizon: int, rows: UnitOfWork) -> None:
    """List a conversation under the day of its last inbound, where the sweep will look."""
    list_by_day(LAPSES_BY_DAY, app, (sender, user_id), day, horizon, rows)


def list_by_day(tables: DayLists, app: str, entry: tuple[str, str], day: int, after_ms: int, rows: UnitOfWork) -> None:
    """Append `entry` to the app's bucket of `day` in `tables`; the first day listed sets when
    the app's clock next sweeps them (`after_ms` past the day's end)."""
    index = rows.get(tables.index, app) or LapseIndex()
    was_empty = not index.days
    chunks = index.chunk_count(day)
    bucket = (rows.get(tables.buckets, app, str(day), str(chunks - 1)) or LapseBucket()) if chunks else None
    if bucket is None or bucket.full:
        chunk, bucket = index.open_chunk(day), LapseBucket()
        rows.put(tables.index, index, app)
    else:
        chunk = chunks - 1
    bucket.add(*entry)
    rows.put(tables.buckets, bucket, app, str(day), str(chunk))
    if was_empty:  # days are listed in clock order: only a first one moves the next sweep
        clock = rows.get(CLOCKS, app) or AppClock()
        setattr(clock, tables.clock_field, index.sweep_at(after_ms))
        rows.put(CLOCKS, clock, app)


def sweep_by_day(
    tables: DayLists, app: str, ts: int, after_ms: int, rows: UnitOfWork, forget: Callable[[str, str], None]
) -> int:
    """Call `forget` on each entry of the app's oldest due bucket in `tables`, then drop the
    bucket; returns when the next sweep is due (0: nothing listed)."""
    index = rows.get(tables.index, app) or LapseIndex()
    if not index.days or ts < index.sweep_at(after_ms):  # (the setting was raised since it was due)
        return index.sweep_at(after_ms)
    day, chunk = index.take_last_chunk()
    bucket = (str(day), str(chunk))
    for first, second in (rows.get(tables.buckets, app, *bucket) or LapseBucket()).entries:
        forget(first, second)
    rows.delete(tables.buckets, app, *bucket)
    if index.days:
        rows.put(tables.index, index, app)
    else:
        rows.delete(tables.index, app)
    return index.sweep_at(after_ms)


def sweep_lapsed(app: str, ts: int, horizon: int, rows: UnitOfWork) -> int:
    """Remove the lapsed conversations of one bucket row; returns when the next sweep is due."""

    def forget(sender: str, user_id: str) -> None:
        conv = rows.get(CONVERSATIONS, app, sender, user_id)
        if conv is not None and lapsed(conv.last_ts, ts, horizon):
            rows.delete(CONVERSATIONS, app, sender, user_id)  # else it wrote again, and is listed under a later day

    return sweep_by_day(LAPSES_BY_DAY, app, ts, horizon, rows, forget)
