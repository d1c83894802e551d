"""checkpoint.py: row keys and commit records, the checkpoint store's overlay (an event's writes, its
batch's, the committed rows), the checkpoint protocol under at_least_once (rows with the outputs,
commit records in the next send), recovery of whole checkpoints only, the schedule index the
ticker reads, and `after_unclean_stop`.

The state table is a real `StateTable` of a Faust app that is never started, on the memory store:
no broker. The protocol against a broker and kill -9: tests/integration/test_kafka_faults.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import faust
import pytest
from faust.types import TP

from conftest import APP, MINUTE, PARCEL, T, established, event, recipients, send
from sendgate.models.decisions import Decision
from sendgate.models.events import validate
from sendgate.models.gate import CLUSTERS, JUNK, SCHEDULES, SENDERS, TABLES, USERKEYS, Gate, MemoryStore, key
from sendgate.models.pending import ReleaseSchedule
from sendgate.models.policy import Policy
from sendgate.streams.worker.holes import LoggedEvent, LoggedMessage
from sendgate.streams.worker.faust_internals import processing
from sendgate.streams.worker.outbox import Outbox
from sendgate.streams.worker import checkpoint
from sendgate.streams.worker.checkpoint import (
    CHECKPOINT_HEADER,
    COMMIT,
    HOME,
    CheckpointLog,
    Commit,
    KIND,
    PREFIX,
    STATE,
    CheckpointStore,
    StateTable,
    StoreUnwritable,
    _Written,
    after_unclean_stop,
    checkpoint_token,
    commit_key,
)

_apps = itertools.count()


class Worker:
    """A CheckpointStore over a real StateTable (memory store) and a dict as the apps table."""

    def __init__(self) -> None:
        self.faust = faust.App(
            f"unit-state-{next(_apps)}",
            broker="kafka://127.0.0.1:1",
            store="memory://",
            autodiscover=False,
            web_enabled=False,
        )  # never started: no broker needed
        self.table = self.faust.tables.add(
            StateTable(self.faust, name=STATE, default=None, partitions=4, key_type=bytes, value_type=bytes)
        )
        self.apps: dict[bytes, bytes] = {}
        self.store = CheckpointStore(self.table, self.apps)
        self.changelog = self.table.changelog_topic.get_topic_name()
        self.offsets = itertools.count(100)  # the changelog's next offsets, across its partitions
        self.commits: dict[int, Commit] = {}  # partition -> its last commit record staged
        self.tokens: dict[bytes, bytes | None] = {}  # row key -> the token it was last staged with

    @property
    def rows(self) -> dict[bytes, bytes]:
        """The local store: what the table holds once written (a commit record: its offset)."""
        return {
            k: str(Commit.from_bytes(v).offset).encode() if k.startswith(COMMIT) else v
            for k, v in self.table.data.data.items()
        }

    def stage(self, epoch: int = 1) -> list[tuple[bytes, bytes | None, int]]:
        """(key, value, partition) of what `stage` puts in the outbox for the changelog, in order;
        a commit record's value is its offset (its token and epoch are in `self.commits`, each row's
        token in `self.tokens`)."""
        outbox = Outbox()
        self.store.stage(outbox, epoch)
        records = outbox._records.pop(self.changelog, [])
        assert not outbox._records, "stage writes the changelog only"
        staged = []
        for k, v, p, _, headers in records:
            if k.startswith(COMMIT):
                commit = self.commits[p] = Commit.from_bytes(v)
                v = str(commit.offset).encode()
            else:
                self.tokens[k] = checkpoint_token(headers)
            staged.append((k, v, p))
        return staged

    def checkpoint(self, epoch: int = 1) -> list[tuple[bytes, bytes | None, int]]:
        """One batch's two sends (`GateWorker.process_batch`), acknowledged; returns what was sent."""
        sent = []
        for _ in range(2):
            staged = self.stage(epoch)
            last = {(self.changelog, p): next(self.offsets) for _, _, p in staged}
            self.store.written(last)
            sent += staged
        return sent

    def recover(self, records: list[tuple[int, bytes, bytes | None] | tuple[int, bytes, bytes | None, bytes]]) -> None:
        """A rebalance: the changelog read back (partition, key, value[, checkpoint token]), then
        recovery completes."""
        self.table.apply_changelog_batch(
            [
                _Written(TP(self.changelog, r[0]), r[0], next(self.offsets), r[1], r[2], written_by(*r[3:]))
                for r in records
            ]
        )
        partitions = {TP(self.changelog, p) for p in range(4)}
        asyncio.run(self.table.on_recovery_completed(partitions, set()))


def written_by(token: bytes | None = None) -> list[tuple[str, bytes]] | None:
    return [(CHECKPOINT_HEADER, token)] if token is not None else None


def at(partition: int, offset: int) -> LoggedEvent:
    return LoggedEvent(LoggedMessage("events", partition, offset, APP.encode(), T / 1000), b"{}")


