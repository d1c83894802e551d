"""Every private faust-streaming internal the worker relies on, in one place.

The worker goes around Faust where Faust's per-event paths cost more than the gate (profiled:
bench/run --profile) and where Faust's routing assumes Java's partitioner. What it touches is
not Faust's public API, so pyproject.toml pins the tested range (faust-streaming 0.15.x) and
tests/unit/streams/worker/test_faust_internals.py fails loudly when an upgrade changes one of them.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from faust.stores.base import SerializedStore
from faust.streams import _current_event  # Faust routes table writes by the event being processed
from faust.types import TP, EventT
from mode.services import WaitResults
from yarl import URL

TESTED = "0.15"  # the faust-streaming minor version these internals were read from


def committed_offset(app: Any, tp: TP) -> int | None:
    """Faust's record of the group's committed offset of `tp`: it commits only once every offset
    from there on is acked."""
    return app.consumer._committed_offset.get(tp)


def inner_producer(app: Any) -> Any:
    """Faust's started aiokafka producer (record batches go out through it, not Faust's Topic.send)."""
    return app.producer._ensure_producer()


def assigned(app: Any) -> set[TP]:
    """The topic partitions assigned to this worker (events, changelogs, junk reports)."""
    return set(app.consumer.assignment())


def highwater(app: Any, tp: TP) -> int:
    """The end offset of `tp` as the consumer last fetched it (0 before its first fetch)."""
    return app.consumer.highwater(tp) or 0


def recovery_state(app: Any) -> tuple[bool, int]:
    """(tables recovering, changelog rows left to recover)."""
    recovery = app.tables.recovery
    return not recovery.completed.is_set(), recovery.active_remaining_total()


def channel_queue(stream: Any) -> Any:
    """The queue behind an agent's stream: the agent takes its batches from it itself.
    (`aiter` subscribes the worker to the stream's topic.)"""
    return aiter(stream.channel).queue


@contextmanager
def processing(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event: a table write goes to the changelog partition, and a
    RocksDB read to the database, of the current event's partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def raw_reader(table: Any) -> Callable[[bytes], bytes | None]:
    """The store's raw read (the RocksDB database of the current event's partition): Table.get
    looks a key up twice, and Store.__getitem__ adds serializers and a KeyError per miss."""
    data = table.data
    return data._get if isinstance(data, SerializedStore) else data.data.get


async def route_to_owner(app: Any, table_name: str, partition: int, web: Any, request: Any) -> Any | None:
    """Send a web request on to the worker that holds `partition` of a table, and return its
    answer; None when that is this worker (or no assignment is known yet: answer locally).

    Faust's own `table_route` computes the partition from the key with Java's partitioner; the
    worker finds it from state instead (the apps table and the `h:` rows, checkpoint.py), so it
    asks the assignor's table metadata which host holds that partition. Faust's `Router._route_req` forwards no
    body, so the request goes on here as Faust would send it, with its body (`/sendgate/check`).
    """
    changelog = app.tables[table_name].changelog_topic.get_topic_name()
    router = app.router
    for host, topics in router.table_metadata(table_name).items():
        if partition in topics.get(changelog, ()):
            dest = URL(host)
            if router._urlident(dest) == router._urlident(app.conf.canonical_url):
                return None
            body = await request.read()
            async with app.http_client.request(
                method=request.method,
                headers=request.headers,
                data=body or None,
                url=request.url.with_host(dest.host).with_port(int(dest.port)),
            ) as answer:
                return web.text(await answer.text(), content_type=answer.content_type, status=answer.status)
    return None


_EVENT_WAIT = asyncio.Event.wait.__code__


def dispatch_inline(app: Any) -> None:
    """Hand each fetched record to the conductor inline instead of racing it against the flow's
    suspension in four new tasks (`Service.wait_first`): that race cost more per record than
    deciding a consent-only send (bench/run --profile: ~13 % of the worker's busy time).

    The race matters only when the conductor would block: flow control stopped (a rebalance), a
    full channel queue, or the worker stopping. When none holds, the conductor's handler runs to
    the end without yielding (an uncontended lock, flow and producer checks, the decode, a
    put_nowait), so awaiting it inline has the same outcome; otherwise Faust's own race runs.
    """
    consumer = app.consumer
    race = consumer.wait_first
    channels = app.topics._topics  # the subscribed channels, whose queues the conductor fills

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) == 2
            and timeout is None
            and getattr(coros[1], "cr_code", None) is _EVENT_WAIT
            and consumer.flow_active
            and not consumer.suspend_flow.is_set()
            and not consumer.should_stop
            and not any(channel.queue.full() for channel in channels)
        ):
            coros[1].close()  # the suspension's wait, never started
            return WaitResults([coros[0]], [await coros[0]], False)
        return await race(*coros, timeout=timeout)

    consumer.wait_first = wait_first


