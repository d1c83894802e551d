"""models/gate/unit.py: an event's rows are decoded once and each changed row is written once, when
the event is decided; an event that fails writes nothing; rows kept decoded across events decide
as rows read back from the store."""

from __future__ import annotations

import pytest

from conftest import APP, T, event
from sendgate.models.clock import AppClock
from sendgate.models.consent import Userkey
from sendgate.models.gate import CLOCKS, USERKEYS, Decoded, Gate, MemoryStore, Table, UnitOfWork, key
from sendgate.models.events import validate
from sendgate.models.gate import consent

from test_gate import scenario


class CountingStore(MemoryStore):
    """A MemoryStore that records every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bytes]] = []

    def set(self, table: Table, key: bytes, value: bytes) -> None:
        self.writes.append((table.name, key))
        super().set(table, key, value)

    def delete(self, table: Table, key: bytes) -> None:
        self.writes.append((table.name, key))
        super().delete(table, key)


def test_a_row_is_decoded_once_and_written_once_when_the_event_is_decided():
    store = CountingStore()
    store.set(USERKEYS, key(APP, "u1"), Userkey().to_bytes())
    store.writes.clear()
    rows = UnitOfWork(store, Decoded(128))
    user = rows.get(USERKEYS, APP, "u1")
    assert user is not None and rows.get(USERKEYS, APP, "u1") is user  # the same object, decoded once
    user.opt_out(T, "test")
    rows.put(USERKEYS, user, APP, "u1")
    rows.put(CLOCKS, AppClock(T), APP)
    user.confirmed = True  # changed again after `put`: written as it is at `commit`
    rows.put(USERKEYS, user, APP, "u1")
    rows.delete(USERKEYS, APP, "u2")
    assert store.writes == [] and rows.get(USERKEYS, APP, "u2") is None
    rows.commit()
    assert store.writes == [("userkeys", key(APP, "u1")), ("clocks", key(APP)), ("userkeys", key(APP, "u2"))]
    assert Userkey.from_bytes(store.get(USERKEYS, key(APP, "u1"))).confirmed


def test_an_event_that_fails_half_way_writes_nothing(monkeypatch):
    gate, store = Gate(), CountingStore()

    def fails(*args):
        raise RuntimeError("a fault after the event's first rows changed")

    monkeypatch.setattr(consent, "stopped_by", fails)  # an opt-out inbound, after its conversation row
    with pytest.raises(RuntimeError):
        gate.handle(validate(event("inbound", 0, text="STOP"), T), store)
    assert store.writes == []


def decided(docs: list[dict], keep_decoded: bool) -> tuple[list, dict]:
    gate, store, out = Gate(), MemoryStore(), []
    for doc in docs:
        if not keep_decoded:
            gate.decoded = Decoded(gate.policy.num_perm)  # every row read back, as after a restart
        out += [r.to_json() for r in gate.handle_in_one_log(validate(doc, T), store)]
    return out, {table.name: rows for table, rows in store.tables.items()}


def test_rows_kept_decoded_across_events_decide_as_rows_read_back():
    docs = scenario()
    assert decided(docs, keep_decoded=True) == decided(docs, keep_decoded=False)