def test_each_kind_of_row_has_its_own_two_byte_prefix_and_commit_records_sort_first():
    assert set(PREFIX) == set(TABLES)
    assert len(set(PREFIX.values())) == len(PREFIX) and {len(p) for p in PREFIX.values()} == {2}
    assert {KIND[p]: p for p in KIND} == {table.name: p for table, p in PREFIX.items()} and HOME not in KIND
    assert commit_key(0) == b"\x00commit\x1f0" and commit_key(12) == COMMIT + b"12"
    rows = sorted([*(p + b"app" for p in PREFIX.values()), HOME + b"app", commit_key(3)])
    assert rows[0] == commit_key(3)  # below every row: a commit record is never taken for one


def test_an_events_writes_are_read_back_at_once_then_belong_to_its_batch_until_written():
    w = Worker()
    row = key(APP, "u1")
    with w.store.handling(at(1, 5)):
        w.store.set(USERKEYS, row, b"one")
        assert w.store.get(USERKEYS, row) == b"one"
    with w.store.handling(at(1, 6)):
        assert w.store.get(USERKEYS, row) == b"one"  # the batch's own write
        w.store.delete(USERKEYS, row)
        assert w.store.get(USERKEYS, row) is None
        w.store.set(USERKEYS, row, b"two")
    assert w.store.read(USERKEYS, row) is None  # the inspection views read committed rows only
    assert w.store.handled(1) == 6
    w.checkpoint()
    assert w.store.read(USERKEYS, row) == b"two" and w.rows[PREFIX[USERKEYS] + row] == b"two"


def test_the_writes_of_an_event_that_raises_do_not_count():
    w = Worker()
    row = key(APP, "u1")
    try:
        with w.store.handling(at(0, 1)):
            w.store.set(USERKEYS, row, b"half-done")
            raise RuntimeError("a corrupt row")
    except RuntimeError:
        pass
    with w.store.handling(at(0, 2)):
        assert w.store.get(USERKEYS, row) is None
    assert (PREFIX[USERKEYS] + row, b"half-done", 0) not in w.checkpoint()


def test_rows_go_with_the_outputs_and_each_commit_record_in_the_next_send():
    w = Worker()
    for partition, offset, user in ((2, 7, "u1"), (3, 4, "u2"), (2, 8, "u3")):
        with w.store.handling(at(partition, offset)):
            w.store.set(USERKEYS, key(APP, user), user.encode())
    assert w.store.home(APP, 2) == 2 and w.store.home(APP, 3) == 2  # the first partition seen is its home
    first = w.stage()
    assert sorted(first) == sorted(
        [
            (PREFIX[USERKEYS] + key(APP, "u1"), b"u1", 2),
            (HOME + APP.encode(), b"2", 2),
            (PREFIX[USERKEYS] + key(APP, "u3"), b"u3", 2),
            (PREFIX[USERKEYS] + key(APP, "u2"), b"u2", 3),
        ]
    )
    w.store.written({(w.changelog, 2): 40, (w.changelog, 3): 41})
    # acknowledged: the local store holds the rows with their commit records, the apps table the home
    assert w.rows[commit_key(2)] == b"8" and w.rows[commit_key(3)] == b"4" and w.apps == {APP.encode(): b"2"}
    assert sorted(w.stage()) == [(commit_key(2), b"8", 2), (commit_key(3), b"4", 3)]
    w.store.written({(w.changelog, 2): 42, (w.changelog, 3): 43})
    assert w.stage() == []  # nothing left to send


def test_a_commit_record_whose_send_failed_goes_first_in_the_next_batch():
    w = Worker()
    with w.store.handling(at(0, 3)):
        w.store.set(USERKEYS, key(APP, "u1"), b"x")
    w.store.stage(Outbox(), 1)
    w.store.written({(w.changelog, 0): 10})
    w.stage()  # the commit records' send is refused: abort, and the batch after it stages again
    w.store.abort()
    with w.store.handling(at(0, 4)):
        w.store.set(USERKEYS, key(APP, "u2"), b"y")
    staged = w.stage()
    assert staged[0] == (commit_key(0), b"3", 0) and (PREFIX[USERKEYS] + key(APP, "u2"), b"y", 0) in staged


def test_abort_forgets_the_batch_its_offsets_and_the_homes_it_claimed():
    w = Worker()
    with w.store.handling(at(1, 9)):
        w.store.set(USERKEYS, key(APP, "u1"), b"x")
    w.store.home("new-app", 1)
    w.store.abort()
    assert w.store.handled(1) == -1 and w.store.home_of("new-app") is None
    assert w.stage() == [] and w.apps == {}


def test_after_a_rebalance_only_the_commit_records_of_kept_partitions_are_sent():
    """A batch's rows are in the changelog and the local store, its commit record not yet sent, when
    a rebalance comes. Kept, the partition's commit record goes first in the next batch: without
    it, recovery would never commit those rows (a commit record commits its own checkpoint's
    only), though the store holds them and the worker skips their events as handled. The zombie
    test's 60 s pause saw cluster and due rows differ from a rebuild."""
    w = Worker()
    for partition in (0, 1):
        with w.store.handling(at(partition, 5)):
            w.store.set(USERKEYS, key(APP, f"u{partition}"), b"x")
    rows = w.stage()
    w.store.written({(w.changelog, 0): 1, (w.changelog, 1): 2})
    w.store.keep_unsent_commits({1})  # partition 0 moved: its new owner decides its last batch again
    assert w.stage() == [(commit_key(1), b"5", 1)]
    assert w.tokens[PREFIX[USERKEYS] + key(APP, "u1")] == w.commits[1].token  # it commits the rows sent
    assert len(rows) == 2


