"""The batch and its retries: the gate agent's batches of events decided through the gate, their
outputs and rows written (streams/worker/checkpoint.py), and a failing batch decided again until it
succeeds, is dropped because its partitions moved, or stops the worker.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.types import TP, TopicT

from sendgate.models.decisions import ConsentRecord, Decision, GrantRevocation, JunkShare
from sendgate.models.events import InvalidEvent, Refusal, event_type
from sendgate.models.gate import Gate
from sendgate.models.sources import WORKER

from ..config import Settings
from ..kafka import read_log
from .checkpoint import CheckpointStore
from .faust_internals import assigned, committed_offset, highwater, inner_producer, recovery_state, store_memory_bytes
from .holes import Event, Holes, LoggedMessage, Message
from .metrics import BatchTally, GateMetrics
from .outbox import Headers, Outbox
from .topology import Topics

log = logging.getLogger("sendgate.worker")

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0  # backoff of a failing batch
STALL_EXIT_CODE = 70  # EX_SOFTWARE: the worker stopped because a batch kept failing
STALL_GRACE_S = 30.0  # how long the graceful stop may take before the process exits anyway
PRODUCE_TIMEOUT_S = 60.0  # a batch's send not acknowledged by then fails the batch (it is decided again)
SLOW_BATCH_S = 30.0  # a batch deciding this long is logged with where the agent waits


class MembershipLapsed(Exception):
    """The worker cannot be sure it still owns its partitions (`GateWorker.check_membership`)."""


@dataclass
class GateWorker:
    """The gate agent's side of a worker: decides its batches, and says whether it is ready."""

    settings: Settings
    faust: faust.App  # the Faust application: group, tables, agents (not a tenant)
    gate: Gate
    store: CheckpointStore
    topics: Topics
    holes: Holes
    next_offsets: dict[TP, int] = field(default_factory=dict)  # events partition -> offset to commit (commit_at)
    outbox: Outbox = field(default_factory=Outbox)
    stalled: bool = False  # set when a failing batch stopped the worker (exit code STALL_EXIT_CODE)
    failing_since: float | None = None  # monotonic time the current batch began to fail
    agent_running: bool = False
    tally: BatchTally = field(default_factory=BatchTally)
    metrics: GateMetrics = field(init=False)
    deciding_since: float | None = None  # monotonic time the batch being decided began
    _reported_slow: bool = False
    agent_task: asyncio.Task | None = None
    # when the group coordinator last confirmed this worker a member (faust_internals.member_alive_at)
    alive_at: Callable[[], float | None] = lambda: None
    revocations: int = 0  # rebalances that revoked this worker's partitions (a failing batch spanning one is dropped)

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
        events_topic = self.topics.events.get_topic_name()
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
            "store_unwritten_rows": self.store.table.unwritten.size,
            "standbys": self.store.table.standbys_behind(),
            "store_memory_bytes": store_memory_bytes(self.store.table),
            "reasons": self.not_ready(),
        }

    async def process_batch(self, batch: list[Event], quiet: tuple[TP, ...] = ()) -> list[LoggedMessage]:
        """Decide a batch of records of sendgate.events; never raises for bad input. `quiet`:
        partitions whose records up to their end are read from Kafka first (`QuietHoles`).
        Returns the records read from Kafka to fill holes (acked with the batch: Faust never had them).

        Outputs first, state second (see streams/worker/checkpoint.py): the batch's decisions, deliveries and
        dead letters are acknowledged by the broker before its rows and commit records are written.
        """
        sent: list[Awaitable[Any]] = []
        epoch = self.faust.consumer_generation_id  # its commit records' (checkpoint.py, `CheckpointLog`)
        self.tally = tally = BatchTally()
        started = time.perf_counter()
        holes = self.holes
        filled = await holes.fill_quiet(quiet, self.process, sent)
        self.gate.sketcher.presketch(send_texts(batch))  # the burst step's sketches, a batch at once
        for event in batch:
            message = event.message
            seen = holes.seen.get(message.partition)
            if seen is None:
                seen = await holes.seen_before(message.tp)
            if message.offset > seen + 1:
                filled += await holes.fill_hole(message.tp, seen + 1, message.offset, self.process, sent)
            holes.seen[message.partition] = max(seen, message.offset)
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
            self.store.stage(self.outbox, epoch)
            self.check_membership()
            last = await asyncio.wait_for(self.outbox.send(producer), PRODUCE_TIMEOUT_S)
            produced = time.perf_counter()
            self.store.written(last)
            self.store.stage(self.outbox, epoch)
            self.check_membership()
            self.store.written(await asyncio.wait_for(self.outbox.send(producer), PRODUCE_TIMEOUT_S))
            if self.store.foreign:
                await self.rewrite_foreign_rows()
        tally.durations_s = {
            "decide": decided - started,
            "produce": produced - decided,
            "checkpoint": time.perf_counter() - produced,
        }
        return filled

    async def rewrite_foreign_rows(self) -> None:
        """Read the records another worker wrote into a changelog partition this one writes (a
        zombie's late send, found by `CheckpointStore._held_to`): recovery never commits them
        (`CheckpointLog`), and their keys are rewritten at the partition's next checkpoint, so that
        compaction cannot leave one as a key's last value."""
        changelog = self.store.table.changelog_topic.get_topic_name()
        found, self.store.foreign = self.store.foreign, {}
        for partition, (start, end) in found.items():
            records = [
                (r.key, r.headers)
                async for r in read_log(self.settings, changelog, {partition: end}, start={partition: start})
            ]
            keys = self.store.rewrite(partition, records)
            log.warning(
                "%s[%d] offsets %d..%d: %d record(s) another worker wrote (a zombie's); %d key(s) are rewritten "
                "at the next checkpoint",
                changelog,
                partition,
                start,
                end - 1,
                len(records),
                keys,
            )

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

    async def on_recover(self) -> None:
        self.holes.seen.clear()  # partitions may have moved; Faust starts each from the committed offset
        self.next_offsets.clear()
        events_topic = self.topics.events.get_topic_name()
        self.store.keep_unsent_commits({tp.partition for tp in assigned(self.faust) if tp.topic == events_topic})

    def abort(self, seen: dict[int, int]) -> None:
        """Forget a batch that failed half-way: its writes, and how far the stream had got (`seen`,
        as it was before the batch), so that the same batch can be decided again."""
        self.store.abort()
        self.outbox.clear()
        self.holes.seen = seen

    async def run_batch(self, batch: list[Event], quiet: tuple[TP, ...] = ()) -> None:
        """Decide a batch until it succeeds, then ack it to Faust.

        A batch fails when the broker refuses its outputs or rows (after the producer's own
        retries) or something inside the worker fails. None of it then counts; it is decided again
        from the same records, with backoff, without waiting for more records to arrive (a quiet
        partition would wait for ever). If it still fails after `stall_exit_s`, the worker exits
        non-zero (`stall_exit`): an orchestrator restarts it, and a human sees why. A batch is
        neither decided during a rebalance nor after one that happened since it began: it is
        dropped unacked, and Faust delivers its records again.
        """
        delay, failing_since, revocations = RETRY_FIRST_S, None, self.revocations
        while True:
            if self.faust.rebalancing or self.revocations != revocations:
                # Decided only over tables recovered for the assignment it was taken under. During a
                # rebalance they are being recovered, and after one another worker may have decided
                # these records meanwhile (the fault soak: a worker back from a full disk and a lost
                # session decided them again over a half-recovered store, and its rows landed after
                # the other worker's). Faust delivers them again from the committed offsets.
                log.warning(
                    "a batch of %s is dropped: %s (its records are delivered again once the tables have recovered)",
                    _where(batch),
                    "a rebalance since it began" if self.revocations != revocations else "a rebalance is in progress",
                )
                self.failing_since = None
                return
            seen = dict(self.holes.seen)
            self.deciding_since, self._reported_slow = time.monotonic(), False
            try:
                filled = await self.process_batch(batch, quiet)
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
                    continue  # dropped at the top of the loop, without a backoff
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
        # Every offset up to `holes.seen` is now decided (or dead-lettered, or was decided before) and
        # its commit records are written: the group may commit past it. The events are acked too,
        # so that Faust's stream and its waits for a rebalance see them done.
        events_topic, owned = self.topics.events.get_topic_name(), assigned(self.faust)
        for partition, seen in self.holes.seen.items():
            tp = TP(events_topic, partition)
            if tp in owned and seen + 1 > self.next_offsets.get(tp, 0):
                self.next_offsets[tp] = seen + 1
        self.ack([*filled, *batch])

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

    def ack(self, events: list[Event | LoggedMessage]) -> None:
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

    async def process(self, event: Event) -> list[Awaitable[Any]]:
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
                topic = self.topics.decisions
            elif isinstance(record, ConsentRecord):
                topic = self.topics.consent
            elif isinstance(record, GrantRevocation):
                # into the app's own log (its home partition, where this event is), where it takes
                # effect when it is decided; and to the operators' topic
                # (its record timestamp is its event time: the decoder bounds how far ts may run ahead of it)
                revoke = record.policy_event()
                sent += await self.send(
                    self.topics.events,
                    record.app.encode(),
                    revoke,
                    message.partition,
                    record.ts,
                    self.signed(revoke, record.ts),
                )
                topic = self.topics.grants
            elif isinstance(record, JunkShare):
                # into every partition's log, where each partition's junk index counts it (models/junk.py)
                share = record.to_json()
                headers = self.signed(share, record.ts)
                for partition in self.topics.events_partitions:
                    sent += await self.send(
                        self.topics.events, record.app.encode(), share, partition, record.ts, headers
                    )
                continue
            else:
                topic = await self.topics.delivery(record.network)
            sent += await self.send(topic, record.app.encode(), record.to_json())
        return sent

    async def send(
        self,
        topic: TopicT,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers = None,
    ) -> list[Awaitable[Any]]:
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

    async def dead_letter(
        self, message: Message, value: bytes | None, error: str, code: Refusal, rule: str | None = None
    ) -> list[Awaitable[Any]]:
        self.tally.dead_letter(code, rule)
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)
        # with the record's own headers (its signature): `sendgate deadletter republish` sends it back as it came
        return await self.send(
            self.topics.deadletter,
            message.key,
            dead_letter_record(message, value, error, code),
            headers=list(message.headers or ()) or None,
        )


def send_texts(batch: list[Event]) -> Iterator[str]:
    """The texts of a batch's sends as their records say: a hint for `Sketcher.presketch`, read
    only when it asks (a record the gate later refuses costs a sketch, nothing more)."""
    for event in batch:
        try:
            doc = orjson.loads(event.value)
        except (ValueError, TypeError):  # not JSON, or no value (a tombstone): the gate says why
            continue
        if isinstance(doc, dict) and doc.get("type") == "send" and isinstance(text := doc.get("text"), str):
            yield text


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


def _where(batch: list[Event]) -> str:
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


def dead_letter_record(message: Message, value: bytes | None, error: str, code: Refusal) -> bytes:
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
