"""Throughput on a real broker: one sendgate worker process next to a raw aiokafka pass-through,
and `sendgate replay` over the same log; plus the Kafka and worker helpers the other workloads use.

Method: a seeded, realistic mix (about 60 % send, 30 % inbound, the rest opt_in / opt_out /
sender_profile; SMS Spam Collection texts; Zipf-like apps; a few personalised blasts; explicit event
times) is published up front to one events topic, keyed by app. The same log goes once through
`Gate.handle_record` in this process: the decisions to expect, the outcome counts every Kafka run
must reproduce, and an in-process ceiling. The pass-through runs before (A) and after (B) the
worker; the baseline is their mean: its own group reads the topic, orjson-decodes and re-encodes
each value, produces it, and commits a batch once its records are acknowledged. The worker runs
until every expected decision is there. Span = first to last produce (pass-through: this process's
clock at `send`; worker: decision record timestamps, i.e. the worker's produce times), so start-up
and group joins are not counted. The worker's events/s counts every event of the log over the
decisions' span (events before the first and after the last decision are few). Replay: the
function `sendgate replay --name bench` runs (default policy), in this process, over the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sendgate.models.decisions import Decision
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import Gate, MemoryStore
from sendgate.models.sources import OPERATOR
from sendgate.streams.config import Settings
from sendgate.streams.kafka import end_offsets, ensure_topics, partitions_of, read_log
from sendgate.streams.local.keyring import LOCAL_KEYS, write_local_keyring
from sendgate.streams.local.process import WorkerProcess
from sendgate.streams.ops.replay import ReplayResult, replay, replay_topic

from ._common import DAY, T0, Log, labelled, load_corpus

# --- settings ------------------------------------------------------------------------------------


def bench_settings(bootstrap: str, data_dir: Path, tag: str, **overrides: Any) -> Settings:
    """Worker settings as the integration tests use them (fast group joins on one broker, no web
    server, no ticker), 8 partitions, the default RocksDB store, its own prefix, group and store."""
    run = uuid.uuid4().hex[:6]
    keyring = data_dir / f"{tag}-{run}-keyring.toml"  # records are signed and verified, as in production
    write_local_keyring(keyring)
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=f"bench-{tag}-{run}.",
        group_id=f"bench-{tag}-{run}",
        partitions=8,
        store="rocksdb://",
        data_dir=str(data_dir / f"{tag}-{run}"),
        web_enabled=False,
        tick_interval_s=0,
        session_timeout_s=6.0,
        heartbeat_interval_s=1.0,
        rebalance_timeout_s=3.0,
        log_level="warning",
        keyring_file=str(keyring),
        key_id=LOCAL_KEYS[OPERATOR],
    ).with_(**overrides)


FAUST_SETTINGS = (
    "processing_guarantee",
    "store",
    "producer_acks",
    "producer_linger",
    "producer_max_batch_size",
    "producer_compression_type",
    "broker_commit_every",
    "broker_commit_interval",
    "broker_max_poll_records",
    "consumer_max_fetch_size",
    "stream_buffer_maxsize",
    "stream_wait_empty",
    "broker_session_timeout",
    "broker_heartbeat_interval",
    "broker_rebalance_timeout",
    "topic_partitions",
    "table_standby_replicas",
)


def faust_settings(settings: Settings) -> dict[str, str]:
    """The Faust settings the worker actually runs with (read from its App in a child process)."""
    script = (
        "import json; from sendgate.streams.worker.app import build_worker; "
        "from sendgate.streams.config import Settings; c = build_worker(Settings.from_env()).faust.conf; "
        f"print(json.dumps({{n: str(getattr(c, n)) for n in {FAUST_SETTINGS!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_settings_table(s: Settings) -> dict[str, str]:
    return {
        "partitions": str(s.partitions),
        "store": s.store,
        "tick_interval_s": str(s.tick_interval_s),
        "web": str(s.web_enabled),
        "session/heartbeat/rebalance s": f"{s.session_timeout_s}/{s.heartbeat_interval_s}/{s.rebalance_timeout_s}",
        "log_level": s.log_level,
        "agent concurrency": "1 (one `gate` agent)",
    }


# --- the generated log ---------------------------------------------------------------------------

NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Mia",
    "Noah",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
]


@dataclass(frozen=True)
class Mix:
    """The shape of a generated log: how many apps, senders per app and blasts."""

    name: str
    n_apps: int
    senders_per_app: tuple[int, int]
    events_per_blast: int  # one blast per this many events (at least 2)
    blast_size: tuple[int, int]  # recipients: n // 40 clamped to this range


MIXES = {
    # the log everything is tuned and compared on
    "bench": Mix("bench", 50, (2, 8), 40_000, (30, 250)),
    # a check that a gain is not tuned to the bench log: many senders, many burst clusters
    "many-senders": Mix("many-senders", 400, (4, 16), 1_500, (12, 40)),
}


def generate(n: int, seed: int = 20240601, mix: Mix = MIXES["bench"]) -> Log:
    """A deterministic realistic mix of `n` events (see the module docstring), shaped by `mix`."""
    rng = random.Random(seed)
    n_apps = mix.n_apps
    corpus = load_corpus()
    ham, spam = ([t for t in labelled(corpus, label) if t.strip()] for label in ("ham", "spam"))
    apps = [f"app-{i:03d}" for i in range(n_apps)]
    weights = [1.0 / (i + 1) ** 0.9 for i in range(n_apps)]
    cum_weights = list(itertools.accumulate(weights))
    n_userkeys = max(200, n // 4)
    senders: dict[str, list[str]] = {}
    pool: dict[str, int] = {}  # userkeys per app
    registered: dict[tuple[str, str], int] = {}
    for app, w in zip(apps, weights):
        senders[app] = [f"sender-{j}" for j in range(rng.randint(*mix.senders_per_app))]
        pool[app] = max(20, int(n_userkeys * w / sum(weights)))
        for s in senders[app]:
            young = rng.random() < 0.2  # registered < 90 days ago: a risky sender
            registered[(app, s)] = T0 - (rng.randint(5, 60) if young else rng.randint(120, 2000)) * DAY
    area = {app: f"+1{zlib.crc32(app.encode()) % 900 + 100}" for app in apps}

    def userkey(app: str, i: int) -> str:
        return f"{area[app]}{i:07d}"

    # blasts: planned up front so that opt_in events can target their recipients beforehand
    n_blasts = max(2, round(n / mix.events_per_blast))
    blast_size = max(mix.blast_size[0], min(mix.blast_size[1], n // 40))
    blast_span = max(blast_size * 4, n // 60)  # events over which a blast's sends are spread
    blasts = []
    for b in range(n_blasts):
        app = rng.choices(apps[: max(10, n_apps // 10)], k=1)[0]
        sender = rng.choice(senders[app])
        recipients = rng.sample(range(pool[app]), min(blast_size, pool[app]))
        start = int(n * (b + 0.5) / (n_blasts + 0.5)) - blast_span // 2
        blasts.append(
            {
                "app": app,
                "sender": sender,
                "template": rng.choice(spam),
                "recipients": recipients,
                "start": max(0, start),
                "next": 0,
                "p": len(recipients) / blast_span,
            }
        )
    to_opt_in = [(bl["app"], r) for bl in blasts for r in bl["recipients"]]
    rng.shuffle(to_opt_in)

    recent: dict[str, deque] = {app: deque(maxlen=50) for app in apps}  # (event_id, sender, userkey)
    pairs: dict[str, list[tuple[str, int]]] = {app: [] for app in apps}  # (sender, userkey index) that wrote
    pair_seen: set[tuple[str, str, int]] = set()
    log = Log(seed, apps=n_apps, senders=sum(len(s) for s in senders.values()), userkeys=sum(pool.values()), mix=mix)
    ts = T0
    for i in range(n):
        ts += int(rng.expovariate(1 / 150)) + 1  # ~150 ms of event time per event on average
        seq = len(log.records)
        active = [bl for bl in blasts if bl["start"] <= i and bl["next"] < len(bl["recipients"])]
        if active and rng.random() < sum(bl["p"] for bl in active):
            bl = rng.choice(active)
            r = bl["recipients"][bl["next"]]
            bl["next"] += 1
            text = f"{rng.choice(NAMES)}, {bl['template']}" if rng.random() < 0.7 else bl["template"]
            log.emit(
                "send", f"req-{seq:08d}", bl["app"], ts, sender=bl["sender"], userkey=userkey(bl["app"], r), text=text
            )
            continue
        app = rng.choices(apps, cum_weights=cum_weights, k=1)[0]
        roll = rng.random()
        if roll < 0.58:  # send (blast sends above bring the share to about 60 %)
            mode = rng.random()
            if mode < 0.35 and recent[app]:
                event_id, sender, uk = rng.choice(recent[app])
                fields = dict(sender=sender, userkey=userkey(app, uk), text=rng.choice(ham), reply_to=event_id)
            elif mode < 0.80 and pairs[app]:
                sender, uk = rng.choice(pairs[app])
                fields = dict(sender=sender, userkey=userkey(app, uk), text=rng.choice(ham))
            else:  # cold: a userkey that may never have written (no_conversation unless opted in)
                fields = dict(
                    sender=rng.choice(senders[app]),
                    userkey=userkey(app, rng.randrange(pool[app])),
                    text=rng.choice(spam if rng.random() < 0.5 else ham),
                )
            log.emit("send", f"req-{seq:08d}", app, ts, **fields)
        elif roll < 0.88:  # inbound
            if pairs[app] and rng.random() < 0.4:
                sender, uk = rng.choice(pairs[app])
            else:
                sender, uk = rng.choice(senders[app]), rng.randrange(pool[app])
            k = rng.random()
            text = "STOP" if k < 0.01 else "start" if k < 0.013 else rng.choice(ham)
            log.emit("inbound", f"in-{seq:08d}", app, ts, sender=sender, userkey=userkey(app, uk), text=text)
            recent[app].append((f"in-{seq:08d}", sender, uk))
            if (app, sender, uk) not in pair_seen:
                pair_seen.add((app, sender, uk))
                pairs[app].append((sender, uk))
        elif roll < 0.93:  # opt_in: half of them for future blast recipients
            if to_opt_in and rng.random() < 0.5:
                app, uk = to_opt_in.pop()
            else:
                uk = rng.randrange(pool[app])
            log.emit("opt_in", f"oi-{seq:08d}", app, ts, userkey=userkey(app, uk), source="web form")
        elif roll < 0.945:  # opt_out
            uk = rng.choice(pairs[app])[1] if pairs[app] and rng.random() < 0.3 else rng.randrange(pool[app])
            log.emit("opt_out", f"oo-{seq:08d}", app, ts, userkey=userkey(app, uk), source="support ticket")
        else:  # sender_profile
            sender = rng.choice(senders[app])
            log.emit("sender_profile", f"sp-{seq:08d}", app, ts, sender=sender, registered_ts=registered[(app, sender)])
    log.blasts = [(bl["app"], bl["sender"], bl["next"]) for bl in blasts]
    log.event_hours = (ts - T0) / 3_600_000
    return log


def describe(log: Log) -> str:
    n = len(log.records)
    mix = ", ".join(f"{t} {c:,} ({100 * c / n:.1f} %)" for t, c in log.types.most_common())
    return (
        f"{n:,} events (seed {log.seed}): {mix}. {log.apps} apps (Zipf-like volume), {log.senders} senders, "
        f"{log.userkeys:,} userkeys; {len(log.blasts)} blasts of one spam template each, personalised "
        f"({'; '.join(f'{a}/{s} x{r}' for a, s, r in log.blasts)}); event time spans "
        f"{log.event_hours * 60:,.0f} min (explicit `ts`)."
    )


# --- in-process expectation ----------------------------------------------------------------------


@dataclass
class Expected:
    decisions: int
    outcomes: Counter  # "outcome/reason" -> count
    seconds: float
    events: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def expected(log: Log) -> Expected:
    """Run the log through the pure gate in this process: what every Kafka run must reproduce."""
    gate, store = Gate(), MemoryStore()
    found: Counter = Counter()
    started = time.perf_counter()
    for key, value in log.records:
        try:
            out = gate.handle_record(key, value, record_time(value), store)
        except InvalidEvent:  # dead-lettered, as by the worker
            continue
        for rec in out:
            if isinstance(rec, Decision):
                found[f"{rec.outcome}/{rec.reason}"] += 1
    return Expected(sum(found.values()), found, time.perf_counter() - started, len(log.records))


# --- Kafka helpers -------------------------------------------------------------------------------


def record_time(value: bytes) -> int | None:
    """The record timestamp the log is published with: the event's own `ts` (an honest backfill,
    as `sendgate publish` writes history), or None (the producer's clock) for events without one."""
    doc = orjson.loads(value)
    return doc.get("ts") if isinstance(doc, dict) else None


async def publish_records(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    """Write records to the events topic as fast as aiokafka allows; returns seconds."""
    topic = settings.topic("events")
    await ensure_topics(settings, [topic])
    started, last = time.monotonic(), None
    async with AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
    ) as producer:
        signer = settings.signing_key()
        for key, value in records:
            last = await producer.send(
                topic,
                value=value,
                key=key,
                timestamp_ms=record_time(value),
                headers=signer.headers(value) if signer else None,
            )
        await producer.flush()
        if last is not None:
            await last
    return time.monotonic() - started


async def topic_total(settings: Settings, topic: str) -> int:
    """Records in `topic` (the sum of its end offsets); 0 while it does not exist."""
    try:
        return sum((await end_offsets(settings, topic)).values())
    except LookupError:
        return 0


async def wait_for_count(
    settings: Settings, topic: str, count: int, worker: WorkerProcess | None, stall_s: float = 90.0, poll_s: float = 0.5
) -> tuple[int, str | None]:
    """Poll the end offsets of `topic` until it holds `count` records. Returns (records, problem):
    problem says why it stopped early (no progress for `stall_s`, the worker exited)."""
    await partitions_of(settings, topic, 120.0)
    last, last_change = -1, time.monotonic()
    while True:
        total = await topic_total(settings, topic)
        if total >= count:
            return total, None
        if total != last:
            last, last_change = total, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return total, f"no progress for {stall_s:.0f} s at {total:,} of {count:,} records"
        if worker is not None and not worker.running:
            return total, f"the worker exited at {total:,} of {count:,} records"
        await asyncio.sleep(poll_s)


async def read_all(settings: Settings, topic: str) -> list[tuple[int, dict]]:
    """(record timestamp ms, decoded value) of every record now in `topic`."""
    await partitions_of(settings, topic, 30.0)
    until = await end_offsets(settings, topic)
    return [(r.timestamp, orjson.loads(r.value)) async for r in read_log(settings, topic, until)]


def outcomes(decisions: list[tuple[int, dict]]) -> Counter:
    return Counter(f"{d['outcome']}/{d['reason']}" for _, d in decisions)


def bins_per_second(times: list[float], second: float = 1.0) -> list[int]:
    """Records per 1 s bin from the first one (`second`: 1,000 for times in ms)."""
    first = min(times, default=0)
    counts = Counter(int((t - first) // second) for t in times)
    return [counts.get(i, 0) for i in range(max(counts) + 1)] if counts else []


# --- starting a worker ---------------------------------------------------------------------------

STARTS: list[str] = []  # one line per worker start that needed a restart (reported with the results)


async def start_worker(
    settings: Settings, log_path: Path, ready, ready_s: float = 45.0, attempts: int = 3
) -> WorkerProcess:
    """Start a worker and wait until `await ready(timeout_s)` says it is processing; the caller has
    published something to decide. One that is not processing after `ready_s` has decided nothing and
    is started again (on fresh brokers the group leader can assign before its metadata lists the
    just-created junk changelog, "Ignoring missing topic", and the worker then waits forever)."""
    for attempt in range(1, attempts + 1):
        worker = WorkerProcess(settings, log_path).start()
        if await ready(ready_s):
            return worker
        stuck = "Ignoring missing topic" in worker.log_tail(200_000)
        worker.stop()
        STARTS.append(
            f"{settings.group_id}: no decision {ready_s:.0f} s after the worker started (attempt {attempt}"
            + ("; its log says 'Ignoring missing topic'" if stuck else "")
            + "), restarted"
        )
        print(f"  {STARTS[-1]}", flush=True)
    raise RuntimeError(
        f"{settings.group_id}: the worker did not start in {attempts} attempts; log tail:\n"
        f"{Path(log_path).read_text(errors='replace')[-3000:]}"
    )


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


@contextlib.contextmanager
def stopping(*workers: WorkerProcess):
    """Stop the workers however the block ends (stopping a stopped one does nothing)."""
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()


async def declare_outputs(settings: Settings) -> None:
    """Create the worker's topics up front (same partition count), so readers can start before it."""
    await ensure_topics(settings, [settings.topic(t) for t in ("events", "decisions", "deadletter")])


# --- pass-through baseline, the worker, replay ---------------------------------------------------


@dataclass
class RateResult:
    label: str
    records: int
    seconds: float
    per_second: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.records - 1) / self.seconds if self.seconds > 0 else 0.0


async def passthrough(settings: Settings, label: str, expected_records: int) -> RateResult:
    """Consume the events topic (own group), orjson decode + re-encode, produce one record each to
    an output topic, commit each batch's offsets once its records are acknowledged. Producer as
    Faust's: acks=all, linger 0, max batch 16 KiB."""
    topic, out_topic = settings.topic("events"), settings.topic(f"passthrough.{label}")
    await ensure_topics(settings, [out_topic])
    done, sent_at = 0, []
    previous: tuple[list, dict] | None = None
    async with (
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap,
            enable_auto_commit=False,
            group_id=f"{settings.group_id}-pt-{label}",
            auto_offset_reset="earliest",
        ) as consumer,
        AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", linger_ms=0, max_batch_size=16384
        ) as producer,
    ):
        while done < expected_records:
            batch = await consumer.getmany(timeout_ms=1000)
            futures, offsets = [], {}
            for tp, messages in batch.items():
                for m in messages:
                    out = orjson.dumps(orjson.loads(m.value))
                    futures.append(await producer.send(out_topic, value=out, key=m.key))
                    sent_at.append(time.time())
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
    span = sent_at[-1] - sent_at[0] if sent_at else 0.0
    return RateResult(f"pass-through {label}", done, span, bins_per_second(sent_at))