@pytest.mark.parametrize("meanwhile", ["another worker decided it", "no other writer"])
def test_rows_sent_without_an_acknowledgement_are_orphans_after_a_rebalance(meanwhile):
    """A batch's rows reached the changelog but their send failed (no acknowledgement), so the
    batch failed before its commit record was staged, and the worker lost its partition and got it
    back. Its recovery reads the changelog: the rows are orphans (no commit record follows them),
    dropped and rewritten, and another worker may have decided the partition further meanwhile.
    Nothing of the failed batch is sent after the rebalance: the changelog's last commit record
    stands, and the batch is decided again from there."""
    w = Worker()
    row = PREFIX[USERKEYS] + key(APP, "u")
    with w.store.handling(at(1, 5)):
        w.store.set(USERKEYS, key(APP, "u"), b"this worker's")
    sent = w.stage()
    w.store.abort()  # the batch failed
    others = [(1, row, None), (1, row, b"the other worker's"), (1, commit_key(1), b"9")]  # rewrite, rows, commit
    w.recover([(p, k, v) for k, v, p in sent] + (others if meanwhile == "another worker decided it" else []))
    assert w.stage() == []
    assert w.store.handled(1) == (9 if meanwhile == "another worker decided it" else -1)
    assert w.rows.get(row) == (b"the other worker's" if meanwhile == "another worker decided it" else None)


def refuse_writes(w: Worker) -> Callable[[], None]:
    """Make the local store refuse every write (a full disk) until the returned function is called."""
    write = w.table.data.apply_changelog_batch

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    w.table.data.apply_changelog_batch = refused
    return lambda: setattr(w.table.data, "apply_changelog_batch", write)


def test_rows_the_store_refuses_are_held_over_it_and_decided_from_until_it_takes_them(caplog, monkeypatch):
    """The fault soak's full disk: every batch of the worker failed for as long as its store could
    not be written (93 s without a decision on its partitions). The rows are in the changelog
    already, so they are held in memory over the store, the commit record goes out as usual, reads
    see them, and the store gets them all, in one go, once it takes writes again."""
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    w = Worker()
    u1, u2 = PREFIX[USERKEYS] + key(APP, "u1"), PREFIX[USERKEYS] + key(APP, "u2")
    restore = refuse_writes(w)
    with w.store.handling(at(1, 5)):
        w.store.set(USERKEYS, key(APP, "u1"), b"one")
        w.store.set(USERKEYS, key(APP, "u2"), b"two")
    w.checkpoint()  # does not raise
    assert "refused a write" in caplog.text and w.table.unwritten.size == 3  # two rows, the commit record
    assert u1 not in w.rows and w.store.handled(1) == 5
    w.store._cache.clear()  # read through the table, as after a rebalance
    assert w.store.read(USERKEYS, key(APP, "u1")) == b"one" and w.store.handled(1) == 5
    with w.store.handling(at(1, 6)):
        assert w.store.get(USERKEYS, key(APP, "u1")) == b"one"
        w.store.delete(USERKEYS, key(APP, "u2"))
    w.checkpoint()
    assert w.table.held_to(TP(w.changelog, 1)) == w.table.unwritten.offsets[TP(w.changelog, 1)]
    restore()
    with w.store.handling(at(1, 7)):
        w.store.set(USERKEYS, key(APP, "u3"), b"three")
    w.checkpoint()
    assert w.table.unwritten.size == 0 and "took the" in caplog.text
    assert w.rows[u1] == b"one" and u2 not in w.rows and w.rows[commit_key(1)] == b"7"


def test_past_the_cap_no_batch_is_written_until_the_store_takes_the_rows(monkeypatch):
    monkeypatch.setattr(checkpoint, "UNWRITTEN_MAX_ROWS", 2)
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    w = Worker()
    restore = refuse_writes(w)
    with w.store.handling(at(0, 1)):
        w.store.set(USERKEYS, key(APP, "u1"), b"one")
    w.stage()
    w.store.written({(w.changelog, 0): next(w.offsets)})  # the row and its commit record: 2 held
    with pytest.raises(StoreUnwritable, match="refused writes"):
        w.stage()  # before anything is sent
    w.store.abort()
    restore()
    with w.store.handling(at(0, 2)):
        w.store.set(USERKEYS, key(APP, "u2"), b"two")
    w.checkpoint()
    assert w.table.unwritten.size == 0 and w.rows[PREFIX[USERKEYS] + key(APP, "u2")] == b"two"
    assert w.rows[commit_key(0)] == b"2"


