"""faust_internals.py: the private faust-streaming internals the worker relies on are still there,
in the shape they were read (faust-streaming 0.15). A failure here means an upgrade changed one:
read the new faust source before widening the pin in pyproject.toml."""

from __future__ import annotations

import asyncio
import contextvars
import inspect

import faust
import pytest
from faust.stores.base import SerializedStore
from faust.tables.globaltable import GlobalTable
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer
from faust.types import TP

from sendgate.streams.worker import faust_internals
from sendgate.streams.worker.faust_internals import TESTED


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_the_installed_faust_is_the_tested_minor_version():
    assert faust.__version__.startswith(TESTED + "."), faust.__version__


def test_the_current_event_is_a_context_variable_of_weak_references():
    from faust.streams import _current_event, current_event

    assert isinstance(_current_event, contextvars.ContextVar)
    assert "_current_event.get" in inspect.getsource(current_event)


def test_the_consumer_keeps_the_committed_offsets_by_tp():
    assert "self._committed_offset" in inspect.getsource(Consumer.__init__)


def test_the_consumer_commits_through_the_three_methods_commit_at_wraps():
    # commit_at replaces them on the instance: Faust must still look them up on self, with these
    # signatures, and still record a refused commit as committed (else the restore is moot)
    assert "self._filter_tps_with_pending_acks(topics)" in inspect.getsource(Consumer.force_commit)
    assert "self._new_offset(tp)" in inspect.getsource(Consumer._filter_committable_offsets)
    assert "await self._commit_offsets(" in inspect.getsource(Consumer._commit_tps)
    assert params(Consumer._new_offset) == ["tp"]
    assert params(Consumer._commit_offsets) == ["offsets", "start_new_transaction"]
    assert "self._committed_offset.update(committable_offsets)" in inspect.getsource(Consumer._commit_offsets)
    assert "self._acked_index[tp].difference_update" in inspect.getsource(Consumer._new_offset)


def test_commit_at_commits_the_given_offsets_past_a_head_hole_and_keeps_faust_s_rule_elsewhere():
    app = faust.App("test-commit-at", broker="kafka://127.0.0.1:1")  # never started: no broker needed
    consumer, events, other = app.consumer, TP("events", 0), TP("junk", 0)
    next_offsets: dict = {}
    faust_internals.commit_at(app, next_offsets)
    consumer._committed_offset[events] = 2
    for tp, offsets in ((events, [5, 6, 9]), (other, [3, 4])):
        consumer._acked[tp], consumer._acked_index[tp] = list(offsets), set(offsets)
    # Faust's own rule: offsets 3 and 4 of `events` were never acked, so it would never commit
    assert consumer._filter_committable_offsets(list(consumer._filter_tps_with_pending_acks())) == {other: 5}
    next_offsets.update({events: 7, TP("events", 1): 4})  # decided through 6 and 3
    tps = list(consumer._filter_tps_with_pending_acks())
    assert {events, TP("events", 1)} <= set(tps)  # a partition with no acks pending is committed too
    assert consumer._filter_committable_offsets(tps) == {events: 7, TP("events", 1): 4}
    assert consumer._acked[events] == [9] and consumer._acked_index[events] == {9}  # the covered acks go


def test_the_producer_hands_out_its_aiokafka_producer():
    assert params(Producer._ensure_producer) == []


def test_stores_have_a_raw_read_and_a_batch_write_that_sets_offsets():
    from faust.stores.rocksdb import Store as RocksStore

    assert params(SerializedStore._get) == ["key"]
    assert params(RocksStore._get) == ["key"]
    assert params(RocksStore.apply_changelog_batch) == ["batch", "to_key", "to_value"]
    source = inspect.getsource(RocksStore.apply_changelog_batch)
    for attribute in (
        "event.message.tp",
        "event.message.offset",
        "msg.partition",
        "msg.key",
        "msg.value",
        "set_persisted_offset",
    ):
        assert attribute in source, attribute


def test_tables_recover_through_the_hooks_the_state_table_overrides():
    assert params(faust.Table.apply_changelog_batch) == ["batch"]
    assert params(faust.Table.on_recovery_completed) == ["active_tps", "standby_tps"]
    assert params(GlobalTable.partition_for_key) == ["key"]


def test_the_router_names_hosts_by_url_identity_and_lists_table_metadata():
    from faust.app.router import Router
    from yarl import URL

    assert params(Router._urlident) == ["url"]
    assert Router._urlident(None, URL("http://10.0.0.1:6066")) == ("10.0.0.1", 6066)
    assert params(Router.table_metadata) == ["table_name"]


