"""The Faust application: topics, tables, the gate agent and the ticker.

`build_worker` wires the pure `Gate` (sendgate.models.gate) to Kafka. It holds no rule of its own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.types import TP

from sendgate.models.decisions import ConsentRecord, Decision, GrantRevocation, JunkShare
from sendgate.models.events import InvalidEvent, Refusal, event_type
from sendgate.models.gate import Gate
from sendgate.models.sources import WORKER, KeyringError

from ..kafka import partitions_of
from ..config import ConfigError, Settings
from ..logs import faust_logging_config
from ..kafka import committed_offsets, read_log
from .outbox import Headers, Outbox, partition_for
from .faust_internals import (
    assigned,
    channel_queue,
    commit_at,
    committed_offset,
    dispatch_inline,
    highwater,
    inner_producer,
    keep_fetched_changelog,
    keep_recovery_end,
    member_alive_at,
    recovery_state,
)
from .metrics import BatchTally, GateMetrics
from .checkpoint import APPS, STATE, CheckpointStore, GlobalIndexTable, StateTable
from .operations import register_operations
from .web import OperatorDoor, register_views

log = logging.getLogger("sendgate.worker")

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0  # backoff of a failing batch
STALL_EXIT_CODE = 70  # EX_SOFTWARE: the worker stopped because a batch kept failing
STALL_GRACE_S = 30.0  # how long the graceful stop may take before the process exits anyway
PRODUCE_TIMEOUT_S = 60.0  # a batch's send not acknowledged by then fails the batch (it is decided again)
SLOW_BATCH_S = 30.0  # a batch deciding this long is logged with where the agent waits
QUIET_CHECK_S = 1.0  # how often the worker looks for partitions whose records Faust does not deliver
QUIET_HOLE_S = 2.0  # records that long behind the partition's end, with the agent idle, are read from Kafka
QUIET_FILL_MAX = 10_000  # records read so at most in one batch (the rest at the next check)

RAW = dict(key_type=bytes, value_type=bytes)  # the app's default serializers are "raw"


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


@dataclass(eq=False)  # hashed by identity, as Faust's consumer keeps messages in sets
class LoggedMessage:
    """The parts of a Faust message the worker reads, for records read from Kafka directly."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: float  # seconds, as Faust gives it
    headers: tuple = ()
    acked: bool = False

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class LoggedEvent:
    message: LoggedMessage
    value: bytes | None


@dataclass(frozen=True)
class QuietHoles:
    """Put in the agent's queue by `GateWorker.check_quiet_partitions`: events partitions whose
    records after `_seen` Faust has not delivered, to be read from Kafka by the agent itself."""

    partitions: tuple[TP, ...]


class MembershipLapsed(Exception):
    """The worker cannot be sure it still owns its partitions (`GateWorker.check_membership`)."""