def test_a_rebalance_drops_the_held_rows_of_partitions_that_moved_and_standbys_pause_while_the_store_refuses(
    monkeypatch,
):
    """Held rows of a partition this worker no longer decides are its new owner's to write (the
    store's offset is before them: a recovery reads them again if it comes back). A standby copy is
    not held in memory: it stops, and the next rebalance reads its records again."""
    w = Worker()
    standby = TP(w.changelog, 3)
    monkeypatch.setattr(w.faust.assignor, "assigned_standbys", lambda: {standby})
    monkeypatch.setattr(w.faust.assignor, "assigned_actives", lambda: {TP(w.changelog, 1)})
    refuse_writes(w)
    for partition in (0, 1):
        with w.store.handling(at(partition, 5)):
            w.store.set(USERKEYS, key(APP, f"u{partition}"), b"x")
    w.checkpoint()
    assert set(w.table.unwritten.rows) == {0, 1}
    w.table.apply_changelog_batch(
        [_Written(standby, 3, next(w.offsets), r, v) for r, v in ((b"u:other", b"v"), (commit_key(3), b"9"))]
    )
    assert w.table.paused_standbys == {standby} and set(w.table.unwritten.rows) == {0, 1}
    w.faust.tables.recovery.standby_offsets[standby] = 200  # read to, in Faust's memory
    asyncio.run(w.table.on_rebalance(set(), set(), set()))
    assert set(w.table.unwritten.rows) == {1} and not w.table.paused_standbys
    assert standby not in w.faust.tables.recovery.standby_offsets  # read again from the store's offset


def test_a_stopped_standby_copy_reads_its_records_again_once_the_store_takes_writes(monkeypatch):
    """The 30-minute soak: a standby copy stopped by a full disk stayed stopped for minutes after the
    disk had room, until a failover read 331,249 records (92 s without a decision). Once the store
    takes writes, the copy is read again from the store's offset at once: what recovery buffered
    meanwhile is dropped, records fetched before the seek (past what recovery had read, increasing)
    are skipped, and the first record from the seek on is applied, in order."""
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    w = Worker()
    standby = TP(w.changelog, 3)
    recovery = w.faust.tables.recovery
    monkeypatch.setattr(w.faust.assignor, "assigned_standbys", lambda: {standby})
    monkeypatch.setattr(w.faust.assignor, "assigned_actives", lambda: set())
    seeks: list[dict[TP, int]] = []

    async def rewind(app: object, offsets: dict[TP, int]) -> None:
        seeks.append(dict(offsets))
        for tp, offset in offsets.items():
            recovery.standby_offsets[tp] = offset

    monkeypatch.setattr(checkpoint, "rewind_standbys", rewind)

    def records(*offsets_rows: tuple[int, bytes, bytes]) -> list[_Written]:
        return [_Written(standby, 3, offset, row, value) for offset, row, value in offsets_rows]

    restore = refuse_writes(w)
    w.table.apply_changelog_batch(records((0, b"u:zero", b"0"), (1, commit_key(3), b"1")))  # held
    w.table.apply_changelog_batch(records((2, b"u:two", b"2"), (3, commit_key(3), b"3")))  # stops the copy
    assert w.table.paused_standbys == {standby}
    recovery.standby_offsets[standby] = 7  # recovery read on while the copy was stopped
    recovery.buffers[w.table] = records((6, b"u:six", b"6"), (7, commit_key(3), b"7"))  # and holds these
    restore()
    w.table.retry_unwritten()
    assert w.rows[b"u:zero"] == b"0" and w.table.held_to(standby) == -1  # the memory store keeps no offset
    asyncio.run(w.table.resume_standbys())
    assert seeks == [{standby: -1}] and not w.table.paused_standbys and not recovery.buffers[w.table]
    assert b"u:six" not in w.rows
    w.table.apply_changelog_batch(records((8, b"u:eight", b"8"), (9, commit_key(3), b"9")))  # fetched before
    assert b"u:eight" not in w.rows and recovery.standby_offsets[standby] == -1  # taken again after the seek
    w.table.apply_changelog_batch(records((2, b"u:two", b"2"), (3, commit_key(3), b"3"), (6, b"u:six", b"6")))
    w.table.apply_changelog_batch(records((7, commit_key(3), b"7"), (8, b"u:eight", b"8"), (9, commit_key(3), b"9")))
    assert [w.rows.get(r) for r in (b"u:two", b"u:six", b"u:eight")] == [b"2", b"6", b"8"]


def test_a_rewind_that_skips_more_than_fetches_can_hold_seeks_again(monkeypatch):
    """Faust's consumer drops records below the last offset it handed on: one fetched before the
    seek and handed on after it can make it drop those from the seek on. Then only ever later
    records come, each past the last skipped; past REWIND_MAX_SKIPPED of them the copy stops and
    seeks again at the next try, rather than skip for ever."""
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    monkeypatch.setattr(checkpoint, "REWIND_MAX_SKIPPED", 2)
    w = Worker()
    standby = TP(w.changelog, 3)
    recovery = w.faust.tables.recovery
    monkeypatch.setattr(w.faust.assignor, "assigned_standbys", lambda: {standby})
    seeks: list[dict[TP, int]] = []

    async def rewind(app: object, offsets: dict[TP, int]) -> None:
        seeks.append(dict(offsets))

    monkeypatch.setattr(checkpoint, "rewind_standbys", rewind)
    restore = refuse_writes(w)
    for offset in range(4):
        w.table.apply_changelog_batch(
            [_Written(standby, 3, offset, *((b"u:r", b"r"), (commit_key(3), b"1"))[offset % 2])]
        )
    recovery.standby_offsets[standby] = 5
    restore()
    w.table.retry_unwritten()
    asyncio.run(w.table.resume_standbys())
    for offset in range(6, 10):  # past what recovery had read: fetched before the seek, or dropped after it
        w.table.apply_changelog_batch([_Written(standby, 3, offset, b"u:late", b"x")])
        recovery.standby_offsets[standby] = offset  # as Faust's recovery loop does
    assert w.table.paused_standbys == {standby} and b"u:late" not in w.rows
    asyncio.run(w.table.resume_standbys())
    assert seeks == [{standby: -1}, {standby: -1}]


