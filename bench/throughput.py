"""Throughput on a real broker: one sendgate worker process next to a raw aiokafka pass-through.

Run through `bench/run` (or `python -m bench`), which starts the broker and writes the results;
this module holds the workload: the seeded event-log generator, the in-process expectation, the
pass-through baseline, the worker measurement, and the Kafka helpers that latency.py and
replay_speed.py share.

Method (one run, same events topic for everything):

1. The generator writes a realistic mix (about 60 % send, 30 % inbound, the rest opt_in /
   opt_out / sender_profile; texts from the SMS Spam Collection; many apps, senders and
   userkeys; a few blasts) with explicit event times, so the decisions are a pure function of the
   log. It is published up front to a fresh prefix's events topic, keyed by app.
2. The same log goes once through `Gate.handle_record` in this process (MemoryStore): that gives
   the exact number of decisions to expect (sends plus releases) and the outcome counts every
   Kafka run must reproduce, and an in-process ceiling (no Kafka, no Faust).
3. Pass-through (run before and after the worker): its own consumer group reads the events topic,
   orjson-decodes and re-encodes each value, produces one record to an output topic, and commits
   the offsets of a batch once its records are acknowledged (pipelined by one batch).
   Rate = records / (time of the last produce - time of the first produce).
4. One worker process (`sendgate worker`) over the same topic, started after the log is written.
   The bench only polls end offsets until the expected number of decisions is there, then reads
   the decisions back: rate = decisions / (timestamp of the last decision - of the first); the
   record timestamps are the worker's produce times (CreateTime).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.models.decisions import Decision
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import Gate, MemoryStore
from sendgate.streams.kafka import ensure_topics, partitions_of
from sendgate.streams.config import Settings
from sendgate.streams.kafka import read_log
from sendgate.streams.local.process import WorkerProcess

from ._common import load_corpus

T0 = 1_700_000_000_000  # event time of the generated log starts here (2023-11-14T22:13:20Z)
DAY = 86_400_000

# --- settings --------------------------------------------------------------------------------


def bench_settings(bootstrap: str, data_dir: Path, tag: str, **overrides: Any) -> Settings:
    """Worker settings as the integration tests use them (fast group joins on one broker, no web
    server, no ticker), 8 partitions, the default RocksDB store, its own prefix, group and store."""
    run = uuid.uuid4().hex[:6]
    base = Settings(bootstrap=bootstrap, topic_prefix=f"bench-{tag}-{run}.", group_id=f"bench-{tag}-{run}",
                    partitions=8, store="rocksdb://", data_dir=str(data_dir / f"{tag}-{run}"), web_enabled=False,
                    tick_interval_s=0, session_timeout_s=6.0, heartbeat_interval_s=1.0, rebalance_timeout_s=3.0,
                    log_level="warning")
    return base.with_(**overrides)


_FAUST_CONF = """
import json, sys
from sendgate.streams.worker.app import build_worker
from sendgate.streams.config import Settings
c = build_worker(Settings.from_env()).faust.conf
names = ["processing_guarantee", "store", "producer_acks", "producer_linger", "producer_max_batch_size",
         "producer_compression_type", "broker_commit_every", "broker_commit_interval", "broker_max_poll_records",
         "consumer_max_fetch_size", "stream_buffer_maxsize", "stream_wait_empty", "broker_session_timeout",
         "broker_heartbeat_interval", "broker_rebalance_timeout", "topic_partitions", "table_standby_replicas"]
