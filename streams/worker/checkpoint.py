"""The gate's state in Faust: one table, written a checkpoint at a time, recovered whole checkpoints only.

Why. Without transactions a crash can cut the stream of writes anywhere. If a row reached its
changelog while the decision made with it did not, the restarted worker decides the event again
over state that already holds its effects, and decides differently (a paced send accepted, a
release lost). So the worker keeps three rules:

1. One table (`state`), so every row of an app goes to one changelog partition, in write order.
2. A batch of events is decided over an overlay. Its decisions and its rows are sent together
   and acknowledged; only then is its commit record (`COMMIT` + partition -> offset of the last
   event applied) written, in a second send (`stage`), and the batch acked to Faust. Recovery applies rows only up to
   the last commit record it reads (`StateTable.apply_changelog_batch`): all of a checkpoint or
   none of it, so rows whose decisions may not be out never count.
3. An event at or below its partition's committed offset is skipped: its decisions are out. An
   event above the next expected offset means Faust dropped records (faust-streaming #596):
   `Holes` (streams/worker/holes.py) reads the missing ones from Kafka and decides them first, in order.

Rows written after the last commit record (a crash mid-checkpoint) are orphans. Recovery drops
them, and the first checkpoint of that partition rewrites their keys with the committed values,
so that log compaction can never leave an orphan as a key's last value.

A commit record commits only its own checkpoint's rows, and only while its writer still owns the
partition (`Commit`, `CheckpointLog`). Each checkpoint's rows carry its token in a header, which
its commit record names, so a checkpoint that failed half-way, or another worker's rows landing in
between (a zombie: a worker frozen inside a send while its partition moved), are orphans even when
a later commit record follows them. Each commit record carries its writer's epoch (the group
generation its batch began in, never below the partition's last commit's), and recovery drops a
commit record, and its rows, below the epoch it has already read: a zombie's whole late checkpoint.

After a crash (kill -9) the local store of `state` is kept (`after_unclean_stop`): rows enter it
only once the broker has acknowledged them together with their batch's outputs, each batch in one
RocksDB write batch with its commit record, so it holds whole batches whose decisions are out,
and its persisted changelog offset never runs ahead of its rows (a crash between the two makes
recovery read a few rows again), nor past records another worker wrote before the batch landed
(a zombie's late send, `CheckpointStore._held_to`): recovery then reads those too. The global
tables are written through Faust's own path (the local store first, the changelog later), so
their local stores are removed and read again.

Each partition's junk index is rows of that partition like any other (`j:` + partition + template),
built by the `junk_shared` events of its own log, so it is covered too; the worker keeps it decoded
in memory (`junk_index`) and decodes it again from the rows when a batch or an event fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import faust
from faust.stores.memory import Store as MemoryStore
from faust.tables.globaltable import GlobalTable
from faust.types import TP, EventT

from sendgate.models.gate import (
    CLOCKS,
    CLUSTERS,
    CONTACTS,
    CONVERSATIONS,
    DUE,
    GRANTS,
    JUNK,
    LAPSE_DAYS,
    LAPSES,
    LAST_SENT,
    PENDING,
    PLACES,
    RECIPIENTS,
    SCHEDULES,
    SEEN,
    SEEN_DAYS,
    SEEN_LISTS,
    SENDERS,
    SKETCHES,
    SUBJECTS,
    TEXTS,
    USERKEYS,
    Table,
    key,
)
from sendgate.models.junk import JunkIndex, JunkReport, JunkTemplate
from sendgate.models.policy import Policy
from sendgate.models.pending import ReleaseSchedule

from .faust_internals import (
    flush_recovery_buffers,
    forget_recovery_offset,
    highwater,
    processing,
    raw_reader,
    read_standby_from,
    rewind_standbys,
    rows_with_prefix,
    standby_read_to,
)
from .outbox import Outbox

log = logging.getLogger("sendgate.state")

STATE = "state"  # the table's name: its changelog is <group id>-state-changelog
APPS = "apps"  # the global table of app -> the events partition its log lives on
# A short prefix per row kind keeps the kinds apart in one key space (2 bytes a row).
PREFIX = {
    USERKEYS: b"u:",
    CONVERSATIONS: b"c:",
    GRANTS: b"g:",
    SENDERS: b"s:",
    CLUSTERS: b"b:",
    SKETCHES: b"m:",
    PENDING: b"p:",
    SCHEDULES: b"t:",
    DUE: b"d:",
    CLOCKS: b"k:",
    LAPSE_DAYS: b"x:",
    LAPSES: b"l:",
    RECIPIENTS: b"r:",
    CONTACTS: b"a:",
    SEEN: b"n:",
    SEEN_DAYS: b"y:",
    SEEN_LISTS: b"z:",
    TEXTS: b"w:",
    JUNK: b"j:",
    PLACES: b"o:",
    SUBJECTS: b"v:",
    LAST_SENT: b"q:",
}
KIND = {prefix: table.name for table, prefix in PREFIX.items()}  # a row's kind, by name (rebuild, benches)
HOME = b"h:"  # + app: the events partition the app lives on (also in the global apps table)
COMMITTED_CACHE_ROWS = 100_000  # committed rows kept in memory (`CheckpointStore._committed`): ~20 MB
COMMIT = b"\x00commit\x1f"  # + partition: the offset of the last event whose rows are all written


def commit_key(partition: int) -> bytes:
    return COMMIT + str(partition).encode()


CHECKPOINT_HEADER = "sg-cp"  # a row's header: the token of the checkpoint it belongs to


@dataclass(frozen=True)
class Commit:
    """A commit record's value: the offset of the partition's last event whose rows are written,
    the token its checkpoint's rows carry, and its writer's epoch, as `b"<offset> <token hex>
    <epoch>"`. A bare `b"<offset>"` (written before tokens, by `sendgate rebuild`, or through
    Faust's transaction under exactly_once) commits every row before it."""

    offset: int
    token: bytes | None = None
    epoch: int = 0

    @classmethod
    def from_bytes(cls, raw: bytes) -> Commit:
        parts = raw.split(b" ")
        if len(parts) == 1:
            return cls(int(raw))
        return cls(int(parts[0]), bytes.fromhex(parts[1].decode()), int(parts[2]))

    def to_bytes(self) -> bytes:
        if self.token is None:
            return str(self.offset).encode()
        return b"%d %s %d" % (self.offset, self.token.hex().encode(), self.epoch)


def checkpoint_token(headers: Any) -> bytes | None:
    """The checkpoint token among a changelog record's headers (None: a row written without one)."""
    for name, value in headers or ():
        if name == CHECKPOINT_HEADER:
            return value
    return None


class CheckpointLog:
    """One changelog partition read in order, as recovery applies it.

    Rows are held until the commit record that names their token (`Commit`); rows without a token
    go with the next commit record without one. A token is its writer's id (8 bytes, one per
    process) and a sequence number (8 bytes), so a commit record also orphans the rows of its
    writer's earlier attempts that never committed (a batch that failed half-way). Rows of another
    writer wait for their own commit record, or stay orphans when none comes (a zombie's). A commit
    record below the epoch already read is a zombie's whole checkpoint: it and its rows are orphans.
    `restore.py` and the fault soak's store check read the changelog through this too."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch  # the epoch of the last commit record applied
        self.held: list[tuple[Any, bytes | None]] = []  # (record, its token), in changelog order

    def read(self, record: Any, key: bytes, value: bytes | None, token: bytes | None) -> tuple[list[Any], list[Any]]:
        """Returns (records to apply, in order, the commit record last; orphaned rows)."""
        if not key.startswith(COMMIT) or value is None:
            self.held.append((record, token))
            return [], []
        commit = Commit.from_bytes(value)
        accepted = commit.token is None or commit.epoch >= self.epoch
        mine: list[Any] = []
        orphans: list[Any] = []
        kept: list[tuple[Any, bytes | None]] = []
        ctoken = commit.token
        for held, htoken in self.held:
            if htoken == ctoken:
                mine.append(held)
            elif ctoken is not None and htoken is not None and htoken[:8] == ctoken[:8] and htoken < ctoken:
                orphans.append(held)  # its writer's attempt that failed before its commit record
            else:
                kept.append((held, htoken))
        self.held = kept
        if not accepted:
            return [], orphans + mine
        # one without a token starts over (`sendgate rebuild`): its writers' epochs start from 0 again
        self.epoch = commit.epoch
        return [*mine, record], orphans


@dataclass(frozen=True)
class _Written:
    """A changelog record the broker has acknowledged, as `Store.apply_changelog_batch` reads it
    (an event and its message in one). `offset` is the partition's last offset of the checkpoint:
    the store keeps the highest as its persisted offset, where recovery resumes."""

    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None

    @property
    def message(self) -> "_Written":
        return self


def _same(x: Any) -> Any:
    return x


class StoreUnwritable(Exception):
    """The local store has refused writes for so long that the rows held over it (`Unwritten`)
    reached UNWRITTEN_MAX_ROWS: batches fail until it takes them (and the worker stops after
    SENDGATE_STALL_EXIT_S of failures)."""


class Unwritten:
    """Committed rows the local store refused (a full disk), per partition, held in memory over it
    until it takes them.

    Safe because each of them is durable already: the changelog holds it (the broker acknowledged
    it before the store was written), and the store's persisted offset stays before the first one
    it refused, so a crash, or a recovery at a rebalance, reads them from the changelog again. While
    some are held, every write joins them (the store never gets a later row, nor a later persisted
    offset, before an earlier one), reads see them first (`StateTable.committed`), and the store is
    tried again at most every STORE_RETRY_S with all of them, in one go per partition (the last
    value of each row, and the highest offset)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[bytes, bytes | None]] = {}  # partition -> row -> value (None: deleted)
        self.offsets: dict[TP, int] = {}  # changelog partition -> the offset its rows take the store to
        self.since: float | None = None  # monotonic time the store first refused (None: it takes writes)
        self.retry_at = 0.0
        self.logged_at = 0.0
        self.size = 0  # rows held, all partitions

    def hold(self, records: Iterable[Any]) -> None:
        for event in records:
            message = event.message
            rows = self.rows.setdefault(message.partition, {})
            self.size += message.key not in rows
            rows[message.key] = message.value
            if message.offset > self.offsets.get(message.tp, -1):
                self.offsets[message.tp] = message.offset

    def records(self) -> list[_Written]:
        return [
            _Written(tp, tp.partition, offset, row, value)
            for tp, offset in self.offsets.items()
            for row, value in self.rows.get(tp.partition, {}).items()
        ]

    def drop(self, partition: int) -> None:
        self.size -= len(self.rows.pop(partition, ()))
        self.offsets = {tp: offset for tp, offset in self.offsets.items() if tp.partition != partition}