def test_a_standby_copy_whose_seek_fails_stays_stopped_until_the_next_rebalance(monkeypatch):
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    w = Worker()
    standby = TP(w.changelog, 3)
    monkeypatch.setattr(w.faust.assignor, "assigned_standbys", lambda: {standby})

    async def rewind(app: object, offsets: dict[TP, int]) -> None:
        raise TimeoutError

    monkeypatch.setattr(checkpoint, "rewind_standbys", rewind)
    restore = refuse_writes(w)
    for offset in range(4):  # two checkpoints: the store refuses the first, the second stops the copy
        w.table.apply_changelog_batch(
            [_Written(standby, 3, offset, *((b"u:r", b"r"), (commit_key(3), b"1"))[offset % 2])]
        )
    assert w.table.paused_standbys == {standby}
    w.faust.tables.recovery.standby_offsets[standby] = 5
    restore()
    w.table.retry_unwritten()
    asyncio.run(w.table.resume_standbys())
    assert w.table.paused_standbys == {standby} and not w.table._rewinds


def test_the_memory_store_keeps_no_offsets_so_a_checkpoint_after_other_records_warns_of_nothing(caplog):
    w = Worker()  # its changelog offsets start at 100: records this worker never read come first
    with w.store.handling(at(0, 5)):
        w.store.set(USERKEYS, b"k", b"v")
    w.checkpoint()
    assert w.rows[PREFIX[USERKEYS] + b"k"] == b"v"
    assert "did not get" not in caplog.text


def test_recovery_applies_whole_checkpoints_and_the_next_checkpoint_rewrites_the_orphans():
    w = Worker()
    good, orphan, other = PREFIX[USERKEYS] + key(APP, "u1"), PREFIX[USERKEYS] + key(APP, "u2"), b"u:elsewhere"
    w.recover(
        [
            (0, good, b"kept"),
            (0, commit_key(0), b"20"),  # a whole checkpoint
            (0, orphan, b"lost"),  # a crash before its commit record
            (1, other, b"lost too"),
        ]
    )  # a partition with no commit record at all
    assert w.rows == {good: b"kept", commit_key(0): b"20"}
    assert w.table.orphans == {0: {orphan}, 1: {other}}
    assert w.store.handled(0) == 20 and w.store.handled(1) == -1
    with w.store.handling(at(0, 21)):
        pass
    sent = w.checkpoint()
    assert (orphan, None, 0) in sent  # its committed value: none, a tombstone over the orphan
    assert w.table.orphans == {1: {other}}  # partition 1 has had no checkpoint yet


def schedule(next_due: int | None, held: int) -> bytes:
    return ReleaseSchedule([], next_due, [], held).to_bytes()


def test_the_ticker_sees_a_schedule_once_its_rows_are_written_and_after_every_rebalance():
    w = Worker()
    with w.store.handling(at(0, 1)):
        w.store.set(SCHEDULES, key("a1"), schedule(T + MINUTE, 3))
        w.store.set(SCHEDULES, key("a2"), schedule(T + 2 * MINUTE, 1))
    w.store.stage(Outbox(), 1)
    assert w.store.due == {} and w.store.held == {}  # not written yet: a release must not run ahead of its rows
    w.store.written({(w.changelog, 0): 10})
    assert w.store.due == {b"a1": T + MINUTE, b"a2": T + 2 * MINUTE} and w.store.held == {b"a1": 3, b"a2": 1}
    with w.store.handling(at(0, 2)):
        w.store.set(SCHEDULES, key("a2"), schedule(None, 0))  # its last request released
    w.checkpoint()
    assert w.store.due == {b"a1": T + MINUTE} and w.store.held == {b"a1": 3}
    w.recover([(1, PREFIX[SCHEDULES] + key("a3"), schedule(T + 5 * MINUTE, 2)), (1, commit_key(1), b"0")])
    assert w.store.due == {b"a1": T + MINUTE, b"a3": T + 5 * MINUTE} and w.store.held == {b"a1": 3, b"a3": 2}


def test_the_gate_over_checkpointed_batches_decides_as_over_one_dict():
    docs = [
        *established(),
        *(send(u, at=i * 1_000, text=PARCEL) for i, u in enumerate(recipients(14))),
        event("tick", 20 * MINUTE),
    ]
    reference, expected = Gate(), []
    memory = MemoryStore()
    for doc in docs:
        expected += reference.handle(validate(doc, T), memory)
    w, gate, got = Worker(), Gate(), []
    for offset, doc in enumerate(docs):
        with w.store.handling(at(0, offset)):
            got += gate.handle(validate(doc, T), w.store)
        if offset % 4 == 3:  # batches of four events
            w.checkpoint()
    w.checkpoint()
    assert got == expected and any(isinstance(d, Decision) and d.outcome == "released" for d in got)
    state_rows = {PREFIX[table] + k: v for table, rows in memory.tables.items() for k, v in rows.items()}
    assert {k: v for k, v in w.rows.items() if not k.startswith((COMMIT, HOME))} == state_rows