@dataclass
class WorkerRun:
    decisions: RateResult
    events_rate: float
    deadletters: int
    outcomes: Counter
    problem: str | None
    wall_s: float  # worker start to the last decision seen by the poller (includes start-up)


async def worker_pass(
    settings: Settings, log_dir: Path, expected_decisions: int, n_events: int, stall_s: float = 120.0
) -> WorkerRun:
    """Start one worker over the (already written) events topic; wait for every decision."""
    started = time.monotonic()
    await declare_outputs(settings)
    worker = await start_worker(settings, log_dir / f"worker-{settings.group_id}.log", first_decision(settings))
    with stopping(worker):
        _, problem = await wait_for_count(
            settings, settings.topic("decisions"), expected_decisions, worker, stall_s=stall_s
        )
        wall = time.monotonic() - started
        await asyncio.sleep(1.0)  # anything beyond the expected count (duplicates) would show now
    records = await read_all(settings, settings.topic("decisions"))
    ts = [t for t, _ in records]
    span = (max(ts) - min(ts)) / 1000 if ts else 0.0
    dead = await topic_total(settings, settings.topic("deadletter"))
    return WorkerRun(
        RateResult("sendgate worker", len(records), span, bins_per_second(ts, 1000)),
        n_events / span if span else 0.0,
        dead,
        outcomes(records),
        problem,
        wall,
    )