print(json.dumps({n: str(getattr(c, n)) for n in names}))
"""


def faust_settings(settings: Settings) -> dict[str, str]:
    """The Faust settings the worker actually runs with (read from its App in a child process)."""
    env = {**os.environ, **settings.to_env()}
    out = subprocess.run([sys.executable, "-c", _FAUST_CONF], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_settings_table(settings: Settings) -> dict[str, str]:
    return {"partitions": str(settings.partitions), "store": settings.store,
            "tick_interval_s": str(settings.tick_interval_s), "web": str(settings.web_enabled),
            "session/heartbeat/rebalance s": f"{settings.session_timeout_s}/{settings.heartbeat_interval_s}/"
                                             f"{settings.rebalance_timeout_s}",
            "log_level": settings.log_level, "agent concurrency": "1 (one `gate` agent)"}


# --- the generated log -------------------------------------------------------------------------

NAMES = ["Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena",
         "Mia", "Noah", "Olga", "Pavel", "Quinn", "Rosa", "Sam", "Tara"]


@dataclass
class Log:
    records: list[tuple[bytes, bytes]]  # (key, value) in publish order
    types: Counter
    apps: int
    senders: int
    userkeys: int
    blasts: list[tuple[str, str, int]]  # (app, sender, recipients)
    event_hours: float
    seed: int

    @property
    def sends(self) -> int:
        return self.types["send"]

    def describe(self) -> str:
        n = len(self.records)
        mix = ", ".join(f"{t} {c:,} ({100 * c / n:.1f} %)" for t, c in self.types.most_common())
        blasts = "; ".join(f"{a}/{s} x{r}" for a, s, r in self.blasts)
        return (f"{n:,} events (seed {self.seed}): {mix}. {self.apps} apps (Zipf-like volume), {self.senders} senders, "
                f"{self.userkeys:,} userkeys; {len(self.blasts)} blasts of one spam template each, personalised "
                f"({blasts}); event time spans {self.event_hours * 60:,.0f} min (explicit `ts`).")


def generate(n: int, seed: int = 20240601, n_apps: int = 50) -> Log:
    """A deterministic realistic mix of `n` events (see the module docstring)."""
    rng = random.Random(seed)
    corpus = load_corpus()
    ham = [t for label, t in corpus if label == "ham" and t.strip()]
    spam = [t for label, t in corpus if label == "spam" and t.strip()]
    apps = [f"app-{i:03d}" for i in range(n_apps)]
    weights = [1.0 / (i + 1) ** 0.9 for i in range(n_apps)]
    total_w = sum(weights)
    cum_weights = list(itertools.accumulate(weights))
    n_userkeys = max(200, n // 4)
    senders: dict[str, list[str]] = {}
    pool: dict[str, int] = {}  # userkeys per app
    registered: dict[tuple[str, str], int] = {}
    for app, w in zip(apps, weights):
        senders[app] = [f"sender-{j}" for j in range(rng.randint(2, 8))]
        pool[app] = max(20, int(n_userkeys * w / total_w))
        for s in senders[app]:
            young = rng.random() < 0.2  # registered < 90 days ago: a risky sender
            registered[(app, s)] = T0 - (rng.randint(5, 60) if young else rng.randint(120, 2000)) * DAY

    area = {app: f"+1{zlib.crc32(app.encode()) % 900 + 100}" for app in apps}

    def userkey(app: str, i: int) -> str:
        return f"{area[app]}{i:07d}"

    # blasts: planned up front so that opt_in events can target their recipients beforehand
    n_blasts = max(2, round(n / 40_000))
    blast_size = max(30, min(250, n // 40))
    blast_span = max(blast_size * 4, n // 60)  # events over which a blast's sends are spread
    blasts = []
    for b in range(n_blasts):
        app = rng.choices(apps[:10], k=1)[0]
        sender = rng.choice(senders[app])
        recipients = rng.sample(range(pool[app]), min(blast_size, pool[app]))
        start = int(n * (b + 0.5) / (n_blasts + 0.5)) - blast_span // 2
        blasts.append({"app": app, "sender": sender, "template": rng.choice(spam), "recipients": recipients,
                       "start": max(0, start), "next": 0, "p": len(recipients) / blast_span})
    to_opt_in = [(bl["app"], r) for bl in blasts for r in bl["recipients"]]
    rng.shuffle(to_opt_in)

    recent: dict[str, deque] = {app: deque(maxlen=50) for app in apps}  # (event_id, sender, userkey)
    pairs: dict[str, list[tuple[str, int]]] = {app: [] for app in apps}  # (sender, userkey index) that wrote
    pair_seen: set[tuple[str, str, int]] = set()
    records: list[tuple[bytes, bytes]] = []
    types: Counter = Counter()
    ts = T0
    seq = 0

    def emit(doc: dict) -> None:
        nonlocal seq
        seq += 1
        types[doc["type"]] += 1
        records.append((doc["app"].encode(), orjson.dumps(doc)))

    for i in range(n):
        ts += int(rng.expovariate(1 / 150)) + 1  # ~150 ms of event time per event on average
        active = [bl for bl in blasts if bl["start"] <= i and bl["next"] < len(bl["recipients"])]
        if active and rng.random() < sum(bl["p"] for bl in active):
            bl = rng.choice(active)
            r = bl["recipients"][bl["next"]]
            bl["next"] += 1
            text = f"{rng.choice(NAMES)}, {bl['template']}" if rng.random() < 0.7 else bl["template"]
            emit({"type": "send", "request_id": f"req-{seq:08d}", "app": bl["app"], "sender": bl["sender"],
                  "userkey": userkey(bl["app"], r), "network": "sms", "text": text, "ts": ts})
            continue
        app = rng.choices(apps, cum_weights=cum_weights, k=1)[0]
        roll = rng.random()
        if roll < 0.58:  # send (blast sends above bring the share to about 60 %)
            mode = rng.random()
            doc = {"type": "send", "request_id": f"req-{seq:08d}", "app": app, "network": "sms", "ts": ts}
            if mode < 0.35 and recent[app]:
                event_id, sender, uk = rng.choice(recent[app])
                doc.update(sender=sender, userkey=userkey(app, uk), text=rng.choice(ham), reply_to=event_id)
            elif mode < 0.80 and pairs[app]:
                sender, uk = rng.choice(pairs[app])
                doc.update(sender=sender, userkey=userkey(app, uk), text=rng.choice(ham))
            else:  # cold: a userkey that may never have written (no_conversation unless opted in)
                doc.update(sender=rng.choice(senders[app]), userkey=userkey(app, rng.randrange(pool[app])),
                           text=rng.choice(spam if rng.random() < 0.5 else ham))
            emit(doc)
        elif roll < 0.88:  # inbound
            if pairs[app] and rng.random() < 0.4:
                sender, uk = rng.choice(pairs[app])
            else:
                sender, uk = rng.choice(senders[app]), rng.randrange(pool[app])
            k = rng.random()
            text = "STOP" if k < 0.01 else "start" if k < 0.013 else rng.choice(ham)
            event_id = f"in-{seq:08d}"
            emit({"type": "inbound", "event_id": event_id, "app": app, "sender": sender,
                  "userkey": userkey(app, uk), "network": "sms", "text": text, "ts": ts})
            recent[app].append((event_id, sender, uk))
            if (app, sender, uk) not in pair_seen:
                pair_seen.add((app, sender, uk))
                pairs[app].append((sender, uk))
        elif roll < 0.93:  # opt_in: half of them for future blast recipients
            if to_opt_in and rng.random() < 0.5:
                app, uk = to_opt_in.pop()
            else:
                uk = rng.randrange(pool[app])
            emit({"type": "opt_in", "event_id": f"oi-{seq:08d}", "app": app, "userkey": userkey(app, uk),
                  "source": "web form", "ts": ts})
        elif roll < 0.945:  # opt_out
            uk = rng.choice(pairs[app])[1] if pairs[app] and rng.random() < 0.3 else rng.randrange(pool[app])
            emit({"type": "opt_out", "event_id": f"oo-{seq:08d}", "app": app, "userkey": userkey(app, uk),
                  "source": "support ticket", "ts": ts})
        else:  # sender_profile
            sender = rng.choice(senders[app])
            emit({"type": "sender_profile", "event_id": f"sp-{seq:08d}", "app": app, "sender": sender,
                  "registered_ts": registered[(app, sender)], "ts": ts})
    return Log(records, types, n_apps, sum(len(s) for s in senders.values()), sum(pool.values()),
               [(bl["app"], bl["sender"], bl["next"]) for bl in blasts], (ts - T0) / 3_600_000, seed)


# --- in-process expectation --------------------------------------------------------------------


@dataclass
class Expected:
    decisions: int
    outcomes: Counter  # "outcome/reason" -> count
    invalid: int
    seconds: float
    events: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def expected(log: Log) -> Expected:
    """Run the log through the pure gate in this process: what every Kafka run must reproduce."""
    gate, store = Gate(), MemoryStore()
    outcomes: Counter = Counter()
    invalid = 0
    started = time.perf_counter()
    for key, value in log.records:
        try:
            out = gate.handle_record(key, value, record_time(value), store)
        except InvalidEvent:
            invalid += 1
            continue
        for rec in out:
            if isinstance(rec, Decision):
                outcomes[f"{rec.outcome}/{rec.reason}"] += 1
    seconds = time.perf_counter() - started
    return Expected(sum(outcomes.values()), outcomes, invalid, seconds, len(log.records))


# --- Kafka helpers (shared by latency.py and replay_speed.py) ----------------------------------


def record_time(value: bytes) -> int | None:
    """The record timestamp the log is published with: the event's own `ts` (an honest backfill,
    as `sendgate publish` writes history), or None (the producer's clock) for events without one."""
    doc = orjson.loads(value)
    return doc.get("ts") if isinstance(doc, dict) else None


async def publish_records(settings: Settings, records: list[tuple[bytes, bytes]], topic: str | None = None) -> float:
    """Write records to the events topic as fast as aiokafka allows; returns seconds."""
    topic = topic or settings.topic("events")
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        last = None
        for key, value in records:
            last = await producer.send(topic, value=value, key=key, timestamp_ms=record_time(value))
        await producer.flush()
        if last is not None:
            await last
    finally:
        await producer.stop()
    return time.monotonic() - started


async def end_total(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    ends = await consumer.end_offsets(tps)
    return sum(ends.values())


async def topic_total(settings: Settings, topic: str, wait_s: float = 0.0) -> int:
    """Records in `topic` (sum of end offsets); 0 when it does not exist."""
    try:
        partitions = await partitions_of(settings, topic, wait_s)
    except LookupError:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await end_total(consumer, [TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()


async def wait_for_count(settings: Settings, topic: str, count: int, worker: WorkerProcess | None,
                         stall_s: float = 90.0, poll_s: float = 0.5) -> tuple[int, str | None]:
    """Poll the end offsets of `topic` until it holds `count` records. Returns (records, problem):
    problem says why it stopped early (no progress for `stall_s`, the worker exited)."""
    partitions = await partitions_of(settings, topic, 120.0)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        last, last_change = -1, time.monotonic()
        while True:
            total = await end_total(consumer, tps)
            if total >= count:
                return total, None
            if total != last:
                last, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                return total, f"no progress for {stall_s:.0f} s at {total:,} of {count:,} records"
            if worker is not None and not worker.running:
                return total, f"the worker exited at {total:,} of {count:,} records"
            await asyncio.sleep(poll_s)
    finally:
        await consumer.stop()


async def read_all(settings: Settings, topic: str) -> list[tuple[int, dict]]:
    """(record timestamp ms, decoded value) of every record now in `topic`."""
    partitions = await partitions_of(settings, topic, 30.0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    until = {tp.partition: off for tp, off in ends.items()}
    return [(r.timestamp, orjson.loads(r.value)) async for r in read_log(settings, topic, until)]


def bins_per_second(timestamps_ms: list[int]) -> list[int]:
    if not timestamps_ms:
        return []
    first = min(timestamps_ms)
    counts = Counter((t - first) // 1000 for t in timestamps_ms)
    return [counts.get(i, 0) for i in range(max(counts) + 1)]


# --- starting a worker --------------------------------------------------------------------------

STARTS: list[str] = []  # one line per worker start that needed a restart (reported with the results)


async def start_worker(settings: Settings, log_path: Path, ready, ready_s: float = 45.0,
                       attempts: int = 3) -> WorkerProcess:
    """Start a worker and wait until `await ready(timeout_s)` says it is processing (a decision
    has appeared). The caller publishes something to decide before calling this.

    A worker that is not processing after `ready_s` is stopped and started again with the same
    settings (it has decided nothing, so nothing is duplicated). Seen on fresh brokers: the group
    leader assigns before its metadata lists the just-created `<group_id>-junk-changelog`
    ("Ignoring missing topic"), the global table never gets its partition and the worker waits
    for it forever; a restart finds the topic and proceeds. Each restart is recorded in STARTS.
    """
    for attempt in range(1, attempts + 1):
        worker = WorkerProcess(settings, log_path).start()
        if await ready(ready_s):
            return worker
        stuck = "Ignoring missing topic" in worker.log_tail(200_000)
        worker.stop()
        STARTS.append(f"{settings.group_id}: no decision {ready_s:.0f} s after the worker started (attempt {attempt}"
                      + ("; its log says 'Ignoring missing topic'" if stuck else "") + "), restarted")
        print(f"  {STARTS[-1]}", flush=True)
    raise RuntimeError(f"{settings.group_id}: the worker did not start in {attempts} attempts; log tail:\n"
                       f"{Path(log_path).read_text(errors='replace')[-3000:]}")


def first_decision(settings: Settings):
    """A `ready` for start_worker: the decisions topic holds at least one record."""
    async def ready(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await topic_total(settings, settings.topic("decisions")) > 0:
                return True
            await asyncio.sleep(0.5)
        return False
    return ready


async def declare_outputs(settings: Settings) -> None:
    """Create the worker's output topics up front (as the worker would: same partition count), so
    that readers can start before the worker, whichever way the worker declares them."""
    await ensure_topics(settings, [settings.topic(t) for t in ("events", "decisions", "deadletter")])


# --- pass-through baseline ---------------------------------------------------------------------


@dataclass
class RateResult:
    label: str
    records: int
    seconds: float
    per_second: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return (self.records - 1) / self.seconds if self.seconds > 0 else 0.0


async def passthrough(settings: Settings, label: str, expected_records: int) -> RateResult:
    """Consume the events topic (own group), orjson decode + re-encode, produce one record each to
    an output topic, commit each batch's offsets once its records are acknowledged. Producer as
    Faust's: acks=all, linger 0, max batch 16 KiB."""
    topic, out_topic = settings.topic("events"), settings.topic(f"passthrough.{label}")
    await ensure_topics(settings, [out_topic])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap, group_id=f"{settings.group_id}-pt-{label}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=0,
                                max_batch_size=16384)
    await consumer.start()
    await producer.start()
    done, first, last = 0, 0.0, 0.0
    per_second: Counter = Counter()
    previous: tuple[list, dict] | None = None
    try:
        while done < expected_records:
            batch = await consumer.getmany(timeout_ms=1000)
            futures, offsets = [], {}
            for tp, messages in batch.items():
                for m in messages:
                    out = orjson.dumps(orjson.loads(m.value))
                    futures.append(await producer.send(out_topic, value=out, key=m.key))
                    last = time.time()
                    if not first:
                        first = last
                    per_second[int(last - first)] += 1
                if messages:
                    offsets[tp] = messages[-1].offset + 1
            done += len(futures)
            if previous is not None:  # the batch before: acknowledged -> commit (at-least-once)
                await asyncio.gather(*previous[0])
                await consumer.commit(previous[1])
            previous = (futures, offsets) if futures else None
        if previous is not None:
            await asyncio.gather(*previous[0])
            await consumer.commit(previous[1])
    finally:
        await producer.stop()
        await consumer.stop()
    bins = [per_second.get(i, 0) for i in range(max(per_second) + 1)] if per_second else []
    return RateResult(f"pass-through {label}", done, last - first, bins)


# --- the worker --------------------------------------------------------------------------------


@dataclass
class WorkerRun:
    decisions: RateResult
    events_rate: float
    deadletters: int
    outcomes: Counter
    problem: str | None
    wall_s: float  # worker start to the last decision seen by the poller (includes start-up)


async def worker_pass(settings: Settings, log_dir: Path, expected_decisions: int, n_events: int,
                      stall_s: float = 120.0) -> WorkerRun:
    """Start one worker over the (already written) events topic; wait for every decision."""
    started = time.monotonic()
    await declare_outputs(settings)
    worker = await start_worker(settings, log_dir / f"worker-{settings.group_id}.log", first_decision(settings))
    try:
        total, problem = await wait_for_count(settings, settings.topic("decisions"), expected_decisions, worker,
                                              stall_s=stall_s)
        wall = time.monotonic() - started
        await asyncio.sleep(1.0)  # anything beyond the expected count (duplicates) would show now
    finally:
        worker.stop()
    records = await read_all(settings, settings.topic("decisions"))
    ts = [t for t, _ in records]
    outcomes = Counter(f"{d['outcome']}/{d['reason']}" for _, d in records)
    span = (max(ts) - min(ts)) / 1000 if ts else 0.0
    dead = await topic_total(settings, settings.topic("deadletter"))
    result = RateResult("sendgate worker", len(records), span, bins_per_second(ts))
    events_rate = n_events / span if span else 0.0
    return WorkerRun(result, events_rate, dead, outcomes, problem, wall)