def reporters(index) -> list[int]:
    found = index.match(Gate().sketcher.sketch(PARCEL), Policy().similarity_threshold)
    return sorted(found[1].reporters) if found else []


def test_each_partition_has_its_own_junk_index_held_in_its_rows_and_a_failed_batch_or_event_leaves_it_as_committed():
    gate, w = Gate(), Worker()
    shared = [validate(event("junk_shared", 0, reporter=r, text=PARCEL), T) for r in (1, 2, 3)]
    with w.store.handling(at(2, 0)):
        gate.handle(shared[0], w.store)
    w.checkpoint()
    assert reporters(w.store.junk_index(2)) == [1] and reporters(w.store.junk_index(1)) == []
    assert [k for k in w.rows if k.startswith(PREFIX[JUNK])] == [
        PREFIX[JUNK] + key("2", f"{APP}\x1f{shared[0].event_id}")
    ]
    with w.store.handling(at(2, 1)):  # a batch that fails: its report must not count when it is decided again
        gate.handle(shared[1], w.store)
    w.store.abort()
    assert reporters(w.store.junk_index(2)) == [1]
    with pytest.raises(RuntimeError), w.store.handling(at(2, 1)):  # an event that fails half-way
        gate.handle(shared[1], w.store)
        raise RuntimeError("a fault after the index changed")
    assert reporters(w.store.junk_index(2)) == [1]
    with w.store.handling(at(2, 1)):
        gate.handle(shared[2], w.store)
    w.checkpoint()
    assert reporters(w.store.junk_index(2)) == [1, 3]
    w.recover([])  # a rebalance: the index is decoded again from the partition's rows
    assert reporters(w.store.junk_index(2)) == [1, 3] and reporters(w.store.junk_index(0)) == []


def stores(root: Path) -> set[str]:
    return {p.name for p in (root / "v1" / "tables").iterdir()}


def make(root: Path) -> None:
    tables = root / "v1" / "tables"
    for name in ("state-0.db", "state-7.db", "junk-0.db", "apps-3.db", "state-backups", "junk-backups"):
        (tables / name).mkdir(parents=True)
        (tables / name / "CURRENT").write_text("x")


def test_at_least_once_keeps_the_state_stores_and_removes_the_global_tables(tmp_path):
    make(tmp_path)
    removed = after_unclean_stop(tmp_path, keep_state=True)
    assert stores(tmp_path) == {"state-0.db", "state-7.db"}
    assert sorted(removed) == ["apps-3.db", "junk-0.db", "junk-backups", "state-backups"]
    assert (tmp_path / "v1" / "tables" / "state-0.db" / "CURRENT").read_text() == "x"


def test_exactly_once_removes_every_store(tmp_path):
    make(tmp_path)
    after_unclean_stop(tmp_path, keep_state=False)
    assert stores(tmp_path) == set()


def test_a_store_directory_that_does_not_exist_is_nothing_to_do(tmp_path):
    assert after_unclean_stop(tmp_path / "missing", keep_state=True) == []


def test_a_standby_store_holds_every_row_up_to_its_persisted_offset_when_a_recovery_ends_while_it_reads(tmp_path):
    """The fault soak's store gap (bench/results/soak-findings.md): Faust's recovery resumes the
    standby partitions, then ends by resuming the flow (`Recovery.on_recovery_completed`), which
    clears the changelog queue. The worker as built, on a real rocksdb:// store, its standby
    records read by Faust's own changelog reader: the records queued at that resume must still
    reach the store, or its persisted offset passes rows it never got (the soak lost the first
    ~170 records after each standby start, and a worker that later owned the partition decided
    from the gap)."""
    from faust.tables.recovery import Recovery

    from sendgate.streams.config import Settings
    from sendgate.streams.worker.app import build_worker

    settings = Settings(data_dir=str(tmp_path), group_id="gate-standby", web_enabled=False, auth=False)
    worker = build_worker(settings, ticker=False)  # never started: no broker needed
    app, table = worker.faust, worker.store.table
    assert table.data.partition_path(6).is_relative_to(tmp_path)  # the rocksdb:// store
    recovery, queue = app.tables.recovery, app.tables.changelog_queue
    tp = TP(table.changelog_topic.get_topic_name(), 6)
    recovery.standby_tps.add(tp)  # a standby partition read from its start, as Recovery.on_rebalance sets it
    recovery.standbys_for_table[table].add(tp)
    recovery.tp_to_table[tp] = table
    recovery.standby_offsets[tp] = -1
    log: list[_Written] = []

    def checkpoint(n: int) -> None:
        """A checkpoint of partition 6 as the changelog holds it: two rows, then its commit record."""
        for row, value in (
            (f"c:app-{n}".encode(), b"conversation"),
            (f"n:app-{n}".encode(), b"seen"),
            (commit_key(6), str(n).encode()),
        ):
            log.append(_Written(tp, 6, len(log), row, value))
            queue.put_nowait(log[-1])  # fetched: the conductor hands it to the changelog queue

    async def read_up_to(offset: int) -> None:
        for _ in range(10_000):  # the reader's own steps, no time: it waits on its queue once done
            if recovery.standby_offsets[tp] == offset:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the reader got to {recovery.standby_offsets[tp]}, not {offset}")

    async def read() -> None:
        reader = asyncio.ensure_future(Recovery._slurp_changelogs(recovery))
        try:
            checkpoint(0)
            await read_up_to(2)
            checkpoint(1)
            app.flow_control.resume()  # the end of the recovery, while the standby partition is read
            checkpoint(2)
            await read_up_to(8)
            recovery.flush_buffers()  # as Faust does when partitions are revoked or it stops
        finally:
            reader.cancel()

    asyncio.run(read())
    persisted = table.data.persisted_offset(tp)
    want = {w.key: w.value for w in log if w.offset <= persisted}
    with processing(_Written(tp, 6, persisted, b"", None)):  # reads go to partition 6's store
        have = {row: table.data._get(row) for row in want}
    assert persisted == len(log) - 1
    assert have == want