def test_an_agent_stream_exposes_its_channel_queue():
    async def run() -> None:
        app = faust.App("sendgate-internals-test", autodiscover=False, web_enabled=False)
        stream = app.stream(app.channel())
        queue = faust_internals.channel_queue(stream)
        assert hasattr(queue, "get") and hasattr(queue, "get_nowait") and hasattr(queue, "empty")

    asyncio.run(run())


def test_keep_recovery_end_keeps_an_end_signalled_before_the_recovery_waits_for_it():
    """Faust's changelog reader (`_slurp_changelogs`, run here as it is) reads the record that
    catches the tables up before the recovery task waits: Faust alone sets the end and clears it
    at its next loop, and the recovery would wait for ever; kept, the wait returns at once. A
    recovery that starts after it clears it."""
    from faust.tables.recovery import Recovery

    class Table:
        recovery_buffer_size = 1

        def __init__(self) -> None:
            self.applied: list[int] = []

        async def on_changelog_event(self, event) -> None:
            pass

        def apply_changelog_batch(self, batch) -> None:
            self.applied += [e.message.offset for e in batch]

    class Message:
        tp, offset = TP("t-state-changelog", 0), 0

    class Event:
        message = Message()

    async def ended_when_the_reader_went_round(keep: bool) -> tuple[bool, bool, bool]:
        app = faust.App(f"test-recovery-end-{keep}", broker="kafka://127.0.0.1:1", store="memory://")
        recovery = app.tables.recovery
        if keep:
            faust_internals.keep_recovery_end(app)
        table = Table()
        recovery.active_tps.add(Message.tp)
        recovery.tp_to_table[Message.tp] = table
        recovery.active_highwaters[Message.tp], recovery.active_offsets[Message.tp] = 0, -1
        recovery._set_recovery_started()  # the recovery task, before it resumes the changelogs
        app.tables.changelog_queue.put_nowait(Event())
        reader = asyncio.ensure_future(Recovery._slurp_changelogs(recovery))
        for _ in range(1000):  # the reader's own steps, no time: it waits on its queue once done
            await asyncio.sleep(0)
            if table.applied and not recovery.in_recovery:
                break
        ended = recovery.signal_recovery_end.is_set()  # what the recovery task's wait now finds
        recovery._set_recovery_started()  # the next recovery
        reader.cancel()
        return table.applied == [0], ended, recovery.signal_recovery_end.is_set()

    assert asyncio.run(ended_when_the_reader_went_round(False))[:2] == (True, False)  # lost: Faust alone
    assert asyncio.run(ended_when_the_reader_went_round(True)) == (True, True, False)


def test_keep_fetched_changelog_keeps_the_standby_records_on_a_resume_and_clears_them_on_a_revocation():
    """Faust alone: resuming the flow (as `Recovery.on_recovery_completed` does after the standby
    partitions were resumed) clears the changelog queue, records fetched and never read. Kept:
    the resume leaves the standby partitions' records, in order, and still clears the active
    ones and the streams' queues; a revocation's clear clears them all."""
    from faust.tables.recovery import Recovery

    assert "self.app.flow_control.resume()" in inspect.getsource(Recovery.on_recovery_completed)
    standby, active = TP("t-state-changelog", 1), TP("t-state-changelog", 0)

    class Message:
        def __init__(self, tp: TP, offset: int) -> None:
            self.tp, self.offset = tp, offset

    class Event:
        def __init__(self, tp: TP, offset: int) -> None:
            self.message = Message(tp, offset)

    def after(keep: bool) -> tuple[list[tuple[int, int]], int, int]:
        app = faust.App(
            f"test-keep-changelog-{keep}",
            broker="kafka://127.0.0.1:1",
            store="memory://",
            autodiscover=False,
            web_enabled=False,
        )
        if keep:
            faust_internals.keep_fetched_changelog(app)
        app.tables.recovery.standby_tps.add(standby)
        changelog, stream = app.tables.changelog_queue, faust_internals.channel_queue(app.stream(app.channel()))
        for tp, offset in ((standby, 5), (active, 7), (standby, 6)):
            changelog.put_nowait(Event(tp, offset))
        stream.put_nowait("fetched")
        app.flow_control.resume()
        resumed = [(e.message.tp.partition, e.message.offset) for e in list(changelog._queue)]
        app.flow_control.clear()  # App._on_partitions_revoked
        return resumed, stream.qsize(), changelog.qsize()

    assert after(False) == ([], 0, 0)  # Faust alone: the standby records are gone at the resume
    assert after(True) == ([(1, 5), (1, 6)], 0, 0)


