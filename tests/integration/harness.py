"""Helpers for tests against a real Kafka broker: isolated settings, worker processes, publishing
through the CLI, and reading topics with a deadline (never a sleep). Users can reuse them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.models.sources import OPERATOR
from sendgate.streams.local.broker import free_port
from sendgate.streams.local.keyring import LOCAL_KEYS, write_local_keyring
from sendgate.streams.kafka import end_offsets, ensure_topics, partitions_of, read_log
from sendgate.streams.config import Settings
from sendgate.streams.local.process import WorkerProcess
from sendgate.streams.worker.checkpoint import COMMIT, STATE, CheckpointLog, checkpoint_token

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z: event time in tests is explicit, never the wall clock
MIN = 60_000
DAY = 86_400_000
DEADLINE_S = 90.0


def make_settings(bootstrap: str, data_dir: Path, **overrides) -> Settings:
    """Topics and group of their own, and a keyring of the test's own (beside `data_dir`) whose
    operator key signs what the test publishes (an operator may say anything: docs/security-and-privacy.md, Sources)."""
    run = uuid.uuid4().hex[:8]
    keyring = Path(data_dir).parent / "keyring.toml"
    if not keyring.exists():
        write_local_keyring(keyring)
    base = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"t{run}.",
        group_id=f"t{run}",
        partitions=4,
        keyring_file=str(keyring),
        key_id=LOCAL_KEYS[OPERATOR],
        data_dir=str(data_dir),
        web_enabled=True,
        web_port=free_port(),
        tick_interval_s=0,
        session_timeout_s=6.0,
        heartbeat_interval_s=1.0,
        rebalance_timeout_s=3.0,
        log_level="info",
        processing_guarantee=os.environ.get("SENDGATE_PROCESSING_GUARANTEE", "at_least_once"),
    )
    return base.with_(**overrides)


class Workers:
    """Starts worker processes for one test and stops every one of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings) -> WorkerProcess:
        """Start a worker and wait until its /readyz answers 200 (see WorkerProcess.wait_ready for
        why). A second worker of the same settings gets a web port of its own."""
        if settings.web_enabled and any(w.running and w.settings.web_port == settings.web_port for w in self.started):
            settings = settings.with_(web_port=free_port())
        worker = WorkerProcess(settings, self.tmp_path / f"worker-{len(self.started)}.log").start()
        self.started.append(worker)
        return worker.wait_ready()

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
            print(f"--- {worker.log_path.name} (tail) ---\n{worker.log_tail(3000)}")


def publish(settings: Settings, events: list[dict | bytes], expect_rc: int = 0) -> subprocess.CompletedProcess:
    """Publish JSON lines with `sendgate publish -`, as a user would."""
    lines = b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events) + b"\n"
    result = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", "publish", "-"],
        input=lines,
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == expect_rc, result.stderr.decode()
    return result


def signed(settings: Settings, value: bytes | None) -> list[tuple[str, bytes]]:
    """The headers that sign `value` with the test's key (settings.key_id)."""
    return settings.signing_key().headers(value)


