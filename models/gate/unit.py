"""One event's unit of work: the rows it reads, each decoded once, and the rows it changes, each
written once, when the event is decided.

`Gate.handle` makes one per event over its `Store` and commits it when the event is decided; an
event that fails commits nothing, so no half of a transition is ever stored. A what-if check
decides over an `OverlayStore` the same way (`Gate.check`).

Rows stay decoded across events (`Decoded`), the ones an event read as well as the ones it wrote:
an app's clock, schedule and day lists are read by nearly every event of the app, and decoding a
row costs more than reading it. A kept row is used only while the store still holds the bytes it
was decoded from (the store is read once per row and event, so a batch the worker aborted, or
rows another writer restored, are decoded again), and an event changes a row only to `put` or
`delete` it (tests/unit/test_unit_of_work.py checks that over the identity bench's logs); an
event that fails forgets the rows it read.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable, Hashable, TypeVar

from ..burst import SenderState
from .tables import CLUSTERS, SENDERS, SKETCHES, Store, Table

R = TypeVar("R")

DECODED_ROWS = 4096  # rows kept decoded across events (`Decoded`): each app's clock, schedule, day lists...
# Sender states kept decoded, by their bytes (`SenderState.nbytes`), not their count: a state is
# 1-300 KB (mostly its clusters' sketches), and the bench log's 285 states (235 senders, 50 app-wide)
# take 34 MB; kept by count (256), the least recent were decoded from their rows again and again.
DECODED_SENDER_BYTES = 64 * 1024 * 1024
_UNREAD = object()  # a slot the event has not read (its rows hold None for a row it deleted)


class Held:
    """Objects kept decoded across events, each with the row it was read or written as: one is used
    only while the stored row is still those bytes. At most `most` of them by `weigh` (1 each
    without it), the least recently kept going first. A sender state is taken out while an event
    uses it (`take`), so an event that fails half-way (its rows never written) leaves nothing stale
    behind. Rows are kept by `UnitOfWork` inline (one each, every row read); such an event forgets
    the rows it read (`UnitOfWork.forget`)."""

    def __init__(self, most: int, weigh: Callable[[Any], int] | None = None) -> None:
        self.most = most
        self.weigh = weigh
        self.held: dict[Hashable, tuple[bytes, Any]] = {}  # slot -> (row, its object)
        self.weights: dict[Hashable, int] = {}  # slot -> its weight when it was kept (with `weigh`)
        self.total = 0  # ... their sum

    def take(self, slot: Hashable, raw: bytes | None) -> Any:
        """The object held for `slot` if its stored row is still `raw`, else None; no longer held."""
        hit = self.held.pop(slot, None)
        if hit is None:
            return None
        self.total -= self.weights.pop(slot, 1)
        return hit[1] if raw is not None and hit[0] == raw else None

    def keep(self, slot: Hashable, raw: bytes, row: Any) -> None:
        held, weights = self.held, self.weights
        if held.pop(slot, None) is not None:  # (kept twice in one event)
            self.total -= weights.pop(slot, 1)
        held[slot] = (raw, row)
        weight = 1
        if self.weigh is not None:
            weights[slot] = weight = self.weigh(row)
        self.total += weight
        while self.total > self.most and len(held) > 1:
            first = next(iter(held))  # the least recently kept
            del held[first]
            self.total -= weights.pop(first, 1)


class Decoded:
    """What the events over one store keep decoded for the next: the rows they read or wrote, and
    sender states (a head row and up to 32 clusters and their sketches; the head's stamp vouches
    for the cluster rows). A what-if check keeps its own (`Gate.check`)."""

    def __init__(self, num_perm: int) -> None:
        self.num_perm = num_perm  # a sender state's sketch length
        self.rows = Held(DECODED_ROWS)
        self.senders = Held(DECODED_SENDER_BYTES, weigh=attrgetter("nbytes"))


class UnitOfWork:
    """The rows of one event over `store`: `get` decodes a row once (or takes it from `decoded`)
    and hands out the same object after; `put` and `delete` say what changed, and `commit` writes
    each changed row once, in the order of its first change."""

    __slots__ = ("store", "decoded", "_read", "_held", "_rows", "_changed")

    def __init__(self, store: Store, decoded: Decoded) -> None:
        self.store = store
        self.decoded = decoded
        self._read = store.get  # (bound once an event: every row read goes through them)
        self._held = decoded.rows.held
        self._rows: dict[tuple[Table, bytes], Any] = {}  # (table, key) -> the row as the event has it (None: none)
        self._changed: dict[tuple[Table, bytes], Any] = {}  # ... those to write, in the order of their first change

    def get(self, table: Table[R], *parts: str) -> R | None:
        """The row, decoded (once per event, and kept for the next events); None if there is none."""
        row_key = "\x1f".join(parts).encode()  # (`key`, inline: every row read)
        slot = (table, row_key)
        rows = self._rows
        row = rows.get(slot, _UNREAD)
        if row is not _UNREAD:
            return row
        raw = self._read(table, row_key)
        if raw is None:
            # (not kept: the store changes only at `commit`; an object held for the slot stays,
            # used only if its row comes back)
            return None
        held = self._held
        hit = held.get(slot)
        if hit is not None and hit[0] == raw:
            row = rows[slot] = hit[1]
            return row
        row = rows[slot] = table.decode(raw)
        if table.encode is not None:  # (a Raw row is its bytes: nothing to keep)
            held[slot] = (raw, row)  # (`Held.keep`, inline)
            if len(held) > DECODED_ROWS:
                del held[next(iter(held))]  # the first kept
        return row

    def put(self, table: Table[R], row: R, *parts: str) -> None:
        """`row` changed (it is written as it is at `commit`)."""
        slot = (table, "\x1f".join(parts).encode())
        self._rows[slot] = self._changed[slot] = row

    def delete(self, table: Table, *parts: str) -> None:
        slot = (table, "\x1f".join(parts).encode())
        self._rows[slot] = self._changed[slot] = None

    def sender(self, app: str, sender: str) -> SenderState:
        """The sender's state, decoded: kept from an earlier event if its rows are as it wrote them."""
        head = self.get(SENDERS, app, sender)
        state = self.decoded.senders.take((app, sender), head)
        if state is not None:
            return state
        return SenderState.from_rows(
            head,
            lambda cid: self.get(CLUSTERS, app, sender, cid),
            lambda cid: self.get(SKETCHES, app, sender, cid),
            self.decoded.num_perm,
        )

    def put_sender(self, app: str, sender: str, state: SenderState) -> None:
        head, clusters, sketches = state.to_rows()
        for table, rows in ((CLUSTERS, clusters), (SKETCHES, sketches)):
            for cid, raw in rows.items():
                if raw is None:
                    self.delete(table, app, sender, cid)
                else:
                    self.put(table, raw, app, sender, cid)
        self.put(SENDERS, head, app, sender)
        self.decoded.senders.keep((app, sender), head, state)

    def commit(self) -> None:
        """Write each changed row once, encoded as it is now, and keep it decoded for the next events
        (rows kept as bytes need no decoding)."""
        changed = self._changed
        if not changed:
            return
        store, held = self.store, self._held
        for slot, row in changed.items():
            table, row_key = slot
            if row is None:
                store.delete(table, row_key)
                held.pop(slot, None)  # (read, perhaps changed, then deleted)
                continue
            encode = table.encode
            if encode is None:  # (Raw)
                store.set(table, row_key, row)
                continue
            raw = encode(row)
            store.set(table, row_key, raw)
            held[slot] = (raw, row)  # (`Held.keep`, inline)
            if len(held) > DECODED_ROWS:
                del held[next(iter(held))]  # the first kept

    def forget(self) -> None:
        """The event failed: the rows it read may be half-changed, so none of them is kept decoded."""
        held = self._held
        for slot in self._rows:
            held.pop(slot, None)