def test_keep_paused_on_buffer_drop_keeps_a_rebalance_s_pause_when_a_full_stream_buffer_drains():
    """The fault soak's path to deciding during a recovery: an agent stuck on a full disk lets its
    queue fill, so Faust stops fetching the partition and leaves a callback to fetch it again once
    the queue drains. A rebalance pauses the partition and clears the queue (`App._on_partitions_
    revoked` and `_on_partitions_assigned`), but the callback stays, and the agent's next `get`
    from the empty queue runs it. Faust alone: the partition is fetched again while the tables
    recover. Kept: it stays paused until the recovery resumes it; one not paused is fetched again."""
    from faust.transport.conductor import ConductorCompiler

    assert "consumer_on_buffer_drop = app.consumer.on_buffer_drop" in inspect.getsource(ConductorCompiler.build)
    assert "self._paused_partitions.intersection_update(assigned)" in inspect.getsource(Consumer.on_partitions_assigned)
    paused, other = TP("events", 0), TP("events", 1)

    async def active_after(keep: bool) -> tuple[set[TP], set[TP]]:
        app = faust.App(
            f"test-keep-paused-{keep}", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False
        )  # never started: no broker needed
        if keep:
            faust_internals.keep_paused_on_buffer_drop(app)
        consumer = app.consumer
        consumer._set_active_tps({paused, other})
        queue = faust_internals.channel_queue(app.stream(app.channel()))
        drops = {tp: consumer.on_buffer_drop for tp in (paused, other)}  # as the conductor's handlers bind it
        for i in range(queue.pressure_high_size + 1):  # the agent takes nothing: the queue fills
            for tp in (paused, other):
                queue.put_nowait_enhanced(
                    i,
                    on_pressure_high=lambda tp=tp: consumer.on_buffer_full(tp),
                    on_pressure_drop=lambda tp=tp: drops[tp](tp),
                )
        consumer.pause_partitions({paused})  # a rebalance: paused until the tables have recovered
        app.flow_control.clear()
        get = asyncio.ensure_future(queue.get())  # the agent's next batch
        await asyncio.sleep(0)
        recovering = set(consumer._get_active_partitions())
        get.cancel()
        consumer.resume_partitions({paused})  # the end of the recovery
        return recovering, set(consumer._get_active_partitions())

    assert asyncio.run(active_after(False)) == ({paused, other}, {paused, other})  # Faust alone
    assert asyncio.run(active_after(True)) == ({other}, {paused, other})


@pytest.mark.parametrize(
    "name",
    [
        "commit_at",
        "committed_offset",
        "inner_producer",
        "channel_queue",
        "processing",
        "keep_recovery_end",
        "keep_fetched_changelog",
        "keep_paused_on_buffer_drop",
        "raw_reader",
        "route_to_owner",
        "standby_read_to",
        "read_standby_from",
        "rewind_standbys",
        "flush_recovery_buffers",
    ],
)
def test_the_module_offers_each_internal(name):
    assert callable(getattr(faust_internals, name))


def test_the_worker_sets_up_its_spinner_in_the_hook_lifecycle_overrides():
    # streams/worker/lifecycle.py drops the spinner there: with it Faust sets the root logger to DEBUG
    assert params(faust.Worker.on_setup_root_logger) == ["logger", "level"]
    assert "if self.spinner:" in inspect.getsource(faust.Worker._setup_spinner_handler)


def test_the_drain_loop_races_each_record_against_the_flow_suspension_with_wait_first():
    # dispatch_inline replaces exactly this call, recognised by its arguments
    source = inspect.getsource(Consumer._drain_messages)
    assert "await self.wait_first(\n" in source and "callback(message), self.suspend_flow.wait()" in source
    assert "self.suspend_flow = Event()" in inspect.getsource(Consumer.__init__)
    from faust.transport import consumer as consumer_module

    assert consumer_module.Event is asyncio.Event
    for name in ("flow_active", "should_stop"):
        assert name in inspect.getsource(Consumer) or hasattr(Consumer, name), name
    from faust.transport.conductor import Conductor

    assert "self._topics = set()" in inspect.getsource(Conductor.__init__)
    compiled = inspect.getsource(faust.transport.conductor.ConductorCompiler.build)
    for step in (
        "await acquire_flow_control()",
        "await wait_until_producer_ebb()",
        "queue.put_nowait_enhanced(",
        "if queue.full():",
    ):
        assert step in compiled, step