def test_a_commit_record_commits_only_its_own_checkpoint_s_rows_not_a_zombie_s_in_between():
    """A worker frozen inside a send while its partition moved (a zombie) lands its rows between
    the new owner's checkpoints. The new owner's next commit record follows them, yet a recovery
    must not take them for the owner's: they are orphans, and the owner's next checkpoint rewrites
    their keys with the committed values (the fault soak: a zombie's sender head naming burst
    clusters the owner had never written stalled the partition for good)."""
    owner, zombie = b"A" * 8, b"Z" * 8
    head, cluster, userkey = PREFIX[SENDERS] + key(APP, "s1"), PREFIX[CLUSTERS] + key(APP, "s1", "c9"), b"u:x"
    w = Worker()
    w.recover(
        [
            (1, userkey, b"owner-1", owner + bytes(7) + b"\x01"),
            (1, commit_key(1), Commit(7, owner + bytes(7) + b"\x01", 3).to_bytes()),
            (1, head, b"zombie's head naming c9", zombie + bytes(7) + b"\x05"),  # never committed
            (1, userkey, b"owner-2", owner + bytes(7) + b"\x02"),
            (1, commit_key(1), Commit(9, owner + bytes(7) + b"\x02", 3).to_bytes()),
            (1, cluster, b"zombie's cluster", zombie + bytes(7) + b"\x05"),  # after the last commit
        ]
    )
    assert w.rows == {userkey: b"owner-2", commit_key(1): b"9"}
    assert w.table.orphans[1] == {head, cluster}
    with w.store.handling(at(1, 10)):
        w.store.set(USERKEYS, key(APP, "u2"), b"y")
    staged = w.checkpoint()
    assert (head, None, 1) in staged and (cluster, None, 1) in staged  # tombstones: nothing committed
    assert w.tokens[head] == w.commits[1].token  # rewritten inside the owner's own checkpoint


def test_a_zombie_s_whole_late_checkpoint_below_the_epoch_read_is_dropped_and_the_owner_s_stays():
    """A zombie frozen inside the send of its commit records lands a whole checkpoint after the
    new owner's: its epoch (the group generation it began in) is below the owner's, so recovery
    drops it, rows and commit record."""
    owner, zombie = b"A" * 8 + bytes(8), b"Z" * 8 + bytes(8)
    w = Worker()
    w.recover(
        [
            (2, b"u:x", b"owner", owner),
            (2, commit_key(2), Commit(20, owner, 4).to_bytes()),
            (2, b"u:x", b"zombie", zombie),
            (2, b"u:y", b"zombie", zombie),
            (2, commit_key(2), Commit(18, zombie, 3).to_bytes()),
        ]
    )
    assert w.rows == {b"u:x": b"owner", commit_key(2): b"20"}
    assert w.table.orphans[2] == {b"u:x", b"u:y"}


def test_the_epoch_of_a_checkpoint_never_falls_below_its_partition_s_last_commit_record():
    """A group deleted and created again numbers its generations afresh: the new owner's commit
    records must still not fall below the changelog's, or every recovery would drop them."""
    w = Worker()
    w.recover([(3, b"u:x", b"old", b"O" * 16), (3, commit_key(3), Commit(5, b"O" * 16, 41).to_bytes())])
    with w.store.handling(at(3, 6)):
        w.store.set(USERKEYS, key(APP, "u1"), b"new")
    w.checkpoint(epoch=2)
    assert w.commits[3].epoch == 41 and w.commits[3].offset == 6


def test_a_checkpoint_log_orphans_its_writer_s_failed_attempts_and_keeps_another_writer_s_rows_waiting():
    log_ = CheckpointLog()
    a1, a2, b1 = b"A" * 8 + bytes(7) + b"\x01", b"A" * 8 + bytes(7) + b"\x02", b"B" * 8 + bytes(7) + b"\x01"
    assert log_.read("a1 row", b"u:1", b"v", a1) == ([], [])  # an attempt that failed before its commit
    assert log_.read("b1 row", b"u:2", b"v", b1) == ([], [])  # another writer's, committed later
    assert log_.read("a2 row", b"u:3", b"v", a2) == ([], [])
    a2_commit = Commit(5, a2, 1).to_bytes()
    assert log_.read("a2 commit", commit_key(0), a2_commit, None) == (["a2 row", "a2 commit"], ["a1 row"])
    b1_commit = Commit(6, b1, 1).to_bytes()
    assert log_.read("b1 commit", commit_key(0), b1_commit, None) == (["b1 row", "b1 commit"], [])
    # rows without a token go with a commit record without one (an older worker's, `sendgate rebuild`'s)
    assert log_.read("old row", b"u:4", b"v", None) == ([], [])
    assert log_.read("old commit", commit_key(0), b"7", None) == (["old row", "old commit"], [])
    assert Commit.from_bytes(b"7") == Commit(7) and Commit.from_bytes(a2_commit) == Commit(5, a2, 1)


