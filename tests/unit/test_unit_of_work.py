"""models/gate/unit.py: an event's rows are decoded once and each changed row is written once, when
the event is decided; an event that fails writes nothing; rows kept decoded across events decide
as rows read back from the store, which holds only while an event changes a row only to put or
delete it."""

from __future__ import annotations

import pytest

from conftest import APP, T, event
from sendgate.models.clock import AppClock
from sendgate.models.consent import Userkey
from bench import identity
from bench.throughput import generate
from sendgate.models.gate import CLOCKS, CONVERSATIONS, USERKEYS, Decoded, Gate, MemoryStore, Table, UnitOfWork, key
from sendgate.models.events import validate
from sendgate.models.gate import consent, gate

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

    gate.handle(validate(event("inbound", 0, event_id="i0", text="hello"), T), store)
    store.writes.clear()
    conversation = (CONVERSATIONS, key(APP, "S1", "u1"))
    assert conversation in gate.decoded.rows.held  # kept decoded for the next events
    monkeypatch.setattr(consent, "stopped_by", fails)  # an opt-out inbound, after its conversation row
    with pytest.raises(RuntimeError):
        gate.handle(validate(event("inbound", 0, text="STOP"), T), store)
    assert store.writes == []
    assert conversation not in gate.decoded.rows.held  # changed in place, never written: forgotten


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


class CheckedUnitOfWork(UnitOfWork):
    """A unit of work that checks, when the event is decided, that each row it read and did not put
    or delete is still what its stored bytes say: a row changed in place but never put would be
    kept decoded, changed, for the next events, while the store holds it unchanged."""

    __slots__ = ("raws",)

    def __init__(self, store, decoded: Decoded) -> None:
        super().__init__(store, decoded)
        self.raws: dict[tuple[Table, bytes], bytes] = {}

    def get(self, table, *parts):
        row = super().get(table, *parts)
        slot = (table, key(*parts))
        if row is not None and table.encode is not None and slot not in self._changed:
            self.raws.setdefault(slot, self.store.get(table, slot[1]))
        return row

    def commit(self) -> None:
        for slot, raw in self.raws.items():
            table, row_key = slot
            if slot not in self._changed:
                assert table.encode(self._rows[slot]) == raw, f"{table} {row_key!r}: changed, but not put"
        super().commit()


@pytest.mark.parametrize("run", [identity.run_default, identity.run_strict], ids=["default", "strict"])
def test_an_event_changes_a_row_only_to_put_or_delete_it(monkeypatch, run):
    monkeypatch.setattr(gate, "UnitOfWork", CheckedUnitOfWork)
    digest, _, _ = run(generate(3000).records)
    assert digest.count > 3000


def test_sender_states_are_kept_by_their_bytes_not_their_count(monkeypatch):
    """300 senders (the bench log has 285 sender states) send twice: the second round decodes no
    state from its rows. Kept by count (256), the least recent 44 were decoded again each round."""
    from sendgate.models.burst import SenderState

    gate_, store = Gate(), MemoryStore()
    senders = [f"sender-{i}" for i in range(300)]
    for i, sender in enumerate(senders):
        gate_.handle_in_one_log(validate(event("inbound", at=i, sender=sender, userkey=f"u{i}", text="hi"), T), store)
    decoded = []
    real = SenderState.from_rows.__func__
    monkeypatch.setattr(SenderState, "from_rows", classmethod(lambda cls, *a: decoded.append(1) or real(cls, *a)))
    for round_ in (1, 2):
        decoded.clear()
        for i, sender in enumerate(senders):
            doc = event("send", at=10_000 * round_ + i, sender=sender, userkey=f"u{i}", text=f"hello {round_}")
            gate_.handle_in_one_log(validate(doc, T), store)
        if round_ == 2:
            assert decoded == []
    held = gate_.decoded.senders
    assert len(held.held) >= 300 and held.total == sum(state.nbytes for _, state in held.held.values())


def test_the_sender_states_kept_stay_within_their_bytes():
    from operator import attrgetter

    from sendgate.models.gate.unit import Held

    gate_, store = Gate(), MemoryStore()
    for i in range(40):
        gate_.handle_in_one_log(validate(event("inbound", at=i, sender=f"s{i}", userkey=f"u{i}", text="hi"), T), store)
        doc = event("send", at=1_000 + i, sender=f"s{i}", userkey=f"u{i}", text=f"text {i}")
        gate_.handle_in_one_log(validate(doc, T), store)
    states = list(gate_.decoded.senders.held.items())
    weight = max(state.nbytes for _, (_, state) in states)
    held = Held(10 * weight, weigh=attrgetter("nbytes"))
    for slot, (raw, state) in states:
        held.keep(slot, raw, state)
        assert held.total <= 10 * weight
    assert 10 <= len(held.held) < 40 and list(held.held) == [slot for slot, _ in states][-len(held.held) :]
    raw, state = held.held[states[-1][0]]
    assert held.take(states[-1][0], raw) is state and states[-1][0] not in held.weights