def produce_raw(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Write records byte for byte to the events topic, bypassing validation (hostile producers),
    signed: the signature vouches for the bytes, whatever they are."""

    async def run() -> None:
        await ensure_topics(settings, [settings.topic("events")])
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(
                    settings.topic("events"), value=value, key=key, headers=signed(settings, value)
                )
        finally:
            await producer.stop()

    asyncio.run(run())


def collect(
    settings: Settings,
    topic: str,
    until: Callable[[list[dict]], bool],
    timeout: float = DEADLINE_S,
    with_partition: bool = False,
    json: bool = True,
) -> list[dict]:
    """Read `topic` from the beginning until `until(records)` holds; fail at the deadline.
    `json=False`: values stay bytes (a changelog holds binary rows: sketches, lapse buckets)."""

    async def run() -> list[dict]:
        deadline = time.monotonic() + timeout
        partitions = await partitions_of(settings, topic, timeout)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
        await consumer.start()
        records: list[dict] = []
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not until(records):
                if time.monotonic() > deadline:
                    raise AssertionError(f"deadline: {len(records)} record(s) on {topic}: {records[-5:]}")
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in sorted(batch.items(), key=lambda kv: kv[0].partition):
                    for m in messages:
                        doc = orjson.loads(m.value) if json and m.value is not None else m.value
                        if with_partition:
                            doc = {"partition": m.partition, "key": m.key, "value": doc}
                        records.append(doc)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def decisions(settings: Settings, count: int, timeout: float = DEADLINE_S) -> list[dict]:
    """The first `count` decisions, in log order per app (each app lives on one partition)."""
    return collect(settings, settings.topic("decisions"), lambda r: len(r) >= count, timeout)


def outcomes(records: list[dict]) -> list[tuple[str, str, str]]:
    return [(d["request_id"], d["outcome"], d["reason"]) for d in records]


def ev(kind: str, **fields) -> dict:
    return {"type": kind, **fields}


# --- fault tests: publishing with offsets, reading topics to their end, accounting --------------

import base64  # noqa: E402  (imports of the helpers below, added after the original ones)
import threading  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class Invalid:
    """A record the worker must dead-letter, written byte for byte (key defaults to the value's app)."""

    value: bytes | None
    key: bytes | None = None
    note: str = ""


@dataclass
class Sent:
    """One record as written to the events topic: the event (dict) or an `Invalid`, and where it went."""

    item: dict | Invalid
    partition: int
    offset: int


def send_events(settings: Settings, items: list[dict | Invalid | bytes]) -> list[Sent]:
    """Write events in order with one idempotent producer (acks=all) and return their offsets.

    Dicts are validated with the worker's own decoder first (a test bug must not become a dead
    letter) and keyed by their app; `Invalid` records (or bare bytes) are written as they are.
    Much faster than `publish` (no subprocess), so a test can publish in many chunks.
    """
    from sendgate.models.events import decode_event

    records: list[tuple[dict | Invalid, bytes | None, bytes | None, int | None]] = []
    for item in items:
        if isinstance(item, bytes):
            item = Invalid(item)
        if isinstance(item, Invalid):
            records.append((item, item.key, item.value, None))
        else:
            raw = orjson.dumps(item)
            valid = decode_event(raw, int(time.time() * 1000), settings.policy().max_ts_ahead_s * 1000)
            records.append((item, item["app"].encode(), raw, valid.ts))  # record time = ts, as Publisher does

    async def run() -> list[Sent]:
        await ensure_topics(settings, [settings.topic("events")])
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    settings.topic("events"), key=key, value=value, timestamp_ms=ts, headers=signed(settings, value)
                )
                for _, key, value, ts in records
            ]
            metas = [await f for f in futures]
        finally:
            await producer.stop()
        return [Sent(item, m.partition, m.offset) for (item, _, _, _), m in zip(records, metas)]

    return asyncio.run(run())


def read_topic(settings: Settings, topic: str, with_partition: bool = False) -> list[dict]:
    """Every record of `topic` up to its current end offsets, each partition in order (partitions
    one after another, by number). `with_partition` wraps each as {partition, offset, key, value,
    raw, timestamp} (value None when the record is not JSON)."""
    from sendgate.streams.kafka import end_offsets, read_log

    async def run() -> list[dict]:
        by_partition: dict[int, list[dict]] = {}
        async for r in read_log(settings, topic, await end_offsets(settings, topic)):
            try:
                doc = orjson.loads(r.value) if r.value is not None else None
            except orjson.JSONDecodeError:
                if not with_partition:
                    raise
                doc = None  # not JSON: the raw bytes are in "raw"
            if with_partition:
                doc = {
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": r.key,
                    "value": doc,
                    "raw": r.value,
                    "timestamp": r.timestamp,
                }
            by_partition.setdefault(r.partition, []).append(doc)
        return [doc for p in sorted(by_partition) for doc in by_partition[p]]

    return asyncio.run(run())