@dataclass
class GateWorker:
    settings: Settings
    faust: faust.App  # the Faust application: group, tables, agents (not a tenant)
    gate: Gate
    store: CheckpointStore
    events: Any
    decisions: Any
    deadletter: Any
    consent: Any  # the consent audit trail
    grants: Any  # sendgate's revocations of unrestricted grants, for operators
    _delivery_topics: dict[str, Any] = field(default_factory=dict)
    _seen: dict[int, int] = field(default_factory=dict)  # partition -> last offset the stream delivered
    next_offsets: dict[TP, int] = field(default_factory=dict)  # events partition -> offset to commit (commit_at)
    outbox: Outbox = field(default_factory=Outbox)
    stalled: bool = False  # set when a failing batch stopped the worker (exit code STALL_EXIT_CODE)
    failing_since: float | None = None  # monotonic time the current batch began to fail
    agent_running: bool = False
    tally: BatchTally = field(default_factory=BatchTally)
    metrics: GateMetrics = field(init=False)
    _unacked: list[Any] = field(default_factory=list)  # records read to fill a hole, acked with their batch
    deciding_since: float | None = None  # monotonic time the batch being decided began
    _reported_slow: bool = False
    agent_task: asyncio.Task | None = None
    queue: Any = None  # the agent's queue (streams.faust_internals.channel_queue)
    _quiet: dict[int, tuple[int, int, float]] = field(default_factory=dict)  # partition -> (seen, end, since)
    # when the group coordinator last confirmed this worker a member (faust_internals.member_alive_at)
    alive_at: Callable[[], float | None] = lambda: None
    revocations: int = 0  # rebalances that revoked this worker's partitions (a failing batch spanning one is dropped)
    events_partitions: list[int] = field(
        default_factory=list
    )  # every partition of the events topic (junk shares go to each)

    def __post_init__(self) -> None:
        self.metrics = GateMetrics(
            self.settings.metrics_networks,
            self.status_now,
            self.gate.keyring is not None,
            topic_partitions=self.settings.partitions,
        )

    def not_ready(self) -> list[str]:
        """Why the worker should not get traffic yet (empty: ready), for /readyz and the metrics."""
        reasons = []
        in_progress, remaining = recovery_state(self.faust)
        if in_progress:
            reasons.append(f"recovering tables: {remaining} changelog row(s) left")
        if self.faust.rebalancing:
            reasons.append("a rebalance is in progress")
        if not self.agent_running:
            reasons.append("the gate agent is not running")
        if self.failing_since is not None:
            reasons.append(f"a batch has been failing for {time.monotonic() - self.failing_since:.0f} s")
        return reasons

    def status_now(self) -> dict[str, Any]:
        """What is read at scrape time: offsets and lag per assigned events partition, pending
        requests, the earliest due release, recovery and readiness."""
        events_topic = self.events.get_topic_name()
        partitions = []
        for tp in sorted(assigned(self.faust)):
            if tp.topic != events_topic:
                continue
            end = highwater(self.faust, tp)
            committed = committed_offset(self.faust, tp) or 0
            partitions.append(
                {"partition": tp.partition, "end": end, "committed": committed, "lag": max(0, end - committed)}
            )
        next_due = min(self.store.due.values(), default=None)
        in_progress, remaining = recovery_state(self.faust)
        return {
            "partitions": partitions,
            "pending": sum(self.store.held.values()),
            "next_due": next_due,
            "overdue_s": max(0.0, time.time() - next_due / 1000) if next_due is not None else 0.0,
            "recovering": in_progress,
            "recovery_remaining": remaining,
            "rebalancing": bool(self.faust.rebalancing),
            "reasons": self.not_ready(),
        }

    async def process_batch(self, batch: list[Any], quiet: tuple[TP, ...] = ()) -> None:
        """Decide a batch of records of sendgate.events; never raises for bad input. `quiet`:
        partitions whose records up to their end are read from Kafka first (`QuietHoles`).

        Outputs first, state second (see streams/worker/checkpoint.py): the batch's decisions, deliveries and
        dead letters are acknowledged by the broker before its rows and commit records are written.
        """
        sent: list[Any] = []
        filled: list[LoggedMessage] = []
        self.tally = tally = BatchTally()
        started = time.perf_counter()
        owned = assigned(self.faust) if quiet else set()
        for tp in quiet:
            if tp not in owned:  # moved since it was found: its new owner reads it
                continue
            seen = await self.seen_before(tp)
            end = min(highwater(self.faust, tp), seen + 1 + QUIET_FILL_MAX)
            if end > seen + 1:
                found = await self.fill_hole(tp, seen + 1, end, sent)
                filled += found
                if found:
                    self._seen[tp.partition] = max(seen, found[-1].offset)
        for event in batch:
            message = event.message
            seen = self._seen.get(message.partition)
            if seen is None:
                seen = await self.seen_before(message.tp)
            if message.offset > seen + 1:
                filled += await self.fill_hole(message.tp, seen + 1, message.offset, sent)
            self._seen[message.partition] = max(seen, message.offset)
            if message.offset <= self.store.handled(message.partition):
                # Decided before a crash or rebalance, and its rows committed: its outputs are out.
                tally.skipped += 1
                continue
            sent += await self.process(event)
        decided = time.perf_counter()
        if self.faust.in_transaction:
            await asyncio.gather(*sent)
            produced = time.perf_counter()
            await self.store.checkpoint()
        else:
            # The outputs and the rows together; then the commit records, so that the batch is
            # whole on the broker before its events are acked (a clean stop commits all of it).
            producer = inner_producer(self.faust)
            self.store.stage(self.outbox)
            self.check_membership()
            last = await asyncio.wait_for(self.outbox.send(producer), PRODUCE_TIMEOUT_S)
            produced = time.perf_counter()
            self.store.written(last)
            self.store.stage(self.outbox)
            self.check_membership()
            self.store.written(await asyncio.wait_for(self.outbox.send(producer), PRODUCE_TIMEOUT_S))
        tally.durations_s = {
            "decide": decided - started,
            "produce": produced - decided,
            "checkpoint": time.perf_counter() - produced,
        }
        self._unacked.extend(filled)  # the agent acks the batch's own events; these Faust never had

    def check_membership(self) -> None:
        """Write a batch only while the group surely counts this worker a member: its coordinator
        confirmed it less than a session timeout (less a heartbeat interval) ago. A worker frozen
        past its session (SIGSTOP, a stalled VM) may have lost its partitions to another worker
        that already decides and writes them; its late outputs and rows would then be read as the
        truth (docs/guarantees.md, "Zombies"). Raises MembershipLapsed: the batch fails, is dropped
        if its partitions moved, and is decided again (by whoever owns them) otherwise."""
        alive_at = self.alive_at()
        lease_s = self.settings.session_timeout_s - self.settings.heartbeat_interval_s
        if alive_at is None or time.monotonic() - alive_at > lease_s:
            since = "never" if alive_at is None else f"{time.monotonic() - alive_at:.1f} s ago"
            raise MembershipLapsed(
                f"the group last confirmed this worker a member {since}, more than "
                f"{lease_s:.1f} s (session timeout less a heartbeat interval): its partitions may "
                f"have moved, so the batch is not written"
            )

    async def seen_before(self, tp: TP) -> int:
        """The last offset of `tp` the stream delivered; for a partition it has delivered nothing
        of since the rebalance, the group's committed offset - 1, where Faust starts it (its commits
        wait until every offset from there on is acked). Faust may not know the committed offset
        of a partition it was just given: then the broker is asked, once (from 0, a fail-over
        round read 15,400 decided records again)."""
        seen = self._seen.get(tp.partition)
        if seen is None:
            committed = committed_offset(self.faust, tp)
            if committed is None:
                committed = (await committed_offsets(self.settings, self.settings.group_id, tp.topic)).get(
                    tp.partition, 0
                )
            seen = self._seen[tp.partition] = committed - 1
        return seen

    async def fill_hole(self, tp: TP, start: int, end: int, sent: list[Any]) -> list[LoggedMessage]:
        """Read records [start, end) of a partition that the stream skipped from Kafka, and decide
        those not decided yet. Appends the futures of what it sends to `sent`.

        Faust can drop records it fetched while a worker recovered its tables (faust-streaming
        #596); deciding the next one as if they had not existed would lose them and change the
        decisions after them, and Faust would never commit past them.
        """
        found: list[LoggedMessage] = []
        decided = 0
        async for r in read_log(self.settings, tp.topic, {tp.partition: end}, start={tp.partition: start}):
            message = LoggedMessage(tp.topic, r.partition, r.offset, r.key, r.timestamp / 1000, r.headers)
            found.append(message)
            if r.offset > self.store.handled(r.partition):
                decided += 1
                sent += await self.process(LoggedEvent(message, r.value))
        log.warning(
            "the stream skipped %s[%s] offsets %s..%s; read %d record(s) from Kafka and decided %d",
            tp.topic,
            tp.partition,
            start,
            end - 1,
            len(found),
            decided,
        )
        return found

    async def on_recover(self) -> None:
        self._seen.clear()  # partitions may have moved; Faust starts each from the committed offset
        self.next_offsets.clear()
        events_topic = self.events.get_topic_name()
        self.store.keep_unsent_commits({tp.partition for tp in assigned(self.faust) if tp.topic == events_topic})

    def abort(self, seen: dict[int, int]) -> None:
        """Forget a batch that failed half-way: its writes, and how far the stream had got (`seen`,
        as it was before the batch), so that the same batch can be decided again."""
        self.store.abort()
        self.outbox.clear()
        self._seen = seen

    async def run_batch(self, batch: list[Any], quiet: tuple[TP, ...] = ()) -> None:
        """Decide a batch until it succeeds, then ack it to Faust.

        A batch fails when the broker refuses its outputs or rows (after the producer's own
        retries) or something inside the worker fails. None of it then counts; it is decided again
        from the same records, with backoff, without waiting for more records to arrive (a quiet
        partition would wait for ever). If it still fails after `stall_exit_s`, the worker exits
        non-zero (`stall_exit`): an orchestrator restarts it, and a human sees why.
        """
        delay, failing_since, revocations = RETRY_FIRST_S, None, self.revocations
        while True:
            seen = dict(self._seen)
            self.deciding_since, self._reported_slow = time.monotonic(), False
            try:
                await self.process_batch(batch, quiet)
                self.deciding_since = None
                break
            except Exception as exc:
                self.deciding_since = None
                self.abort(seen)
                self.metrics.batch_failed()
                lost = {(e.message.topic, e.message.partition) for e in batch} - {
                    (tp.topic, tp.partition) for tp in assigned(self.faust)
                }
                if lost:  # revoked meanwhile: the new owner decides these records; retrying would be a zombie
                    log.warning(
                        "a failing batch of %s is dropped: partition(s) %s moved to another worker",
                        _where(batch),
                        sorted(p for _, p in lost),
                    )
                    self.failing_since = None
                    return
                if self.revocations != revocations:
                    # Its partitions moved and came back (a worker frozen past its session): another
                    # worker may have decided these records meanwhile, and the tables recover its
                    # writes only now. Faust delivers the records again from the committed offsets.
                    log.warning(
                        "a failing batch of %s is dropped: a rebalance since it began (its records are "
                        "delivered again once the tables have recovered)",
                        _where(batch),
                    )
                    self.failing_since = None
                    return
                now = time.monotonic()
                failing_since = self.failing_since = failing_since or now
                where = _where(batch)
                if now - failing_since >= self.settings.stall_exit_s:
                    log.critical(
                        "a batch of %s has failed for %.0f s (SENDGATE_STALL_EXIT_S); the worker stops: %s: %s",
                        where,
                        now - failing_since,
                        type(exc).__name__,
                        exc,
                    )
                    self.stall_exit()
                    return
                log.error(
                    "a batch of %s failed (%s: %s); deciding it again in %.1f s (the worker exits after "
                    "%.0f s of failures)",
                    where,
                    type(exc).__name__,
                    exc,
                    delay,
                    self.settings.stall_exit_s,
                    exc_info=not isinstance(exc, (KafkaError, MembershipLapsed)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self.metrics.batch_done(self.tally, len(batch))
        if failing_since is not None:
            self.failing_since = None
            log.warning(
                "the batch of %s succeeded after %.1f s of failures", _where(batch), time.monotonic() - failing_since
            )
        # Every offset up to `_seen` is now decided (or dead-lettered, or was decided before) and
        # its commit records are written: the group may commit past it. The events are acked too,
        # so that Faust's stream and its waits for a rebalance see them done.
        events_topic, owned = self.events.get_topic_name(), assigned(self.faust)
        for partition, seen in self._seen.items():
            tp = TP(events_topic, partition)
            if tp in owned and seen + 1 > self.next_offsets.get(tp, 0):
                self.next_offsets[tp] = seen + 1
        acks, self._unacked = self._unacked + list(batch), []
        self.ack(acks)

    def check_quiet_partitions(self) -> None:
        """Find events partitions with records Faust has not delivered while the agent is idle,
        and have the agent read them from Kafka (`QuietHoles`).

        `fill_hole` reads records Faust dropped (faust-streaming #596) when a later record shows
        the gap. After a rebalance nothing later may come: a survivor then held the killed
        worker's last records undecided until the app's next event (the bench's fail-over round
        saw minutes). So a partition whose end has stayed past the last record seen for
        QUIET_HOLE_S, with the agent idle and nothing queued, is read directly."""
        if (
            not self.agent_running
            or self.deciding_since is not None
            or self.queue is None
            or not self.queue.empty()
            or self.faust.rebalancing
            or recovery_state(self.faust)[0]
        ):
            self._quiet.clear()
            return
        now, events_topic, holes = time.monotonic(), self.events.get_topic_name(), []
        for tp in assigned(self.faust):
            if tp.topic != events_topic:
                continue
            seen = self._seen.get(tp.partition, (committed_offset(self.faust, tp) or 0) - 1)
            end = highwater(self.faust, tp)
            if end <= seen + 1:
                self._quiet.pop(tp.partition, None)
                continue
            was = self._quiet.get(tp.partition)
            if was is None or was[:2] != (seen, end):
                self._quiet[tp.partition] = (seen, end, now)
            elif now - was[2] >= QUIET_HOLE_S:
                holes.append(tp)
                del self._quiet[tp.partition]
        if holes:
            self.queue.put_nowait(QuietHoles(tuple(sorted(holes))))

    def report_slow_batch(self) -> None:
        """Log a batch that has been deciding for SLOW_BATCH_S, with the awaits the agent is in: a
        wait that never ends must not stall the worker in silence."""
        since = self.deciding_since
        if since is None or self._reported_slow or time.monotonic() - since < SLOW_BATCH_S:
            return
        self._reported_slow = True
        log.warning(
            "a batch has been deciding for %.0f s; the gate agent waits in:\n%s",
            time.monotonic() - since,
            awaiting(self.agent_task),
        )

    def ack(self, events: list[Any]) -> None:
        """Ack events, or messages read from Kafka directly (Faust never had those). Unfiltered:
        during a rebalance the consumer's assignment can be empty, and an ack dropped then is an
        offset never committed."""
        for event in events:
            message = getattr(event, "message", event)
            if isinstance(message, LoggedMessage):
                self.faust.consumer.ack(message)
            else:
                event.ack()

    def stall_exit(self) -> None:
        """Stop the worker with a non-zero exit code: gracefully (SIGTERM: commit what was acked)
        if it can, or at once after a grace period."""
        self.stalled = True
        os.kill(os.getpid(), signal.SIGTERM)
        timer = threading.Timer(STALL_GRACE_S, os._exit, args=(STALL_EXIT_CODE,))
        timer.daemon = True
        timer.start()

    async def process(self, event: Any) -> list[Any]:
        """Decide one record. Its outputs wait in the outbox (under exactly_once they are sent at
        once, and their futures returned).

        Only a record the decoder refuses is dead-lettered. Any other exception (a bug, a corrupt
        row, a store failure) is not the record's fault: it fails the batch, which is retried and,
        if it keeps failing, stops the worker (`run_batch`), so a valid request is never parked.
        """
        message, value = event.message, event.value
        record_ts = round(message.timestamp * 1000) if message.timestamp else 0  # Faust gives float seconds
        try:
            decoded = self.gate.admit(
                message.key, value, record_ts, message.partition, self.store.home, message.headers, self.store
            )
        except InvalidEvent as exc:
            if exc.code == Refusal.SPLIT_APP:  # its producers' fault, and the operator's to fix
                log.error("%s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
            return await self.dead_letter(message, value, str(exc), exc.code, getattr(exc, "rule", None))
        self.tally.count(event_type(decoded), record_ts)
        with self.store.handling(event):
            records = self.gate.handle(decoded, self.store, record_ts)
        sent = []
        for record in records:
            self.tally.output(record)
            if isinstance(record, Decision):
                topic = self.decisions
            elif isinstance(record, ConsentRecord):
                topic = self.consent
            elif isinstance(record, GrantRevocation):
                # into the app's own log (its home partition, where this event is), where it takes
                # effect when it is decided; and to the operators' topic
                # (its record timestamp is its event time: the decoder bounds how far ts may run ahead of it)
                revoke = record.policy_event()
                sent += await self.send(
                    self.events,
                    record.app.encode(),
                    revoke,
                    message.partition,
                    record.ts,
                    self.signed(revoke, record.ts),
                )
                topic = self.grants
            elif isinstance(record, JunkShare):
                # into every partition's log, where each partition's junk index counts it (models/junk.py)
                share = record.to_json()
                headers = self.signed(share, record.ts)
                for partition in self.events_partitions:
                    sent += await self.send(self.events, record.app.encode(), share, partition, record.ts, headers)
                continue
            else:
                topic = await self.delivery_topic(record.network)
            sent += await self.send(topic, record.app.encode(), record.to_json())
        return sent

    async def send(
        self,
        topic: Any,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers = None,
    ) -> list[Any]:
        """Queue one output record for the batch's outbox (to `partition`, else by key; with the
        producer's timestamp unless given); under exactly_once, send it now through Faust
        (Topic.send puts it in its partition's transaction) and return its future."""
        if self.faust.in_transaction:
            return [
                await topic.send(
                    key=key,
                    value=value,
                    partition=partition,
                    headers=headers,
                    timestamp=None if timestamp_ms is None else timestamp_ms / 1000,
                )
            ]
        self.outbox.add(topic.get_topic_name(), key, value, partition, timestamp_ms, headers)
        return []

    def signed(self, value: bytes, at_ms: int) -> Headers:
        """The headers that sign a record the worker appends to the events topic (a tick, a
        revocation) with its keyring's worker key; none with SENDGATE_AUTH=off."""
        keyring = self.gate.keyring
        return None if keyring is None else keyring.signing_key(WORKER, at_ms).headers(value)

    async def delivery_topic(self, network: str) -> Any:
        topic = self._delivery_topics.get(network)
        if topic is None:
            # `network` is validated ([a-z0-9_-]{1,32}) so it cannot name an unexpected topic.
            topic = self.faust.topic(
                self.settings.topic(f"deliveries.{network}"), partitions=self.settings.partitions, **RAW
            )
            await topic.maybe_declare()
            await partitions_of(self.settings, topic.get_topic_name(), 60)
            self._delivery_topics[network] = topic
        return topic

    async def dead_letter(
        self, message: Any, value: bytes | None, error: str, code: Refusal, rule: str | None = None
    ) -> list[Any]:
        self.tally.dead_letter(code, rule)
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)
        # with the record's own headers (its signature): `sendgate deadletter republish` sends it back as it came
        return await self.send(
            self.deadletter,
            message.key,
            dead_letter_record(message, value, error, code),
            headers=list(message.headers or ()) or None,
        )


def awaiting(task: asyncio.Task | None) -> str:
    """The chain of awaits a task is suspended in, innermost last (Task.get_stack shows only the
    outermost coroutine)."""
    lines, coro = [], task.get_coro() if task is not None else None
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frame = coro.cr_frame
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = coro.cr_await
    if coro is not None:
        lines.append(f"  on {coro!r}"[:300])
    return "\n".join(lines) or "  (not suspended)"


def _where(batch: list[Any]) -> str:
    """Where a batch's records are, for error messages: topic[partition]@first..last per partition."""
    spans: dict[tuple[str, int], list[int]] = {}
    for event in batch:
        m = event.message
        span = spans.setdefault((m.topic, m.partition), [m.offset, m.offset])
        span[0], span[1] = min(span[0], m.offset), max(span[1], m.offset)
    return f"{len(batch)} event(s) at " + ", ".join(
        f"{topic}[{partition}]@{first}" + (f"..{last}" if last != first else "")
        for (topic, partition), (first, last) in sorted(spans.items())
    )


def dead_letter_record(message: Any, value: bytes | None, error: str, code: Refusal) -> bytes:
    """The dead-letter topic's value for a record: the reason, its code, where it was, and the record itself."""
    doc: dict[str, Any] = {
        "error": error,
        "code": code,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    for name, data in (("key", message.key), ("raw", value)):
        text, is_base64 = _text_or_b64(data)
        doc[name] = text
        if is_base64:
            doc[f"{name}_encoding"] = "base64"  # bytes that are not UTF-8 are kept, not mangled
    return orjson.dumps(doc)


def _text_or_b64(data: bytes | None) -> tuple[str | None, bool]:
    if data is None:
        return None, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), True


def build_worker(settings: Settings, *, ticker: bool = True) -> GateWorker:
    policy = settings.policy()
    gate = settings.gate(policy)  # refuses to start without a keyring unless SENDGATE_AUTH=off
    if gate.keyring is None:
        log.warning(
            "SENDGATE_AUTH=off: records are not verified; any producer that can write to %s may say "
            "anything for any app (docs/security-and-privacy.md, Sources)",
            settings.topic("events"),
        )
    else:
        try:  # the key the worker signs its ticks and revocations with
            gate.keyring.signing_key(WORKER, int(time.time() * 1000))
        except KeyringError as exc:
            raise ConfigError(
                f"SENDGATE_KEYRING: {exc}; the worker signs its ticks and grant revocations with a key of role worker"
            ) from None
    os.makedirs(settings.data_dir, exist_ok=True)
    faust_app = faust.App(
        settings.group_id,
        broker=faust_broker_url(settings.bootstrap),
        broker_credentials=settings.broker_credentials(),  # Faust's producer, consumers and topic admin
        store=settings.store,
        datadir=os.path.join(settings.data_dir, settings.group_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
        producer_acks=-1,
        producer_linger=settings.linger_ms / 1000,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.group_instance_id,
        # A standby copy of every partition on another worker (Faust's default, relied on): a
        # survivor of a kill takes the dead worker's partitions without reading their changelogs.
        table_standby_replicas=1,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_tables_enabled=False,  # Faust's /table view serves raw rows, and rows hold userkeys
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        logging_config=faust_logging_config(settings.log_format),  # SENDGATE_LOG_FORMAT=json: JSON lines
    )
    events = faust_app.topic(
        settings.topic("events"),
        partitions=settings.partitions,
        config=settings.topic_configs(settings.topic("events")),
        **RAW,
    )
    decisions = faust_app.topic(settings.topic("decisions"), partitions=settings.partitions, **RAW)
    deadletter = faust_app.topic(settings.topic("deadletter"), partitions=settings.partitions, **RAW)
    consent = faust_app.topic(settings.topic("consent"), partitions=settings.partitions, **RAW)
    grants = faust_app.topic(settings.topic("grants"), partitions=settings.partitions, **RAW)
    state = faust_app.tables.add(
        StateTable(
            faust_app, name=STATE, default=None, beacon=faust_app.tables.beacon, partitions=settings.partitions, **RAW
        )
    )
    # Where each app lives crosses partitions, so every worker holds all of it (a global table, one
    # partition; Faust advises partitions=1 and recovery_buffer_size=1 for global tables with several workers).
    apps_table = faust_app.tables.add(
        GlobalIndexTable(
            faust_app,
            name=APPS,
            default=None,
            beacon=faust_app.tables.beacon,
            partitions=1,
            standby_buffer_size=1,
            recovery_buffer_size=1,
            is_global=True,
            **RAW,
        )
    )
    store = CheckpointStore(state, apps_table)
    worker = GateWorker(settings, faust_app, gate, store, events, decisions, deadletter, consent, grants)
    worker.alive_at = member_alive_at(faust_app)
    state.on_recover(worker.on_recover)
    keep_recovery_end(faust_app)  # a recovery that caught up before Faust waited for it would never end
    keep_fetched_changelog(faust_app)  # else the end of a recovery drops the standby records fetched meanwhile

    @faust_app.on_partitions_revoked.connect
    async def _forget_decided_offsets(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # after Faust's last commit of the revoked partitions (with these offsets); kept until the
        # next recovery, a partition that comes back could have its group offset moved backwards
        worker.revocations += 1
        for tp in revoked:
            worker.next_offsets.pop(tp, None)

    @state.on_recover
    async def _count_rebalance() -> None:
        worker.metrics.rebalances.inc()

    if settings.web_enabled:
        door = OperatorDoor(settings.operator_token, settings.web_bind)
        register_views(faust_app, worker.gate, store, door)
        register_operations(faust_app, worker, door)

    @faust_app.agent(events, name="gate")
    async def gate_agent(stream: Any) -> None:
        # The agent takes its batches from the channel's queue itself instead of iterating the
        # stream: a batch is whatever has arrived (up to batch_max), taken at once, with no timer.
        # Faust's per-event stream path cost more than the gate (bench/run --profile), and
        # take_events waits its `within` even when nothing more is coming.
        queue = channel_queue(stream)
        dispatch_inline(faust_app)
        commit_at(faust_app, worker.next_offsets)
        worker.agent_task = asyncio.current_task()
        # Subscribers may start before the first decision, and a producer that sends to a topic
        # whose partitions have no leader yet stalls in retries: create the outputs and wait first.
        for topic in (decisions, deadletter, consent, grants):
            await topic.maybe_declare()
            await partitions_of(settings, topic.get_topic_name(), 60)
        worker.events_partitions = sorted(await partitions_of(settings, events.get_topic_name(), 60))
        # Faust's own sends (ticks) go through the same producer:
        # have it track their topics too (streams/worker/outbox.py says why a topic must be tracked)
        for topic in (events, deadletter):
            await inner_producer(faust_app).client.add_topic(topic.get_topic_name())
        worker.queue = queue
        worker.agent_running = True
        while not worker.stalled:
            items = [await queue.get()]
            while len(items) < settings.batch_max and not queue.empty():
                items.append(queue.get_nowait())
            quiet = tuple(tp for item in items if isinstance(item, QuietHoles) for tp in item.partitions)
            await worker.run_batch(
                [item for item in items if not isinstance(item, QuietHoles)] if quiet else items, quiet
            )

    @faust_app.timer(interval=SLOW_BATCH_S / 3)
    async def watch_batches() -> None:
        worker.report_slow_batch()

    @faust_app.timer(interval=QUIET_CHECK_S)
    async def watch_quiet_partitions() -> None:
        worker.check_quiet_partitions()

    if ticker and settings.tick_interval_s > 0:

        @faust_app.timer(interval=settings.tick_interval_s)
        async def tick() -> None:
            # Wall-clock time enters the log only as tick events; decisions are made from them.
            # A tick goes to the partition the app's events came from, whatever its producers'
            # partitioner: computing it here from the key could pick another partition.
            now = int(time.time() * 1000)
            for app_key, next_due in list(store.due.items()):
                if next_due <= now:
                    app_name = app_key.decode()
                    partition = store.home_of(app_name)
                    if partition is None:
                        # An app with no home yet (state from before homes were kept): where Java's
                        # partitioner puts it, as ticks always went; its next event records its home.
                        partition = partition_for(app_key, settings.partitions)
                    tick = orjson.dumps({"type": "tick", "app": app_name, "ts": now})
                    await events.send(key=app_key, value=tick, partition=partition, headers=worker.signed(tick, now))

    return worker
