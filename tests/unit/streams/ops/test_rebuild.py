"""rebuild.py SpooledRows: the gate's Store of a rebuild, rows on disk keyed as in the changelogs
with the partition each belongs to (a rebuild against a broker: tests/integration/test_kafka_replay.py)."""

from __future__ import annotations

from conftest import APP, PARCEL, T, established, event, recipients, send
from sendgate.models.events import validate
from sendgate.models.gate import JUNK, USERKEYS, Gate, MemoryStore, key
from sendgate.streams.ops.rebuild import SpooledRows
from sendgate.streams.worker.checkpoint import PREFIX, STATE


def test_rows_are_kept_under_their_kinds_prefix_with_the_partition_that_wrote_them_last(tmp_path):
    rows = SpooledRows(tmp_path)
    try:
        rows.partition = 5
        rows.set(USERKEYS, key(APP, "u1"), b"first")
        rows.partition = 2
        rows.set(USERKEYS, key(APP, "u2"), b"second")
        rows.set(JUNK, key("2", "tmpl-1"), b"junk")  # a partition's junk index: a state row like any other
        assert rows.get(USERKEYS, key(APP, "u1")) == b"first" and rows.get(USERKEYS, key(APP, "u3")) is None
        assert rows.partition_of(STATE, PREFIX[USERKEYS] + key(APP, "u1")) == 5
        assert rows.partition_of(STATE, PREFIX[JUNK] + key("2", "tmpl-1")) == 2
        rows.delete(USERKEYS, key(APP, "u2"))
        assert rows.partition_of(STATE, PREFIX[USERKEYS] + key(APP, "u2")) is None
        assert sorted(rows.items(STATE)) == [
            (PREFIX[JUNK] + key("2", "tmpl-1"), 2, b"junk"),
            (PREFIX[USERKEYS] + key(APP, "u1"), 5, b"first"),
        ]
    finally:
        rows.close()


def test_the_gate_over_spooled_rows_decides_and_writes_as_over_a_dict(tmp_path):
    docs = [
        *established(),
        event("junk_report", 0, userkey="r1", text=PARCEL),
        *(send(u, at=i * 1_000, text=PARCEL) for i, u in enumerate(recipients(12))),
        event("opt_out", 30_000, userkey="u03"),
    ]
    memory, reference, expected = MemoryStore(), Gate(), []
    memory.partition = 3
    for doc in docs:
        expected += reference.handle_in_one_log(validate(doc, T), memory)
    rows, gate, got = SpooledRows(tmp_path), Gate(), []
    try:
        rows.partition = 3
        for doc in docs:
            got += gate.handle_in_one_log(validate(doc, T), rows)
        assert got == expected
        assert {row: value for row, _, value in rows.items(STATE)} == {
            PREFIX[table] + k: v for table, kept in memory.tables.items() for k, v in kept.items()
        }
        assert {p for _, p, _ in rows.items(STATE)} == {3} and memory.tables[JUNK] != {}
    finally:
        rows.close()