def consumer_lag(settings: Settings) -> dict[int, int]:
    """Per partition of the events topic: end offset minus the worker group's committed offset."""
    from sendgate.streams.kafka import committed_offsets, end_offsets

    async def run() -> dict[int, int]:
        topic = settings.topic("events")
        ends = await end_offsets(settings, topic)
        committed = await committed_offsets(settings, settings.group_id, topic)
        return {p: end - committed.get(p, 0) for p, end in ends.items()}

    return asyncio.run(run())


def wait_consumed(settings: Settings, timeout: float = DEADLINE_S) -> dict[int, int]:
    """Wait until the worker group has committed the end of every events partition (Faust commits
    every few seconds, and flushes its producer first, so every output of those events is written).
    Returns the lag seen at the first poll, for reports."""
    deadline = time.monotonic() + timeout
    first = lag = consumer_lag(settings)
    while any(v > 0 for v in lag.values()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"deadline: worker group {settings.group_id} still lags on "
                f"{settings.topic('events')}: {lag} (end - committed per partition)"
            )
        time.sleep(0.25)  # a poll interval, not a wait for a result: the loop checks the condition
        lag = consumer_lag(settings)
    return first


def _dead_letter_raw(doc: dict) -> bytes | None:
    raw = doc.get("raw")
    if raw is None:
        return None
    return base64.b64decode(raw) if doc.get("raw_encoding") == "base64" else raw.encode()


@dataclass
class Accounting:
    records: int  # records written to the events topic by the test
    decided: int  # send/cancel requests with at least one decision
    dead_lettered: int  # invalid records with their dead letter
    applied: int  # state events (inbound, opt_in, ...) consumed, i.e. below the committed offsets
    decisions: int  # decision records read (duplicates included)
    duplicates: int  # decision records beyond the first with the same decision_id

    def __str__(self) -> str:
        return (
            f"records={self.records} decided={self.decided} dead_lettered={self.dead_lettered} "
            f"applied={self.applied} decisions={self.decisions} duplicates={self.duplicates}"
        )


REQUEST_TYPES = ("send", "cancel")


def account(
    settings: Settings,
    published: list[dict | bytes | Invalid | Sent],
    decisions: list[dict],
    dead_letters: list[dict],
    timeout: float = DEADLINE_S,
) -> Accounting:
    """Assert that every input record is accounted for, and return the counts.

    - every `send`/`cancel` has at least one decision with its (app, request_id);
    - every invalid record (bytes / `Invalid`) has a dead letter: matched by (partition, offset)
      when it is a `Sent` (from `send_events`), else by its raw bytes (as many distinct dead-lettered
      offsets as there are such records);
    - no dead letter is left over (a valid event was never dead-lettered, e.g. an internal error);
    - every state event was consumed: the worker group's committed offsets reach the end offsets of
      the events topic (waited for up to `timeout`).
    """
    from sendgate.streams.kafka import committed_offsets, end_offsets

    events_topic = settings.topic("events")
    decided_keys = {(d["app"], d["request_id"]) for d in decisions}
    requests: list[dict] = []
    state: list[dict] = []
    invalid_at: dict[tuple[int, int], bytes | None] = {}
    invalid_raw: list[bytes | None] = []
    for item in published:
        where = None
        if isinstance(item, Sent):
            where, item = (item.partition, item.offset), item.item
        if isinstance(item, bytes):
            item = Invalid(item)
        if isinstance(item, Invalid):
            if where is not None:
                invalid_at[where] = item.value
            else:
                invalid_raw.append(item.value)
        elif item["type"] in REQUEST_TYPES:
            requests.append(item)
        else:
            state.append(item)

    undecided = [e for e in requests if (e["app"], e["request_id"]) not in decided_keys]
    assert not undecided, f"{len(undecided)} request(s) without any decision: {undecided[:10]}"

    dead = {}
    for d in dead_letters:
        assert d["topic"] == events_topic, d
        dead[(d["partition"], d["offset"])] = d  # a dead letter seen twice (after a crash) counts once
    missing = [
        (where, raw) for where, raw in invalid_at.items() if where not in dead or _dead_letter_raw(dead[where]) != raw
    ]
    assert not missing, f"{len(missing)} invalid record(s) without their dead letter: {missing[:10]}"
    by_raw: dict[bytes | None, int] = Counter(_dead_letter_raw(d) for w, d in dead.items() if w not in invalid_at)
    wanted = Counter(invalid_raw)
    short = {raw: n for raw, n in wanted.items() if by_raw.get(raw, 0) < n}
    assert not short, f"invalid record(s) without their dead letter (raw -> count): {short}"
    extra = {raw: n - wanted.get(raw, 0) for raw, n in by_raw.items() if n > wanted.get(raw, 0)}
    assert not extra, (
        "dead letters that match no invalid record (a valid event was dead-lettered): "
        f"{[d for d in dead.values() if _dead_letter_raw(d) in extra][:5]}"
    )

    async def offsets() -> tuple[dict[int, int], dict[int, int]]:
        return (
            await end_offsets(settings, events_topic),
            await committed_offsets(settings, settings.group_id, events_topic),
        )

    deadline = time.monotonic() + timeout
    ends, committed = asyncio.run(offsets())
    while any(committed.get(p, 0) < end for p, end in ends.items()):
        if time.monotonic() > deadline:
            raise AssertionError(f"state events not all consumed: committed {committed}, end {ends}")
        time.sleep(0.25)  # poll interval
        ends, committed = asyncio.run(offsets())

    ids = Counter(d["decision_id"] for d in decisions)
    return Accounting(
        records=len(published),
        decided=len(requests) - len(undecided),
        dead_lettered=len(invalid_at) + len(invalid_raw),
        applied=len(state),
        decisions=len(decisions),
        duplicates=sum(n - 1 for n in ids.values()),
    )