@dataclass
class _Rewind:
    """A standby copy read again from `held`, the last offset its store holds, after the store took
    writes again. Records Faust fetched before the seek still arrive first: they are past `seen`
    (what recovery had read to) and increasing; the first record that is not ends the rewind."""

    held: int
    seen: int
    last: int = -1
    skipped: int = 0

    def stale(self, offset: int) -> bool:
        if offset > self.seen and offset > self.last:
            self.last = offset
            self.skipped += 1
            return True
        return False


# More records than fetches in flight can hold (a partition's fetch is at most 1 MiB): past that
# many skipped, Faust's consumer dropped the records from the seek on, and the copy seeks again.
REWIND_MAX_SKIPPED = 50_000


UNWRITTEN_MAX_ROWS = 500_000  # rows held over a store that refuses writes (`Unwritten`): ~100-150 MB
STORE_RETRY_S = 1.0  # a store that refused a write is tried again at most this often
STORE_LOG_S = 10.0  # and said so in the log this often
_MISSING = object()


class StateTable(faust.Table):
    """A Faust table that recovers only committed checkpoints (see the module docstring), and
    whose local store may refuse writes for a while without stopping decisions (`Unwritten`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logs: dict[TP, CheckpointLog] = {}  # each changelog partition being read
        self.unwritten = Unwritten()
        # standby partitions whose copy stopped when the store refused a write: their records are read
        # again from the store's persisted offset once it takes writes (`resume_standbys`)
        self.paused_standbys: set[TP] = set()
        self._rewinds: dict[TP, _Rewind] = {}
        self.orphans: dict[int, set[bytes]] = {}  # partition -> keys to rewrite at its next checkpoint
        # the last changelog offset recovery handed over per partition, applied, held or dropped
        # later as an orphan: a checkpoint written right after it follows everything the store knows
        self.read_to: dict[TP, int] = {}

    def _log(self, event: EventT) -> CheckpointLog:
        tp = event.message.tp
        log_ = self._logs.get(tp)
        if log_ is None:  # resumed where the store's last commit record left it: at its epoch
            with processing(event):
                raw = self.committed(commit_key(tp.partition))
            log_ = self._logs[tp] = CheckpointLog(Commit.from_bytes(raw).epoch if raw is not None else 0)
        return log_

    def committed(self, row: bytes) -> bytes | None:
        """A row as the store holds it, or holds it once it takes the rows it refused: in the
        database of the current event's partition (`processing`)."""
        if self.unwritten.size:
            for rows in self.unwritten.rows.values():  # a row's key names its partition's app: in one at most
                value = rows.get(row, _MISSING)
                if value is not _MISSING:
                    return value  # type: ignore[return-value]
        return self._read(row)

    @cached_property
    def _read(self) -> Callable[[bytes], bytes | None]:
        return raw_reader(self)

    def with_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The rows of this worker's active partitions whose key starts with `prefix`, with those
        held over the store (`Unwritten`)."""
        rows = dict(rows_with_prefix(self, prefix))
        for held in self.unwritten.rows.values():
            for row, value in held.items():
                if row.startswith(prefix):
                    if value is None:
                        rows.pop(row, None)
                    else:
                        rows[row] = value
        return iter(rows.items())

    def held_to(self, tp: TP) -> int:
        """The changelog offset the local store holds `tp` up to, with the rows held over it (-1: none)."""
        offset = self.unwritten.offsets.get(tp)
        if offset is None:
            offset = self.data.persisted_offset(tp)
        return -1 if offset is None else offset

    def standbys_behind(self) -> dict[int, int]:
        """Per standby partition of this worker, the changelog records its copy has not read: what a
        failover to this worker reads before deciding. Recovery applies up to `standby_buffer_size`
        read records at once (and the rest at a rebalance); a stopped copy reads none."""
        behind = {}
        for tp in sorted(self.app.assignor.assigned_standbys()):
            if tp.topic != self.changelog_topic.get_topic_name():
                continue
            copied = self.held_to(tp)
            if tp not in self.paused_standbys and tp not in self._rewinds:
                copied = max(copied, standby_read_to(self.app, tp) or -1)
            behind[tp.partition] = max(0, highwater(self.app, tp) - 1 - copied)
        return behind

    def write(self, records: list[Any]) -> None:
        """Write committed changelog records (events, or `_Written`) into the local store, in
        order, with their partitions' persisted offsets; if it refuses them (a full disk), hold
        them over it (`Unwritten`) and go on. Never raises for the store: a fault in Faust's recovery
        loop makes it keep its buffer and hand all of it over again with each record it reads."""
        unwritten = self.unwritten
        if unwritten.since is None:
            try:
                self.data.apply_changelog_batch(records, to_key=_same, to_value=_same)
                return
            except Exception as exc:  # rocksdict raises Exception("IO error: No space left on device: ...")
                unwritten.since = unwritten.logged_at = time.monotonic()
                unwritten.retry_at = unwritten.since + STORE_RETRY_S
                log.error(
                    "the local store refused a write (%s): its rows, committed in the changelog, are held in "
                    "memory over it until it takes them (at most %d rows; past that batches fail), and "
                    "standby copies pause until it does; decisions go on",
                    exc,
                    UNWRITTEN_MAX_ROWS,
                )
        unwritten.hold(records)
        self.retry_unwritten()

    def retry_unwritten(self) -> None:
        """Write the rows held over the store (`Unwritten`) if it refused the last try more than
        STORE_RETRY_S ago; also called every STORE_RETRY_S (a timer): a worker that has no batch
        to write must not keep them in memory once the disk has room."""
        unwritten = self.unwritten
        now = time.monotonic()
        if unwritten.since is None or now < unwritten.retry_at:
            return
        try:
            self.data.apply_changelog_batch(unwritten.records(), to_key=_same, to_value=_same)
        except Exception as exc:
            unwritten.retry_at = now + STORE_RETRY_S
            if now - unwritten.logged_at >= STORE_LOG_S:
                unwritten.logged_at = now
                log.error(
                    "the local store has refused writes for %.0f s (%s): %d row(s) held in memory over it",
                    now - unwritten.since,
                    exc,
                    unwritten.size,
                )
            return
        log.warning(
            "the local store took the %d row(s) held over it after %.1f s of refusals",
            unwritten.size,
            now - unwritten.since,
        )
        self.unwritten = Unwritten()

    async def resume_standbys(self) -> None:
        """Once the store takes writes again, the standby copies it stopped read the records they
        missed from its persisted offset at once, not at the next rebalance: a failover to this
        worker would read all of them before deciding (the 30-minute soak: 331,249 records, 92 s)."""
        if self.unwritten.since is not None or not self.paused_standbys:
            return
        flush_recovery_buffers(self.app)  # what recovery took of them while stopped goes, unapplied
        seeks = {}
        for tp in sorted(self.paused_standbys):
            held, seen = self.held_to(tp), standby_read_to(self.app, tp)
            if seen is not None and seen > held:  # else it missed nothing
                self._rewinds[tp] = _Rewind(held, seen)
                seeks[tp] = held
                log.warning("%s: the standby copy reads again past offset %d (the local store takes writes)", tp, held)
        paused, self.paused_standbys = self.paused_standbys, set()
        try:
            await rewind_standbys(self.app, seeks)
        except Exception as exc:  # the consumer's seek timed out: the next rebalance reads them (`on_rebalance`)
            log.warning(
                "standby copies stay stopped until the next rebalance: seeking their changelogs failed (%r)", exc
            )
            for tp in seeks:
                del self._rewinds[tp]
            self.paused_standbys |= paused

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        ready: list[EventT] = []
        read_to, paused, rewinds = self.read_to, self.paused_standbys, self._rewinds
        for event in batch:
            message = event.message
            if message.tp in paused:
                continue
            if rewinds and message.tp in rewinds:
                rewind = rewinds[message.tp]
                if rewind.stale(message.offset):  # fetched before the seek: taken again after it
                    if rewind.skipped > REWIND_MAX_SKIPPED:
                        del rewinds[message.tp]
                        paused.add(message.tp)  # `resume_standbys` seeks again
                    else:
                        read_standby_from(self.app, message.tp, rewind.held)
                    continue
                del rewinds[message.tp]
            if message.offset > read_to.get(message.tp, -1):
                read_to[message.tp] = message.offset
            applied, orphans = self._log(event).read(
                event, message.key, message.value, checkpoint_token(getattr(message, "headers", None))
            )
            ready += applied
            if orphans:
                self._orphan(message.tp, orphans, "another checkpoint's (a zombie's, or an attempt that failed)")
        if ready and self.unwritten.since is not None:
            ready = self._pause_standbys(ready)
        if ready:
            self.write(ready)

    def _pause_standbys(self, ready: list[EventT]) -> list[EventT]:
        """While the store refuses writes, a standby copy is not held in memory (it would hold the
        other worker's whole write rate): it stops, and the store's persisted offset stays where it
        was, so that its records are read again from there (`resume_standbys`, or a rebalance)."""
        standbys = self.app.assignor.assigned_standbys()
        kept = []
        for event in ready:
            tp = event.message.tp
            if tp not in standbys:
                kept.append(event)
            elif tp not in self.paused_standbys:
                self.paused_standbys.add(tp)
                self._logs.pop(tp, None)  # read again from the store's last commit record
                log.warning(
                    "%s: the standby copy stops while the local store refuses writes; "
                    "its records are read again from offset %d then",
                    tp,
                    self.held_to(tp),
                )
        return kept

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        # Rows held for partitions this worker no longer decides are the new owner's to write; the
        # store's persisted offset is before them, so if a partition comes back its recovery reads
        # them again (with whatever was written since). Those kept are those of its own checkpoints,
        # which the recovery now reads again too (the store's offset is before them), in order.
        actives = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.changelog_topic.get_topic_name()
        }
        for partition in [p for p in self.unwritten.rows if p not in actives]:
            self.unwritten.drop(partition)
        for tp in self.paused_standbys | self._rewinds.keys():
            forget_recovery_offset(self.app, tp)  # read again from the store's persisted offset
        self.paused_standbys.clear()
        self._rewinds.clear()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def _orphan(self, tp: TP, records: list[EventT], whose: str) -> None:
        keys = {e.message.key for e in records}
        self.orphans.setdefault(tp.partition, set()).update(keys)
        log.warning(
            "%s: dropped %d changelog record(s) no commit record of theirs commits (%s); %d key(s) are "
            "rewritten at the next checkpoint",
            tp,
            len(records),
            whose,
            len(keys),
        )

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        for tp in active_tps:
            log_ = self._logs.pop(tp, None)
            if log_ is not None and log_.held:
                self._orphan(tp, [e for e, _ in log_.held], "after the last commit record: an unfinished checkpoint")
        await super().on_recovery_completed(active_tps, standby_tps)


class GlobalIndexTable(GlobalTable):
    """A global table (the app directory): one changelog partition, written to 0.

    Faust's `use_partitioner=True` would pick the partition from producer metadata that may not
    list the changelog yet (TypeError on the first write), and the default writes to the
    partition of the current event, which a one-partition changelog does not have.
    """

    def partition_for_key(self, key: Any) -> int:
        return 0


class CheckpointStore:
    """The gate's `Store` over the state table: reads see the batch's own writes; `checkpoint`
    writes them after the batch's outputs are acknowledged."""

    def __init__(self, table: StateTable, apps_table: Any) -> None:
        self.table = table
        self._junk: dict[int, JunkIndex] = {}  # partition -> its junk index, decoded from its `j:` rows
        self._junk_changed: set[int] = set()  # partitions whose index the batch changed
        # app -> the events partition its log lives on (the first one it was seen on), from the
        # global apps table: ticks and web requests go there, and a record of the app on another
        # partition is refused. Never recomputed from the key: producers' partitioners differ.
        self.apps_table = apps_table
        self.homes: dict[str, int] = {}
        self._new_homes: dict[str, int] = {}  # claimed in this batch, written at its checkpoint
        self._batch: dict[int, dict[bytes, bytes | None]] = {}  # partition -> row key -> value (None: delete)
        self._event_rows: dict[bytes, bytes | None] = {}
        self._last: dict[int, EventT] = {}  # partition -> its last event in the batch
        self._handled: dict[int, int] = {}
        self._partition = -1
        self._written: dict[int, dict[bytes, bytes | None]] = {}
        self.due: dict[bytes, int] = {}  # app -> earliest deliver_at: what the ticker looks at
        self.held: dict[bytes, int] = {}  # app -> its pending requests (for the metrics)
        self._staged: list[tuple[int, dict[bytes, bytes | None], bytes]] = []  # partition, rows, commit record
        self._unsent_commits: dict[int, bytes] = {}  # partition -> its commit record, written locally only
        self._behind: set[int] = set()  # partitions whose store missed another writer's records (logged once)
        self._writer = os.urandom(8)  # the first half of this process's checkpoint tokens (`CheckpointLog`)
        self._checkpoint_seq = 0
        self.foreign: dict[int, tuple[int, int]] = {}  # partition -> [start, end) of another writer's records
        self._foreign_seen: dict[int, int] = {}  # partition -> the changelog offset looked at up to
        # Committed rows as the local store holds them, the most recent first to stay: an app's
        # clock, schedule and sender heads are read by every event, and a RocksDB read through
        # rocksdict costs more than the dict. Written rows update it (`_remember`); a rebalance clears it.
        self._cache: dict[bytes, bytes | None] = {}
        table.on_recover(self._on_recover)

    def _committed(self, row: bytes) -> bytes | None:
        cache = self._cache
        if row in cache:
            return cache[row]
        value = cache[row] = self.table.committed(row)
        if len(cache) > COMMITTED_CACHE_ROWS:
            del cache[next(iter(cache))]  # the oldest read or written
        return value

    def _remember(self, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Rows just written to the local store: what the cache answers from now on."""
        cache = self._cache
        for row, value in rows:
            cache.pop(row, None)  # re-inserted last: the oldest go first
            cache[row] = value
        while len(cache) > COMMITTED_CACHE_ROWS:
            del cache[next(iter(cache))]

    # --- the Store interface (models.gate) --------------------------------------------------
    def get(self, table: Table, key: bytes) -> bytes | None:
        row = PREFIX[table] + key
        if row in self._event_rows:
            return self._event_rows[row]
        batch = self._batch.get(self._partition)
        if batch is not None and row in batch:
            return batch[row]
        return self._committed(row)

    def set(self, table: Table, key: bytes, value: bytes) -> None:
        self._event_rows[PREFIX[table] + key] = value

    def delete(self, table: Table, key: bytes) -> None:
        self._event_rows[PREFIX[table] + key] = None

    @property
    def junk(self) -> JunkIndex:
        return self.junk_index(self._partition)

    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        partition = self._partition
        changed = self.junk.apply(
            report, policy.similarity_threshold, policy.junk_reject_reporters, policy.max_junk_templates
        )
        self._junk_changed.add(partition)
        for template_id, template in changed.items():
            row = key(str(partition), template_id)
            if template is None:
                self.delete(JUNK, row)
            else:
                self.set(JUNK, row, template.to_bytes())

    def junk_of(self, app: str) -> JunkIndex:
        """The junk index a send of `app` is matched against: its home partition's. For an app no
        worker has seen, the partition this worker decided last (every partition's index holds the
        same reports, each from its own point in its log on)."""
        home = self.home_of(app)
        return self.junk_index(home if home is not None else max(self._partition, 0))

    def junk_index(self, partition: int) -> JunkIndex:
        """The junk index of `partition` as its rows hold it (with the batch's own writes)."""
        index = self._junk.get(partition)
        if index is None:
            index = self._junk[partition] = JunkIndex()
            prefix = PREFIX[JUNK] + key(str(partition), "")
            rows = dict(self.table.with_prefix(prefix))
            rows.update((row, value) for row, value in self._batch.get(partition, {}).items() if row.startswith(prefix))
            if partition == self._partition:
                rows.update((row, value) for row, value in self._event_rows.items() if row.startswith(prefix))
            for row, value in rows.items():
                if value is not None:
                    index.put(row[len(prefix) :].decode(), JunkTemplate.from_bytes(value))
        return index

    def read(self, table: Table, key: bytes) -> bytes | None:
        """A committed row (for the inspection views)."""
        return self._committed(PREFIX[table] + key)

    # --- where apps live -------------------------------------------------------------------
    def home(self, app: str, partition: int) -> int:
        """The partition `app`'s log lives on; an app seen for the first time lives on `partition`."""
        home = self.home_of(app)
        if home is None:
            home = self.homes[app] = self._new_homes[app] = partition
        return home

    def home_of(self, app: str) -> int | None:
        """The partition `app`'s log lives on, or None for an app no worker has seen."""
        home = self.homes.get(app)
        if home is None:
            raw = self.apps_table.get(app.encode())
            if raw is None:
                raw = self._committed(HOME + app.encode())  # written with the app's first checkpoint
            if raw is not None:
                home = self.homes[app] = int(raw)
        return home

    # --- one event at a time ----------------------------------------------------------------
    def handled(self, partition: int) -> int:
        """The offset of the last event of `partition` handled: committed, or in this batch (-1: none)."""
        if partition not in self._handled:
            raw = self._committed(commit_key(partition))
            self._handled[partition] = Commit.from_bytes(raw).offset if raw is not None else -1
        return self._handled[partition]

    @contextmanager
    def handling(self, event: EventT) -> Iterator[None]:
        """Handle one event: its writes join the batch if the block ends normally; if it raises,
        none of them count (the event is dead-lettered, and changed nothing)."""
        self._partition = event.message.partition
        self._last[self._partition] = event
        self._handled[self._partition] = event.message.offset
        self._event_rows.clear()
        try:
            with processing(event):
                yield
        except BaseException:
            self._event_rows.clear()
            if self._partition in self._junk_changed:  # its index may hold the event's changes
                self._junk.pop(self._partition, None)
            raise
        self._batch.setdefault(self._partition, {}).update(self._event_rows)

    def abort(self) -> None:
        """Drop the batch: its rows, and the offsets it handled (the committed ones are read again)."""
        self._batch.clear()
        self._event_rows.clear()
        self._staged = []
        for partition in self._junk_changed:  # decoded again from the committed rows when next used
            self._junk.pop(partition, None)
        self._junk_changed.clear()
        self._last.clear()
        self._handled.clear()
        for app in self._new_homes:
            self.homes.pop(app, None)
        self._new_homes.clear()

    async def checkpoint(self) -> None:
        """Under exactly_once: write the batch's rows and commit records through the table, into
        Faust's transaction (the transaction makes outputs and rows one)."""
        for partition, event, rows in self._checkpoints():
            with processing(event):  # each row to the changelog partition of its app's events
                for row, value in rows.items():
                    if value is not None:
                        self.table[row] = value
                    elif row in self.table:
                        del self.table[row]
                    else:
                        self.table.send_changelog(partition, row, None)
                self._remember(rows.items())
        self._written_locally()

    # --- at_least_once: rows with the outputs, then the commit records ---------------------------------------------------
    def stage(self, outbox: Outbox, epoch: int) -> None:
        """Add to `outbox` the commit records still unsent (`written`), then the batch's rows; the
        outbox also holds the batch's outputs. `epoch`: the group generation the batch began in.

        `GateWorker.process_batch` calls stage, send, written twice: the first send carries the
        outputs and rows, the second the commit records. The rows may travel with the outputs
        because recovery applies rows only up to a commit record: until the batch's commit record
        is in the changelog, a crash leaves them orphans, dropped and rewritten, and the batch is
        decided again over the state before it. A commit record whose send failed stays unsent
        and goes first in the batch's next attempt, also after a rebalance that kept the partition. Each partition's rows carry a new checkpoint
        token, which its commit record names with the writer's epoch (`CheckpointLog`): never
        below the partition's last commit record's, so that a generation the broker numbered
        afresh (a group deleted and created again) cannot fence the partition's new owner.
        """
        unwritten = self.table.unwritten
        if unwritten.size >= UNWRITTEN_MAX_ROWS:
            self.table.retry_unwritten()
            unwritten = self.table.unwritten
            if unwritten.size >= UNWRITTEN_MAX_ROWS:
                raise StoreUnwritable(
                    f"the local store has refused writes for {time.monotonic() - (unwritten.since or 0):.0f} s and "
                    f"{unwritten.size} rows are held in memory over it (UNWRITTEN_MAX_ROWS): no batch is decided "
                    f"until it takes them"
                )
        changelog = self.table.changelog_topic.get_topic_name()
        for partition, value in self._unsent_commits.items():
            outbox.add(changelog, commit_key(partition), value, partition)
        self._staged = []
        for partition, event, rows in self._checkpoints():
            offset = Commit.from_bytes(rows.pop(commit_key(partition))).offset
            with processing(event):
                last = self._committed(commit_key(partition))
            self._checkpoint_seq += 1
            token = self._writer + self._checkpoint_seq.to_bytes(8, "big")
            commit = Commit(offset, token, max(epoch, Commit.from_bytes(last).epoch if last is not None else 0))
            self._staged.append((partition, rows, commit.to_bytes()))
            headers = [(CHECKPOINT_HEADER, token)]
            for row, value in rows.items():
                outbox.add(changelog, row, value, partition, headers=headers)

    def written(self, last: dict[tuple[str, int], int]) -> None:
        """The outbox of `stage` is acknowledged (`last`: its last offset per topic partition):
        the rows reach the local store in one write batch with their commit records, whose copies
        in the changelog wait for the next `stage`: only once the store holds the rows, so that a
        commit record never commits rows the store lacks (a batch that fails before, e.g. its send,
        is decided again, and the rows sent are orphans no commit record names). A store that
        refuses them (a full disk) holds them in memory over it (`StateTable.write`, `Unwritten`):
        the batch succeeds, and reads see its rows."""
        changelog = self.table.changelog_topic.get_topic_name()
        sent, self._unsent_commits = self._unsent_commits, {}
        unsent: dict[int, bytes] = {}
        rows_of = {partition: rows for partition, rows, _ in self._staged}
        upto = {
            p: self._held_to(p, last.get((changelog, p)), (p in sent) + len(rows_of.get(p, ())))
            for p in sent.keys() | rows_of.keys()
        }
        local = [
            _Written(TP(changelog, p), p, upto[p], commit_key(p), value)
            for p, value in sent.items()
            if (changelog, p) in last
        ]
        for partition, rows, commit in self._staged:
            offset = upto[partition]
            local += [_Written(TP(changelog, partition), partition, offset, row, value) for row, value in rows.items()]
            local.append(_Written(TP(changelog, partition), partition, offset, commit_key(partition), commit))
            unsent[partition] = commit
        self._staged = []
        if local:  # the local store, and its persisted changelog offsets
            self.table.write(local)
            self._remember((w.key, w.value) for w in local)
        self._unsent_commits = unsent
        self._written_locally()

    def keep_unsent_commits(self, partitions: set[int]) -> None:
        """After a rebalance: the commit records of partitions that moved to another worker are its
        to write (it decides their last batch again). A kept one still commits its rows, which the
        local store holds, even after the partition moved and came back: recovery then drops it,
        below the epoch of the other worker's commit records (`CheckpointLog`)."""
        self._unsent_commits = {p: v for p, v in self._unsent_commits.items() if p in partitions}

    def _held_to(self, partition: int, last: int | None, records: int) -> int:
        """The offset the local store holds `partition`'s changelog up to once this send's
        `records` (acknowledged, the last at `last`) are written into it: `last` when they follow
        right after what the store already holds or recovery read, else where it was.

        Records in between were written by another worker: the partition moved while this one
        was frozen in the middle of a batch (a zombie, docs/guarantees.md), and its send landed
        after the new owner's records. Recording `last` would make the next recovery start past
        rows the store never got (the fault soak: a standby copy missing the new owner's rows,
        decided from once it owned the partition again). Kept where it was, the next recovery
        reads them all, these rows again among them, in the changelog's order."""
        persisted = self.table.held_to(TP(self.table.changelog_topic.get_topic_name(), partition))
        if last is None:  # nothing of this partition was sent: only its commit record waits
            return persisted
        if isinstance(self.table.data, MemoryStore):  # memory://: no persisted offsets, nothing to hold
            return last
        known = max(persisted, self.table.read_to.get(TP(self.table.changelog_topic.get_topic_name(), partition), -1))
        if last - records == known:
            return last
        start = max(known, self._foreign_seen.get(partition, -1)) + 1
        if start <= last - records:  # to read (`foreign_rows`): their keys are rewritten with this worker's
            self.foreign[partition] = (start, last - records + 1)
        self._foreign_seen[partition] = last
        if partition not in self._behind:
            self._behind.add(partition)
            log.warning(
                "changelog partition %d holds %d record(s) its local store did not get before this worker's "
                "batch at offset %d (another worker's, or a failed send's): the store keeps offset %d, and the "
                "next recovery reads from there",
                partition,
                last - records - known,
                last,
                persisted,
            )
        return persisted

    def rewrite(self, partition: int, records: Iterable[tuple[bytes, Any]]) -> int:
        """Another writer's changelog records in `partition` (a zombie's late send, `foreign`): the
        keys of those not written by this process are rewritten with this worker's committed values
        at the partition's next checkpoint, so that compaction cannot keep a zombie's row as a key's
        last value. Returns how many keys."""
        keys = {key for key, headers in records if (checkpoint_token(headers) or b"")[:8] != self._writer}
        keys = {key for key in keys if not key.startswith(COMMIT)}
        self.table.orphans.setdefault(partition, set()).update(keys)
        return len(keys)

    def _written_locally(self) -> None:
        # Written: only now may the batch's schedules reach the ticker and its orphans be forgotten.
        for partition, rows in self._written.items():
            self.table.orphans.pop(partition, None)
            for row, value in rows.items():
                if row.startswith(PREFIX[SCHEDULES]):
                    self._index_schedule(row[len(PREFIX[SCHEDULES]) :], value)
        self._written = {}
        self._junk_changed.clear()
        self._write_homes()

    def _checkpoints(self) -> Iterator[tuple[int, EventT, dict[bytes, bytes | None]]]:
        """Each partition of the batch: its last event and its rows (with the home of an app seen
        for the first time), the commit record last."""
        self._written = {}
        for partition, event in self._last.items():
            rows = self._batch.pop(partition, {})
            with processing(event):
                for row in self.table.orphans.get(partition, ()):
                    if row not in rows and not row.startswith(COMMIT):
                        rows[row] = self._committed(row)  # the committed value (None: a tombstone)
            for app, home in self._new_homes.items():
                if home == partition:  # in the checkpoint: a crash cannot keep the rows and lose the home
                    rows[HOME + app.encode()] = str(home).encode()
            rows[commit_key(partition)] = str(event.message.offset).encode()
            self._written[partition] = rows
            yield partition, event, rows

    def _write_homes(self) -> None:
        event = next(iter(self._last.values()), None)
        self._last.clear()
        if self._new_homes and event is not None:
            with processing(event):  # a global table: any partition's context will do
                for app, partition in self._new_homes.items():
                    try:
                        self.apps_table[app.encode()] = str(partition).encode()
                    except Exception as exc:  # Faust sends the changelog record first; the `h:` row has it too
                        log.warning(
                            "the apps table's local store refused %r's home (%s); its changelog has it", app, exc
                        )
        self._new_homes.clear()

    # --- after a rebalance ------------------------------------------------------------------
    async def _on_recover(self) -> None:
        # Partitions may have moved: forget what this worker knew of them, read the table again.
        self._handled.clear()
        self._cache.clear()
        self._junk.clear()
        self._behind.clear()
        self.foreign.clear()
        self._foreign_seen.clear()
        self.due, self.held = {}, {}
        # once per rebalance, the schedule rows only; the ticker then reads `due` only
        for row, value in list(self.table.with_prefix(PREFIX[SCHEDULES])):
            self._index_schedule(row[len(PREFIX[SCHEDULES]) :], value)

    def _index_schedule(self, app: bytes, raw: bytes | None) -> None:
        schedule = ReleaseSchedule.from_bytes(raw)
        if schedule.next_due is None:
            self.due.pop(app, None)
        else:
            self.due[app] = schedule.next_due
        if schedule.held:
            self.held[app] = schedule.held
        else:
            self.held.pop(app, None)


def after_unclean_stop(store_dir: Path, keep_state: bool) -> list[str]:
    """Make a worker's local stores safe to start on after it was killed: keep the `state`
    table's (see the module docstring) when `keep_state` (at_least_once; under exactly_once the
    table is written through Faust's transaction, local store first), remove the rest. Returns
    the names removed."""
    removed = []
    for path in sorted(Path(store_dir).glob("v*/tables/*")):
        if keep_state and path.name.startswith(f"{STATE}-") and path.suffix == ".db":
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