def keep_recovery_end(app: Any) -> None:
    """Keep the end of a table recovery signalled until the next recovery starts.

    Faust's recovery task resumes the changelog partitions, starts the fetcher and only then waits
    for `signal_recovery_end`; its changelog reader sets that signal at the record that catches
    the tables up, ends the recovery (`in_recovery` False) and clears the signal at the top of its
    next loop. When the records arrive before the recovery task waits (they are prefetched; the
    first start of the fetcher yields; a loaded machine resumes the task late), the signal is set
    and cleared unseen, and never set again: the worker waits for ever in "Restoring state from
    changelog topics", deciding nothing, with nothing more in its log. A worker whose local
    stores were lost (an empty disk, or removed after kill -9) must read the global tables'
    changelogs, so each such start risked it (the bench's restart after a graceful stop on an
    empty store once decided nothing for 300 s).

    So the reader's clear does nothing, and the signal is cleared where a recovery starts
    (`_set_recovery_started`: at the top of each recovery, and again after its highwaters are
    read, before the changelogs are resumed): a set then belongs to the recovery that waits.
    """
    recovery = app.tables.recovery
    end = recovery.signal_recovery_end
    clear, started = end.clear, recovery._set_recovery_started

    def _set_recovery_started() -> None:
        clear()
        started()

    end.clear = lambda: None
    recovery._set_recovery_started = _set_recovery_started


def keep_fetched_changelog(app: Any) -> None:
    """Keep the standby changelog records already fetched when Faust resumes its flow.

    `app.flow_control.resume()` clears every queue made with `clear_on_resume`, the table
    manager's changelog queue among them. The recovery resumes the standby partitions first and
    resumes the flow again at its end (`Recovery.on_recovery_completed`, after awaiting the
    tables' callbacks and a committed-offset lookup per partition): the standby records fetched
    meanwhile were cleared unread. Nothing fetches them again (the consumer's position is past
    them), and the changelog reader, which only refuses offsets it has seen, takes the next one:
    the standby store never got those rows while its persisted offset moved past them with the
    next commit record. The fault soak lost the first ~170 records after each standby start
    (issue 27), and a worker that later owned those partitions decided from the gap.

    So a resume keeps the queued records of the recovery's standby partitions, in their order.
    The rest goes as before: records of active changelog partitions fetched past the recovery's
    end (this worker writes those partitions now; they were paused once caught up), and records
    of a revoked assignment (also cleared at the revocation, `flow_control.clear()` in
    `App._on_partitions_revoked`, which this leaves alone; each recovery then seeks its
    changelog partitions itself).
    """
    flow = app.flow_control
    resume = flow.resume

    def resume_keeping_standby_records() -> None:
        queue = app.tables.changelog_queue
        if queue not in flow._queues:  # not cleared on resume: nothing to keep
            resume()
            return
        standby = app.tables.recovery.standby_tps
        kept = [event for event in queue._queue if event.message.tp in standby]
        resume()
        queue._queue.extend(kept)  # as mode's own clear: the deque only, the queue's counters untouched

    flow.resume = resume_keeping_standby_records


def keep_paused_on_buffer_drop(app: Any) -> None:
    """Leave a paused partition paused when the stream buffer that was full of its records drains.

    When an agent's queue fills up, Faust stops fetching the partition (`Consumer.on_buffer_full`)
    and registers a callback that starts fetching it again once the queue drains
    (`on_buffer_drop`). That callback also re-activates a partition that a rebalance paused
    in the meantime. Flow control clears the queue but keeps the callback, and the next `get`
    from the empty queue runs it. A rebalance pauses the events partitions until the tables have
    recovered, so the stream then delivered events during the recovery. In the fault soak, a
    worker whose agent had been stuck on a full disk lost its session, got its partitions back,
    and decided 11,000 records over a half-recovered store (`GateWorker.run_batch` also refuses to
    decide during a rebalance). So a paused partition only leaves the buffered set here, and is
    fetched again only when it is resumed.

    Patch before the worker starts: the conductor's handlers keep the callback they were built
    with.
    """
    consumer = app.consumer
    drop = consumer.on_buffer_drop

    def on_buffer_drop(tp: TP) -> None:
        if tp in consumer._paused_partitions:
            consumer._buffered_partitions.discard(tp)
        else:
            drop(tp)

    consumer.on_buffer_drop = on_buffer_drop