@dataclass
class AnchorRun:
    mode: str
    echoes: RateResult
    problem: str | None


async def faust_anchor_pass(settings: Settings, log_dir: Path, mode: str, n_events: int) -> AnchorRun:
    """A do-nothing Faust agent (bench/faust_anchor.py) in a child process over the same log, in its
    own group: what Faust itself costs per record. Span from its echoes' record timestamps."""
    from . import faust_anchor  # imports Faust: not for the in-process users of this module (bench.identity)

    anchor = settings.with_(group_id=f"{settings.group_id}-anchor-{mode}")
    out = faust_anchor.output_topic(settings, mode)
    await ensure_topics(settings, [out])
    process = AnchorProcess(anchor, log_dir / f"anchor-{mode}.log", mode).start()
    with stopping(process):
        _, problem = await wait_for_count(settings, out, n_events, process, stall_s=120.0)
    ts = [r.timestamp async for r in read_log(settings, out, await end_offsets(settings, out))]
    span = (max(ts) - min(ts)) / 1000 if ts else 0.0
    return AnchorRun(mode, RateResult(f"Faust agent, {mode}", len(ts), span, bins_per_second(ts, 1000)), problem)


class AnchorProcess(WorkerProcess):
    """`python -m bench.faust_anchor MODE` with the worker's environment."""

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.faust_anchor", *self.args]


@dataclass
class ReplaySpeed:
    result: ReplayResult
    outcomes: Counter
    topic: str


async def replay_speed(settings: Settings, name: str = "bench") -> ReplaySpeed:
    """`sendgate replay --name bench` (the function the CLI runs, default policy) in this process
    over the log the live worker decided; its decisions are read back to compare the outcomes."""
    result = await replay(settings, name, settings.policy(), quiet=True)
    topic = replay_topic(settings, name)
    return ReplaySpeed(result, outcomes(await read_all(settings, topic)), topic)
