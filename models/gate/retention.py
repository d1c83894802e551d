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
from .tables import CLOCKS, CONVERSATIONS, LAPSES_BY_DAY, DayLists, Store, key


def lapsed_conversation(c: SendContext) -> list[Record] | None:
    if lapsed(c.conv.last_ts, c.e.ts, c.gate.horizon_ms):
        c.lapse_note = (
            f"; its conversation with this sender lapsed: the user last wrote at "
            f"{iso(c.conv.last_ts)}, more than conversation_horizon_days = "
            f"{c.policy.conversation_horizon_days} days before"
        )
        c.conv = Conversation()
    return None


def index_lapse(app: str, sender: str, user_id: str, day: int, horizon: int, store: Store) -> None:
    """List a conversation under the day of its last inbound, where the sweep will look."""
    list_by_day(LAPSES_BY_DAY, app, (sender, user_id), day, horizon, store)


def list_by_day(tables: DayLists, app: str, entry: tuple[str, str], day: int, after_ms: int, store: Store) -> None:
    """Append `entry` to the app's bucket of `day` in `tables`; the first day listed sets when
    the app's clock next sweeps them (`after_ms` past the day's end)."""
    index = LapseIndex.from_bytes(store.get(tables.index, key(app)))
    was_empty = not index.days
    chunks = index.chunk_count(day)
    bucket = LapseBucket.from_bytes(store.get(tables.buckets, key(app, str(day), str(chunks - 1)))) if chunks else None
    if bucket is None or bucket.full:
        chunk, bucket = index.open_chunk(day), LapseBucket()
        store.set(tables.index, key(app), index.to_bytes())
    else:
        chunk = chunks - 1
    bucket.add(*entry)
    store.set(tables.buckets, key(app, str(day), str(chunk)), bucket.to_bytes())
    if was_empty:  # days are listed in clock order: only a first one moves the next sweep
        clock = AppClock.from_bytes(store.get(CLOCKS, key(app)))
        setattr(clock, tables.clock_field, index.sweep_at(after_ms))
        store.set(CLOCKS, key(app), clock.to_bytes())


def sweep_by_day(
    tables: DayLists, app: str, ts: int, after_ms: int, store: Store, forget: Callable[[str, str], None]
) -> int:
    """Call `forget` on each entry of the app's oldest due bucket in `tables`, then drop the
    bucket; returns when the next sweep is due (0: nothing listed)."""
    index = LapseIndex.from_bytes(store.get(tables.index, key(app)))
    if not index.days or ts < index.sweep_at(after_ms):  # (the setting was raised since it was due)
        return index.sweep_at(after_ms)
    day, chunk = index.take_last_chunk()
    bucket_key = key(app, str(day), str(chunk))
    for first, second in LapseBucket.from_bytes(store.get(tables.buckets, bucket_key)).entries:
        forget(first, second)
    store.delete(tables.buckets, bucket_key)
    if index.days:
        store.set(tables.index, key(app), index.to_bytes())
    else:
        store.delete(tables.index, key(app))
    return index.sweep_at(after_ms)


def sweep_lapsed(app: str, ts: int, horizon: int, store: Store) -> int:
    """Remove the lapsed conversations of one bucket row; returns when the next sweep is due."""

    def forget(sender: str, user_id: str) -> None:
        conv_key = key(app, sender, user_id)
        raw = store.get(CONVERSATIONS, conv_key)
        if raw is not None and lapsed(Conversation.from_bytes(raw).last_ts, ts, horizon):
            store.delete(CONVERSATIONS, conv_key)  # else it wrote again, and is listed under a later day

    return sweep_by_day(LAPSES_BY_DAY, app, ts, horizon, store, forget)