def commit_at(app: Any, next_offsets: Mapping[TP, int]) -> None:
    """Have Faust commit each partition of `next_offsets` at the offset given there (the first
    record not yet decided and written), not at the first gap in its own acks.

    Faust's bookkeeping can leave a group's offset behind for ever after a rebalance (the
    two-worker rebalance test failed 1 run in 7 on 2 cores): it drops a partition's acks on
    revocation before the stream's last acks arrive, refuses acks below the offset it believes
    committed, never commits past a hole at the head of its acks, and records a commit the broker
    refused (CommitFailedError in a rebalance) as done. The worker knows exactly how far it has
    decided, so it says so; other partitions keep Faust's own rule."""
    consumer = app.consumer
    new_offset, pending, commit = consumer._new_offset, consumer._filter_tps_with_pending_acks, consumer._commit_offsets

    def _new_offset(tp: TP) -> int | None:
        offset = next_offsets.get(tp)
        if offset is None:
            return new_offset(tp)
        acked = consumer._acked.get(tp)
        if acked:  # the acks the offset covers are done with (Faust trims them only as it commits)
            acked[:] = [o for o in acked if o >= offset]
            consumer._acked_index[tp] = set(acked)
        return offset

    def _filter_tps_with_pending_acks(topics: Any = None) -> Iterator[TP]:
        tps = set(pending(topics))
        tps.update(tp for tp in next_offsets if topics is None or tp in topics or tp.topic in topics)
        return iter(tps)

    async def _commit_offsets(offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        before = {tp: consumer._committed_offset.get(tp) for tp in offsets}
        did_commit = await commit(offsets, start_new_transaction=start_new_transaction)
        if not did_commit:  # Faust records the offsets as committed all the same
            for tp, offset in offsets.items():
                if consumer._committed_offset.get(tp) == offset:
                    consumer._committed_offset[tp] = before[tp]
        return did_commit

    consumer._new_offset = _new_offset
    consumer._filter_tps_with_pending_acks = _filter_tps_with_pending_acks
    consumer._commit_offsets = _commit_offsets


def store_memory_bytes(table: Any) -> int:
    """Memory RocksDB holds outside Python for `table`'s open partition databases: memtables, table
    readers (indexes and filters) and block cache (0 on the memory store)."""
    store = table.data
    if not getattr(store, "use_rocksdict", False):
        return 0
    total = 0
    for db in list(store._dbs.values()):
        for name in (
            "rocksdb.cur-size-all-mem-tables",
            "rocksdb.estimate-table-readers-mem",
            "rocksdb.block-cache-usage",
        ):
            total += db.property_int_value(name) or 0
    return total


def forget_recovery_offset(app: Any, tp: TP) -> None:
    """Make Faust's next recovery read changelog partition `tp` from the store's persisted offset,
    or from the beginning without one: it keeps the offset it last read to when the store has none."""
    recovery = app.tables.recovery
    recovery.active_offsets.pop(tp, None)
    recovery.standby_offsets.pop(tp, None)


def standby_read_to(app: Any, tp: TP) -> int | None:
    """The changelog offset Faust's recovery has read standby partition `tp` to (None: not yet)."""
    return app.tables.recovery.standby_offsets.get(tp)


def read_standby_from(app: Any, tp: TP, offset: int) -> None:
    """Make Faust take standby partition `tp`'s records past `offset` again: its recovery takes only
    those past the offset it last read to, and its consumer drops those below the last it handed on."""
    app.tables.recovery.standby_offsets[tp] = offset
    app.consumer._read_offset[tp] = offset if offset > 0 else None


def flush_recovery_buffers(app: Any) -> None:
    """Apply the changelog records Faust's recovery holds in its buffers (it applies a standby's
    `standby_buffer_size` at once, and the rest at a rebalance)."""
    app.tables.recovery.flush_buffers()


async def rewind_standbys(app: Any, offsets: Mapping[TP, int]) -> None:
    """Read standby changelog partitions again from `offsets` (each the last offset the local store
    holds), as Faust's recovery does at a rebalance: the consumer seeks there, and recovery takes
    the records past it. Records fetched before the seek still arrive first (`StateTable._rewinds`)."""
    for tp, offset in offsets.items():
        read_standby_from(app, tp, offset)
    await app.consumer.seek_wait({tp: max(offset, 0) for tp, offset in offsets.items()})


def rows_with_prefix(table: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The rows of `table` on this worker's active partitions whose key starts with `prefix`: in
    RocksDB one seek per partition store (keys are sorted), not a scan of every row; in the
    memory store (tests, a few rows) a scan."""
    store = table.data
    if getattr(store, "use_rocksdict", False):
        for db in store._dbs_for_actives():
            for key, value in db.items(from_key=prefix):
                if not key.startswith(prefix):
                    break
                yield key, value
        return
    read = raw_reader(table)
    for key in list(table.keys()):
        if key.startswith(prefix):
            yield key, read(key)


_ALIVE_AT = "_sendgate_alive_at"


def _record_alive(method: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent_at = time.monotonic()  # the broker received the request after this: its session runs from then
        ok = await method(self, *args, **kwargs)
        if ok:
            setattr(self, _ALIVE_AT, sent_at)
        return ok

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def member_alive_at(app: Any) -> Callable[[], float | None]:
    """A function giving when (time.monotonic()) the group coordinator last confirmed this worker a
    member of its group: the send time of its last successful heartbeat or join (None before the
    first). aiokafka keeps that time in a local variable of its heartbeat routine, so the
    coordinator's `_do_heartbeat` and `_do_rejoin_group` are wrapped (once, for the class) to
    record it. It runs on the consumer's thread; a float is read across threads safely."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    for name in ("_do_heartbeat", "_do_rejoin_group"):
        method = getattr(GroupCoordinator, name)
        if not hasattr(method, "__wrapped__"):
            setattr(GroupCoordinator, name, _record_alive(method))

    def alive_at() -> float | None:
        consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
        return getattr(getattr(consumer, "_coordinator", None), _ALIVE_AT, None)

    return alive_at