def uninterrupted(events: list[dict | bytes | Invalid | Sent]) -> list[dict]:
    """The decisions of one uninterrupted in-process run of the gate over the valid events, in
    order (every event must carry an explicit `ts`; invalid records are skipped); a junk report's
    share comes right after it."""
    from sendgate.models.decisions import Decision
    from sendgate.models.events import validate
    from sendgate.models.gate import Gate, MemoryStore

    gate, store = Gate(), MemoryStore()
    out: list[dict] = []
    for e in events:
        if isinstance(e, Sent):
            e = e.item
        if isinstance(e, (bytes, Invalid)):
            continue
        assert "ts" in e, f"event without explicit ts: {e}"
        out += [r.to_dict() for r in gate.handle_in_one_log(validate(e, 0), store) if isinstance(r, Decision)]
    return out


def ids_by_request(decisions: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(app, request_id) -> the set of its decision ids."""
    out: dict[tuple[str, str], set[str]] = {}
    for d in decisions:
        out.setdefault((d["app"], d["request_id"]), set()).add(d["decision_id"])
    return out


def duplicates(decisions: list[dict]) -> dict[str, int]:
    """decision_id -> how many times it was seen, for those seen more than once."""
    return {k: n for k, n in Counter(d["decision_id"] for d in decisions).items() if n > 1}


class DecisionWatcher:
    """Reads the decisions topic from the beginning in a background thread, as it is written.

    `when(count, action)` runs `action()` in the watcher's thread as soon as `count` decision
    records (duplicates included) have been read, and returns an event set once it has run: a
    test can crash a worker at a precise point of its progress without sleeping.
    """

    def __init__(self, settings: Settings, timeout: float = DEADLINE_S) -> None:
        self.settings = settings
        self.timeout = timeout
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._triggers: list[tuple[int, Callable[[], None], threading.Event]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="decision-watcher", daemon=True)

    def __enter__(self) -> "DecisionWatcher":
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise AssertionError("decision watcher did not start")
        self._raise()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _raise(self) -> None:
        if self._error is not None:
            raise AssertionError(f"decision watcher failed: {self._error!r}") from self._error

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.records)

    def when(self, count: int, action: Callable[[], None]) -> threading.Event:
        done = threading.Event()
        with self._lock:
            self._triggers.append((count, action, done))
        return done

    def wait_until(self, pred: Callable[[list[dict]], bool], timeout: float | None = None) -> list[dict]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self._raise()
            records = self.snapshot()
            if pred(records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"deadline: {len(records)} decision(s) read, condition not met; last: {records[-3:]}"
                )
            time.sleep(0.05)  # poll interval of a condition on data the watcher thread collects

    def _fire(self) -> None:
        with self._lock:
            n = len(self.records)
            due = [t for t in self._triggers if t[0] <= n]
            self._triggers = [t for t in self._triggers if t[0] > n]
        for _, action, done in due:
            try:
                action()
            finally:
                done.set()

    def _main(self) -> None:
        async def run() -> None:
            topic = self.settings.topic("decisions")
            partitions = await partitions_of(self.settings, topic, self.timeout)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
            )
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in partitions]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                self._ready.set()
                while not self._stop.is_set():
                    batch = await consumer.getmany(timeout_ms=50)
                    for tp, messages in batch.items():
                        for m in messages:
                            with self._lock:
                                self.records.append(orjson.loads(m.value))
                            self._fire()
                    self._fire()
            finally:
                await consumer.stop()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()


def log_since(worker: WorkerProcess, start: int) -> str:
    """The worker's log from byte `start` on."""
    return worker.log_path.read_bytes()[start:].decode(errors="replace")


def wait_for_log(worker: WorkerProcess, start: int, pattern: re.Pattern, timeout: float = DEADLINE_S) -> str:
    """Poll the worker's log from byte `start` until a line matches `pattern`; returns that part of the log."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_since(worker, start)
        if pattern.search(text):
            return text
        if not worker.running:
            raise AssertionError(
                f"worker exited ({worker.process.returncode}) before logging {pattern.pattern!r}:\n{worker.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern.pattern!r} within {timeout:.0f} s:\n{text[-3000:]}")
        time.sleep(0.2)  # poll interval


def create_events_topic(settings: Settings) -> None:
    """Create `<prefix>events` before a worker starts: a worker that subscribes while it is missing
    only notices it at its next metadata refresh (minutes), so its first events would wait."""
    asyncio.run(ensure_topics(settings, [settings.topic("events")]))


def group_assignment(settings: Settings) -> tuple[str, dict[str, list[int]]]:
    """The worker group's state and, per member (client host and member id), the partitions of the
    events topic the group leader assigned to it."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    async def run() -> tuple[str, dict[str, list[int]]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([settings.group_id])
        finally:
            await admin.close()
        [(_, _, state, _, _, members)] = [g[:6] for g in response.groups]
        out: dict[str, list[int]] = {}
        for member_id, _client_id, client_host, _metadata, assignment in members:
            parts = []
            if assignment:
                decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                parts = sorted(p for topic, ps in decoded.assignment if topic == settings.topic("events") for p in ps)
            out[f"{client_host}/{member_id}"] = parts
        return state, out

    return asyncio.run(run())


def wait_for_group(
    settings: Settings, pred: Callable[[str, dict[str, list[int]]], bool], timeout: float = DEADLINE_S
) -> dict[str, list[int]]:
    """Poll the worker group's assignment until `pred(state, members)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        state, members = group_assignment(settings)
        if pred(state, members):
            return members
        if time.monotonic() > deadline:
            raise AssertionError(f"deadline: group {settings.group_id} is {state} with {members}")
        time.sleep(0.25)  # poll interval


def committed_state(settings: Settings) -> dict[bytes, tuple[int, bytes]]:
    """The state changelog as every recovery and restore reads it (streams/worker/checkpoint.py,
    `CheckpointLog`): each row's last committed value, with its partition; commit records left out."""

    async def run() -> dict[bytes, tuple[int, bytes]]:
        topic = settings.changelog_topic(STATE)
        logs: dict[int, CheckpointLog] = {}
        rows: dict[bytes, tuple[int, bytes]] = {}
        async for r in read_log(settings, topic, await end_offsets(settings, topic)):
            applied, _ = logs.setdefault(r.partition, CheckpointLog()).read(
                r, r.key, r.value, checkpoint_token(r.headers)
            )
            for a in applied:
                if a.key.startswith(COMMIT):
                    continue
                if a.value is None:
                    rows.pop(a.key, None)
                else:
                    rows[a.key] = (a.partition, a.value)
        return rows

    return asyncio.run(run())