def test_dispatch_inline_awaits_the_record_inline_only_when_nothing_can_block():
    class Channel:
        def __init__(self) -> None:
            self.queue = asyncio.Queue(maxsize=1)

    class Topics:
        _topics = {Channel()}

    raced = []

    class FakeConsumer:
        flow_active, should_stop = True, False

        def __init__(self) -> None:
            self.suspend_flow = asyncio.Event()

        async def wait_first(self, *coros, timeout=None):
            raced.append(coros)
            for coro in coros:
                coro.close()

    class App:
        consumer, topics = FakeConsumer(), Topics()

    async def handled(log: list) -> str:
        log.append("ran")
        return "done"

    async def run() -> None:
        faust_internals.dispatch_inline(App)
        consumer, log = App.consumer, []
        result = await consumer.wait_first(handled(log), consumer.suspend_flow.wait())
        assert result.results == ["done"] and log == ["ran"] and not raced
        next(iter(Topics._topics)).queue.put_nowait(1)  # a full queue: Faust's race decides
        await consumer.wait_first(handled(log), consumer.suspend_flow.wait())
        assert len(raced) == 1
        next(iter(Topics._topics)).queue.get_nowait()
        consumer.suspend_flow.set()  # a rebalance stopped the flow
        await consumer.wait_first(handled(log), consumer.suspend_flow.wait())
        assert len(raced) == 2 and log == ["ran"]

    asyncio.run(run())


def test_rows_with_prefix_seeks_each_active_rocksdb_store(tmp_path):
    import rocksdict
    from faust.stores.rocksdb import Store as RocksStore

    assert params(RocksStore._dbs_for_actives) == [] and "use_rocksdict" in inspect.getsource(RocksStore.__init__)
    dbs = []
    for p, keys in enumerate([[b"s:a", b"t:b", b"t:a", b"u:x"], [b"c:1", b"t:\xff", b"tt"]]):
        db = rocksdict.Rdict(str(tmp_path / f"p{p}"), options=rocksdict.Options(raw_mode=True))
        for k in keys:
            db[k] = b"v" + k
        dbs.append(db)

    class Data:
        use_rocksdict = True

        def _dbs_for_actives(self):
            return iter(dbs)

    class Table:
        data = Data()

    try:
        assert list(faust_internals.rows_with_prefix(Table, b"t:")) == [
            (b"t:a", b"vt:a"),
            (b"t:b", b"vt:b"),
            (b"t:\xff", b"vt:\xff"),
        ]
    finally:
        for db in dbs:
            db.close()


def test_recovery_starts_a_partition_from_its_offset_in_memory_unless_the_store_has_one():
    """`forget_recovery_offset`: Faust's recovery keeps its offsets by tp, and at a rebalance takes
    the store's persisted offset, or keeps the one in memory when the store has none."""
    from faust.tables.recovery import Recovery

    source = inspect.getsource(Recovery._add)
    assert "persisted_offset" in source and "offsets.setdefault(tp, None)" in source
    assert "self.active_offsets = Counter()" in inspect.getsource(Recovery.__init__)
    assert "self.standby_offsets = Counter()" in inspect.getsource(Recovery.__init__)


def test_recovery_takes_a_standby_s_records_past_its_offset_and_applies_them_a_buffer_at_a_time():
    """`rewind_standbys`, `read_standby_from`, `flush_recovery_buffers`: Faust's recovery loop takes
    a record only past the offset it keeps for its tp, buffers it, hands the buffer to the table
    at `standby_buffer_size`, and the consumer's `seek_wait` moves a partition's position."""
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

    slurp = inspect.getsource(Recovery._slurp_changelogs.fun)
    assert "if seen_offset is None or offset > seen_offset:" in slurp
    assert "table.apply_changelog_batch(buf)" in slurp and "table.standby_buffer_size" in slurp
    assert "table.apply_changelog_batch(buffer)" in inspect.getsource(Recovery.flush_buffers)
    assert "consumer.seek(tp, offset)" in inspect.getsource(AIOKafkaConsumerThread._seek_wait)
    assert callable(Consumer.seek_wait)
    drain = inspect.getsource(Consumer._drain_messages)
    assert "if r_offset is None or offset >= r_offset:" in drain and "set_read_offset(tp, offset)" in drain


def test_the_rocksdb_store_keeps_its_open_databases_by_partition_and_they_report_their_memory(tmp_path):
    """`store_memory_bytes` reads the properties of the databases in `RocksDBStore._dbs`."""
    from faust.stores.rocksdb import Store
    from rocksdict import Options, Rdict

    assert "self._dbs[partition]" in inspect.getsource(Store._db_for_partition)
    db = Rdict(str(tmp_path / "db"), options=Options(raw_mode=True))
    try:
        db[b"k"] = b"v" * 1000
        assert db.property_int_value("rocksdb.cur-size-all-mem-tables") > 1000
        assert db.property_int_value("rocksdb.estimate-table-readers-mem") is not None
        assert db.property_int_value("rocksdb.block-cache-usage") is not None
    finally:
        db.close()