def test_a_batch_written_after_records_this_worker_never_read_leaves_the_store_s_offset_before_them(tmp_path):
    """A zombie's batch (the fault soak: frozen past its session in the middle of a send, resumed
    after another worker took the partition and wrote to its changelog) is acknowledged at an
    offset past the new owner's records. Its rows may enter the local store, but its persisted
    offset must stay before records the store never got, or the recovery that makes it a standby
    of that partition starts past them, and the store misses them for good."""
    from sendgate.streams.config import Settings
    from sendgate.streams.worker.app import build_worker

    settings = Settings(data_dir=str(tmp_path), group_id="gate-zombie", web_enabled=False, auth=False)
    worker = build_worker(settings, ticker=False)  # never started: no broker needed
    store, table = worker.store, worker.store.table
    changelog = table.changelog_topic.get_topic_name()
    end = -1  # the changelog partition's last offset

    def batch(offset: int, row: bytes) -> None:
        nonlocal end
        with store.handling(at(4, offset)):
            store.set(USERKEYS, row, b"v")
        for _ in range(2):  # the rows, then the commit record
            outbox = Outbox()
            store.stage(outbox, 1)
            end += len(outbox._records.pop(changelog, []))
            store.written({(changelog, 4): end})

    batch(10, b"mine")
    assert table.data.persisted_offset(TP(changelog, 4)) == end == 1  # the store holds 0..1: its own records
    owned_up_to = end
    end += 5  # the new owner's records, which this worker never reads
    batch(11, b"late")
    tp = TP(changelog, 4)
    assert table.data.persisted_offset(tp) == owned_up_to
    # the records in between are read (GateWorker.rewrite_foreign_rows); their keys, but not this
    # process's own, are rewritten at the next checkpoint
    assert store.foreign == {4: (owned_up_to + 1, owned_up_to + 6)}
    own = [(CHECKPOINT_HEADER, store._writer + bytes(8))]
    found = [(b"u:z", [(CHECKPOINT_HEADER, b"Z" * 16)]), (b"u:old", None), (b"u:own", own), (commit_key(4), None)]
    assert store.rewrite(4, found) == 2 and table.orphans[4] == {b"u:z", b"u:old"}
    store.foreign.clear()
    # the next recovery reads from there: the new owner's records, then the late batch's own
    table.apply_changelog_batch(
        [_Written(tp, 4, o, commit_key(4) if o == end else b"u:o%d" % o, b"1") for o in range(owned_up_to + 1, end + 1)]
    )
    assert table.data.persisted_offset(tp) == end
    batch(12, b"next")  # right after what recovery read: the store holds all of it again
    assert table.data.persisted_offset(tp) == end


def test_changelog_records_recovery_could_not_write_are_held_and_written_first_with_the_next_buffer(monkeypatch):
    """A recovery write that fails (a full disk) does not raise into Faust's recovery loop (which
    would keep its buffer and hand all of it over again with every record it reads, spinning on
    the error): the committed records are held over the store, and written first once it takes
    writes, also those held from the buffers before it."""
    monkeypatch.setattr(checkpoint, "STORE_RETRY_S", 0.0)
    w = Worker()
    tp = TP(w.changelog, 2)
    monkeypatch.setattr(w.faust.assignor, "assigned_standbys", lambda: set())

    def records(*rows: tuple[int, bytes, bytes | None]) -> list[_Written]:
        return [_Written(tp, 2, offset, k, v) for offset, k, v in rows]

    earlier = records((10, PREFIX[USERKEYS] + key(APP, "u1"), b"kept"), (11, PREFIX[USERKEYS] + key(APP, "u2"), None))
    buffer = records((12, PREFIX[USERKEYS] + key(APP, "u3"), b"three"), (13, commit_key(2), b"7"))
    w.table.data.data[PREFIX[USERKEYS] + key(APP, "u2")] = b"deleted by offset 11"
    w.table.apply_changelog_batch(earlier)  # held: no commit record yet
    restore = refuse_writes(w)
    w.table.apply_changelog_batch(buffer)
    assert w.table.unwritten.size == 4 and w.table.committed(PREFIX[USERKEYS] + key(APP, "u2")) is None
    restore()
    w.table.apply_changelog_batch(records((14, PREFIX[USERKEYS] + key(APP, "u4"), b"four"), (15, commit_key(2), b"8")))
    assert w.table.unwritten.size == 0
    assert (
        w.rows[PREFIX[USERKEYS] + key(APP, "u1")] == b"kept" and w.rows[PREFIX[USERKEYS] + key(APP, "u3")] == b"three"
    )
    assert PREFIX[USERKEYS] + key(APP, "u2") not in w.rows and w.rows[commit_key(2)] == b"8"
