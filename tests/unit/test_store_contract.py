"""Every `Store` the gate decides over keeps rows the same way: the in-memory one (unit tests,
benchmarks, replay), the what-if overlay (`Gate.check`), the worker's store over its Faust table
(streams/worker/checkpoint.py: a Faust app that is never started, on the memory store, no broker)
and rebuild's rows on disk (streams/ops/rebuild.py).

The same get/set/delete/overlay checks run against each: a row written is read back, a row deleted
is gone, the tables and keys are apart, and a store that reads through to rows beneath it (the
overlay's live rows, the worker's committed rows) shows its own writes over them and leaves them
untouched. Then the gate decides the same over each."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import faust
import pytest

from conftest import APP, MINUTE, PARCEL, SECOND, established, event, recipients, send
from sendgate.models.events import validate
from sendgate.models.gate import CLOCKS, CONTACTS, TABLES, USERKEYS, Gate, MemoryStore, OverlayStore, Store, Table, key
from sendgate.models.junk import JunkIndex
from sendgate.streams.ops.rebuild import SpooledRows
from sendgate.streams.worker.checkpoint import PREFIX, STATE, CheckpointStore, StateTable

_apps = itertools.count()


@dataclass
class Subject:
    store: Store
    beneath: Callable[[Table, bytes, bytes], None]  # puts a row under the store's own writes
    held_beneath: Callable[[Table, bytes], bytes | None] | None  # reads it back (None: a store of one layer)


def memory(_: Path) -> Subject:
    store = MemoryStore()
    return Subject(store, store.set, None)


def overlay(_: Path) -> Subject:
    live = MemoryStore()
    return Subject(OverlayStore(live.get, live.junk), live.set, live.get)


def checkpoint(_: Path) -> Subject:
    app = faust.App(
        f"unit-contract-{next(_apps)}", broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False
    )  # never started: no broker needed
    table = app.tables.add(StateTable(app, name=STATE, default=None, partitions=4, key_type=bytes, value_type=bytes))
    committed = table.data.data  # the local store: the rows of written checkpoints

    def beneath(t: Table, k: bytes, v: bytes) -> None:
        committed[PREFIX[t] + k] = v

    return Subject(CheckpointStore(table, {}), beneath, lambda t, k: committed.get(PREFIX[t] + k))


def rebuild(tmp_path: Path) -> Subject:
    store = SpooledRows(tmp_path)
    return Subject(store, store.set, None)


@pytest.fixture(params=[memory, overlay, checkpoint, rebuild])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    made = request.param(tmp_path)
    yield made
    if isinstance(made.store, SpooledRows):
        made.store.close()


def test_a_missing_row_reads_as_none(subject):
    assert subject.store.get(USERKEYS, key(APP, "nobody")) is None


def test_a_row_written_is_read_back_and_a_second_write_replaces_it(subject):
    store, row = subject.store, key(APP, "u1")
    store.set(USERKEYS, row, b"one")
    assert store.get(USERKEYS, row) == b"one"
    store.set(USERKEYS, row, b"two")
    assert store.get(USERKEYS, row) == b"two"


def test_a_row_deleted_is_gone_and_deleting_a_missing_row_is_no_error(subject):
    store, row = subject.store, key(APP, "u1")
    store.delete(USERKEYS, row)
    store.set(USERKEYS, row, b"one")
    store.delete(USERKEYS, row)
    assert store.get(USERKEYS, row) is None
    store.set(USERKEYS, row, b"again")
    assert store.get(USERKEYS, row) == b"again"


def test_tables_and_keys_are_apart(subject):
    store = subject.store
    for table in TABLES:
        store.set(table, key(APP, "x"), table.name.encode())
    store.set(USERKEYS, key(APP), b"app")  # a key that is the start of another
    store.set(USERKEYS, key(APP, "x", "y"), b"longer")
    store.delete(CLOCKS, key(APP, "x"))
    assert store.get(CLOCKS, key(APP, "x")) is None
    assert [store.get(t, key(APP, "x")) for t in TABLES if t is not CLOCKS] == [
        t.name.encode() for t in TABLES if t is not CLOCKS
    ]
    assert store.get(USERKEYS, key(APP)) == b"app" and store.get(USERKEYS, key(APP, "x", "y")) == b"longer"


def test_rows_beneath_are_read_through_shadowed_by_writes_and_left_untouched(subject):
    store = subject.store
    kept, replaced, removed = key(APP, "kept"), key(APP, "replaced"), key(APP, "removed")
    for row in (kept, replaced, removed):
        subject.beneath(USERKEYS, row, b"beneath")
    subject.beneath(CONTACTS, kept, b"1")
    store.set(USERKEYS, replaced, b"written")
    store.delete(USERKEYS, removed)
    assert store.get(USERKEYS, kept) == b"beneath" and store.get(CONTACTS, kept) == b"1"
    assert store.get(USERKEYS, replaced) == b"written" and store.get(USERKEYS, removed) is None
    if subject.held_beneath is not None:  # an overlay: what is beneath changes only when written there
        assert [subject.held_beneath(USERKEYS, row) for row in (kept, replaced, removed)] == [b"beneath"] * 3


def test_each_store_has_a_junk_index(subject):
    assert isinstance(subject.store.junk, JunkIndex)


def test_the_gate_decides_the_same_over_every_store(subject):
    # accepted, then paced (held rows), then released by a tick (held rows deleted)
    docs = [
        *established(),
        *(send(u, at=i * SECOND, text=PARCEL) for i, u in enumerate(recipients(14))),
        event("tick", 30 * MINUTE),
    ]

    def decided(store: Store) -> list[tuple]:
        gate = Gate()
        return [
            (r.request_id, r.outcome, r.reason, r.deliver_at)
            for doc in docs
            for r in gate.handle(validate(doc, doc["ts"]), store)
            if hasattr(r, "outcome")
        ]

    expected = decided(MemoryStore())
    assert {outcome for _, outcome, _, _ in expected} == {"accepted", "delayed", "released"}
    assert decided(subject.store) == expected
