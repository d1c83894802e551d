"""A fault soak on a real broker: two workers deciding a fixed open-loop rate of send requests while
a fault strikes every few minutes; then the counts (issue 27, part 5).

    python -m bench.soak                      # 30 minutes at 910 requests/s, a fault every 4 minutes
    python -m bench.soak --quick              # about 5 minutes: one kill -9, one SIGSTOP, one broker kill -9
    bench/run --only soak [--quick]           # the same, as a workload of the suite (CI: bench/run --quick)

Method: the soak starts its own broker (`LocalKafka`, a fixed port and data dir, so that it can be
killed and started again), publishes the latency workload's setup (sender profiles, inbounds,
opt-ins; signed with a keyring of the run, as every bench record is) and starts two workers in one
group (`sendgate worker` processes, each with its own RocksDB store dir and web port; production
group timings: session 10 s, heartbeat 3 s, rebalance 60 s; wall-clock ticker every 1 s). Requests
(the latency workload's mix: 35 % replies, 65 % sends to opted-in userkeys) are produced open loop:
request i is due at t0 + i/rate and produced as soon as it is due (a late loop produces everything
due at once; a producer blocked by a broker outage catches up the same way), acks=all, idempotent.
Latency = arrival of the request's first decision at a subscriber (no group, every partition, from
the beginning) - the request's intended send time, so an outage counts in full for every request
it delays. Faults in rotation, the first after 2.5 minutes (quick: 40 s):
kill -9 of worker A, then a new process on its store at once; SIGSTOP of worker B for the session
timeout + 10 s, then SIGCONT; kill -9 of the broker, then the broker again on the same port and data
dir; worker B's store dir is a tmpfs mounted for the run, filled at once by one file (fallocate:
the fault lasts as long as the disk is full, plus the fill's few seconds) kept 60 s, then the
file is removed. A worker process that exits on its own is started again at once, as an
orchestrator would (counted, with its exit code). After the load: wait until every acknowledged
request has a decision (at most 600 s, quick 90 s, or 240 s without a new one), stop the workers,
read the decisions and deliveries
topics to their end, and run `sendgate replay --name soak --compare` over the events topic.
Counts: lost = requests the broker acknowledged that have no decision; conflicting = requests with
two different first answers (accepted / rejected / delayed decision ids) or two different endings
(released / cancelled decision ids); delivered twice = requests with deliveries under two
different decision ids (a delivery repeated with its own decision id, which subscribers drop, is
counted apart); replay changed = requests whose chain of decisions the replay decides otherwise.
Per fault: the longest time any decisions partition went without a new decision, from the fault's
start to the next fault (the same figure before the first fault is the baseline), and the time
until the requests due after the fault are decided within 1 s again. RSS (VmRSS) of each worker
process every 5 s, and the part of it RocksDB holds outside Python (the worker's
`sendgate_store_memory_bytes`: memtables, table readers, block cache). Last, each worker's local `state` store is compared with the changelog, as the
recovery at its next start would make it. lost, conflicting, delivered twice or replay changed above
0, or a store that differs, fail the run (exit 1); the other targets (recovery times, memory) are
reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.streams.config import Settings
from sendgate.streams.kafka import end_offsets, partitions_of, read_log
from sendgate.streams.local.broker import KAFKA_VERSION, LocalKafka, free_port
from sendgate.streams.local.process import WorkerProcess

from ._common import ROOT, fmt, md_table, out_path, write_report
from .latency import _request, make_setup
from .throughput import bench_settings, declare_outputs, publish_records
from .worker_memory import vmrss_mb, wait_for_split
from sendgate.streams.worker.outbox import partition_for

KILL, STOP, BROKER, DISK = "kill -9 worker A", "SIGSTOP worker B", "kill -9 broker", "full disk (worker B's store)"
ROTATION = (KILL, STOP, BROKER, DISK)
QUICK_ROTATION = (KILL, STOP, BROKER)
FIRST_ANSWERS = ("accepted", "rejected", "delayed")
DISK_FULL_S = 60.0
RECOVERED_WITHIN_S = 60.0  # the target: decisions again within 60 s of every fault
CAUGHT_UP_MS = 1000.0  # a fault is over for the requests once those due after it are decided within 1 s again
PREFIX = "soak-"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Fault:
    kind: str
    start: float  # wall clock
    end: float = 0.0  # the fault over: a new process started, SIGCONT sent, broker answering, file removed
    note: str = ""
    gap_s: float = 0.0  # the longest time a decisions partition went without a new decision (from start)
    gap_partition: int = -1
    caught_up_s: float | None = None  # from start until requests due after it are decided within 1 s again


@dataclass
class Exit:
    worker: str
    at: float
    code: int | None
    why: str = ""  # the last critical (else error) line of its log


@dataclass
class Counts:
    requests: int = 0
    acked: int = 0
    not_acked: int = 0  # the producer gave up on them (an error): never acknowledged
    decided: int = 0
    lost: list[str] = field(default_factory=list)
    lost_by_partition: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # count, first, last
    conflicting: list[str] = field(default_factory=list)
    delivered: int = 0
    delivered_twice: list[str] = field(default_factory=list)
    delivery_repeats: int = 0  # delivery records repeated with their own decision id
    decision_records: int = 0
    decision_repeats: int = 0  # decision records repeated with their own decision id
    replay: str = ""  # `sendgate replay --compare`'s summary
    replay_changed: int | None = None
    outcomes: Counter = field(default_factory=Counter)

    @property
    def correctness(self) -> list[str]:
        """What fails the run: lost, conflicting, delivered twice, and requests the replay decides
        otherwise (this workload has no cross-app junk reports, so replay must equal live: a change
        is a request the live gate decided from the wrong state, which no other count shows)."""
        return [
            f"{name}: {len(items)}"
            for name, items in (
                ("lost", self.lost),
                ("conflicting", self.conflicting),
                ("delivered twice", self.delivered_twice),
            )
            if items
        ] + ([f"replay changed: {self.replay_changed}"] if self.replay_changed else [])


class Soak:
    def __init__(self, a: argparse.Namespace, work: Path) -> None:
        self.a, self.work = a, work
        self.total = int(a.rate * a.minutes * 60)
        self.intended = np.zeros(self.total)
        self.first = np.full(self.total, np.nan)  # arrival of each request's first decision
        self.acked = np.zeros(self.total, dtype=np.int8)  # 0 pending, 1 acknowledged, 2 failed
        self.app = np.zeros(self.total, dtype=np.int16)  # lat-app-NNN
        self.observed_until = 0.0  # the last time decisions were read
        self.sent = 0
        self.answers: dict[int, str] = {}  # request -> its first answer's decision id (first-answer outcomes)
        self.endings: dict[int, str] = {}  # request -> its release / cancel decision id
        self.conflicts: list[str] = []
        self.seen: set[str] = set()
        self.records = 0
        self.per_second: Counter = Counter()  # new decision ids per second of arrival (since t0)
        self.arrivals: dict[int, array] = {}  # decisions partition -> arrival times of new decisions
        self.last_offset: dict[int, int] = {}
        self.outcomes: Counter = Counter()
        self.faults: list[Fault] = []
        self.exits: list[Exit] = []
        # (t, worker, pid, RSS MB, MB of it RocksDB's: memtables, table readers, block cache; nan: not read)
        self.rss: list[tuple[float, str, int, float, float]] = []
        self.busy: set[str] = set()  # workers a fault is handling (not restarted by the supervisor)
        self.t0 = 0.0
        self.load_end = 0.0
        self.starts: Counter = Counter()
        self.tmpfs: str | None = None  # the mount point, or None with the reason in tmpfs_note
        self.tmpfs_note = ""
        self.problems: list[str] = []
        self.divergence: dict[str, list[list[str]]] = {}  # worker -> store_divergence rows
        self.setup_s = self.drain_s = self.replay_s = 0.0
        self.calm_p99, self.caught_up_ms = 0.0, CAUGHT_UP_MS

    # --- the cluster ---------------------------------------------------------------------------

    def start_broker(self) -> None:
        self.kafka = LocalKafka(port=self.a.broker_port, data_dir=self.work / "kafka")
        self.kafka.start()

    def mount_tmpfs(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        if DISK not in self.a.rotation:
            self.tmpfs_note = "no full-disk fault in the rotation: worker B's store on the work dir's disk"
            return
        if self.a.no_tmpfs:
            self.tmpfs_note = "--no-tmpfs: worker B's store on the work dir's disk, no full-disk fault"
            return
        if os.geteuid() != 0:
            self.tmpfs_note = "not root: cannot mount a tmpfs, no full-disk fault"
            return
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.a.tmpfs_mb}m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            self.tmpfs_note = f"mount -t tmpfs failed ({done.stderr.strip()}): no full-disk fault"
            return
        self.tmpfs = str(where)
        self.tmpfs_note = f"worker B's store dir is a {self.a.tmpfs_mb} MB tmpfs"

    def worker(self, label: str) -> WorkerProcess:
        self.starts[label] += 1
        s = self.settings.with_(data_dir=str(self.work / f"store-{label.lower()}"), web_port=self.ports[label])
        env = dict(self.a.worker_a_env) if label == "A" else {}
        return WorkerProcess(s, self.work / f"worker-{label}-{self.starts[label]}.log", env=env).start()

    # --- the load and the subscriber -------------------------------------------------------------

    async def load(self, producer: AIOKafkaProducer) -> None:
        rng, topic, rate = random.Random(self.a.seed), self.settings.topic("events"), self.a.rate
        signer = self.settings.signing_key()
        i = 0
        while i < self.total:
            due = min(self.total, int((time.time() - self.t0) * rate) + 1)
            while i < due:
                key, value = _request(self.setup, rng, f"{PREFIX}{i:08d}")
                self.intended[i] = self.t0 + i / rate
                self.app[i] = int(key[-3:])
                try:
                    future = await producer.send(topic, value=value, key=key, headers=signer.headers(value))
                    future.add_done_callback(
                        lambda f, i=i: self.acked.__setitem__(i, 2 if f.cancelled() or f.exception() is not None else 1)
                    )
                except Exception as exc:  # the producer gave up (e.g. its buffer stayed full past its timeout)
                    self.acked[i] = 2
                    if not self.problems or "producer" not in self.problems[-1]:
                        log(f"producer: {type(exc).__name__}: {exc}")
                i += 1
                self.sent = i
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, self.t0 + i / rate - time.time()))
        self.load_end = time.time()

    def note(self, partition: int, offset: int, value: bytes, arrival: float) -> None:
        self.records += 1
        self.last_offset[partition] = offset
        d = orjson.loads(value)
        did, rid = d["decision_id"], d["request_id"]
        if did in self.seen:
            return
        self.seen.add(did)
        self.outcomes[f"{d['outcome']}/{d['reason']}"] += 1
        self.per_second[int(arrival - self.t0)] += 1
        self.arrivals.setdefault(partition, array("d")).append(arrival)
        if not rid.startswith(PREFIX):
            return
        i = int(rid[len(PREFIX) :])
        if np.isnan(self.first[i]):
            self.first[i] = arrival
        kind = self.answers if d["outcome"] in FIRST_ANSWERS else self.endings
        if kind.setdefault(i, did) != did:
            self.conflicts.append(f"{d['app']}/{rid}: {kind[i]} and {did} (p{partition}@{offset})")

    async def subscribe(self) -> None:
        topic = self.settings.topic("decisions")
        partitions = await partitions_of(self.settings, topic, 60.0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_poll_records=5000,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                arrival = time.time()
                for tp, messages in batch.items():
                    for m in messages:
                        self.note(tp.partition, m.offset, m.value, arrival)
        finally:
            await consumer.stop()

    async def catch_up(self) -> None:
        """The decisions the subscriber had not read yet (after it stopped), from their offsets."""
        topic = self.settings.topic("decisions")
        start = {p: o + 1 for p, o in self.last_offset.items()}
        async for r in read_log(self.settings, topic, await end_offsets(self.settings, topic), start=start):
            self.note(r.partition, r.offset, r.value, time.time())

    # --- faults, the supervisor, RSS ------------------------------------------------------------

    async def supervise(self) -> None:
        """Start again a worker that exited on its own (an orchestrator would); sample RSS every 5 s."""
        next_rss = 0.0
        while True:
            for label, w in list(self.workers.items()):
                if label not in self.busy and not w.running and w.process is not None:
                    code = w.process.returncode
                    lines = w.log_tail(200_000).splitlines()
                    why = next(
                        (ln for ln in reversed(lines) if "[CRITICAL]" in ln),
                        next((ln for ln in reversed(lines) if "[ERROR]" in ln), ""),
                    )
                    self.exits.append(Exit(label, time.time(), code, why[:600]))
                    log(
                        f"worker {label} exited on its own with code {code}: started again; log tail:\n"
                        f"{w.log_tail(1500)}"
                    )
                    self.workers[label] = self.worker(label)
            if time.time() >= next_rss:
                next_rss = time.time() + 5.0
                for label, w in list(self.workers.items()):
                    with contextlib.suppress(Exception):
                        if w.process is not None:
                            rocks = await asyncio.to_thread(store_memory_mb, self.ports[label])
                            self.rss.append((time.time(), label, w.process.pid, vmrss_mb(w.process.pid), rocks))
            await asyncio.sleep(0.5)  # poll interval

    async def fault(self, kind: str) -> Fault:
        f = Fault(kind, time.time())
        self.faults.append(f)
        log(f"fault: {kind}")
        if kind == KILL:
            self.busy.add("A")
            try:
                await asyncio.to_thread(self.workers["A"].kill)
                self.workers["A"] = self.worker("A")
            finally:
                self.busy.discard("A")
            f.end = time.time()
            f.note = "a new process on the same store at once"
        elif kind == STOP:
            pid = self.workers["B"].process.pid
            os.kill(pid, signal.SIGSTOP)
            held = self.settings.session_timeout_s + 10.0
            await asyncio.sleep(held)  # holds the fault: past the session timeout
            os.kill(pid, signal.SIGCONT)
            f.end = time.time()
            f.note = f"stopped {held:g} s (session timeout {self.settings.session_timeout_s:g} s)"
        elif kind == BROKER:
            proc = self.kafka.process
            os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            self.kafka.process = None
            await asyncio.to_thread(self.kafka.start, 180.0)
            f.end = time.time()
            f.note = f"broker answering metadata again {f.end - f.start:.1f} s after the kill"
        elif kind == DISK:
            filler = Path(self.tmpfs) / "fill.bin"
            filled = await asyncio.to_thread(fill, filler)
            fill_s = time.time() - f.start
            free = os.statvfs(self.tmpfs)
            await asyncio.sleep(DISK_FULL_S)  # holds the fault for a minute
            filler.unlink()
            f.end = time.time()
            f.note = (
                f"filled in {fill_s:.1f} s by one file of {filled / 2**20:,.0f} MB (fallocate; "
                f"{free.f_bavail * free.f_frsize // 1024} kB left), removed after {DISK_FULL_S:g} s"
            )
        log(f"fault over: {kind}: {f.note}")
        return f

    async def faults_run(self) -> None:
        rotation = [k for k in self.a.rotation if k != DISK or self.tmpfs]
        at, k = self.a.first_fault_s, 0
        while rotation and at < self.a.minutes * 60 - 30 and (not self.a.quick or k < len(rotation)):
            await asyncio.sleep(max(0.0, self.t0 + at - time.time()))  # the schedule, not a wait for a result
            await self.fault(rotation[k % len(rotation)])
            k += 1
            at += self.a.fault_every_s

    # --- the run ----------------------------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        self.setup = make_setup(self.a.seed, quick=False)
        await declare_outputs(self.settings)
        await publish_records(self.settings, self.setup.log.records)
        self.workers = {"A": self.worker("A"), "B": self.worker("B")}
        try:
            for w in self.workers.values():
                await asyncio.to_thread(w.wait_ready, 300)
            await asyncio.to_thread(wait_for_split, list(self.workers.values()), self.settings.partitions, 300)
            self.setup_s = time.monotonic() - started
            log(
                f"two workers ready, partitions split ({self.setup_s:.0f} s); load {self.a.rate:,}/s for "
                f"{self.a.minutes:g} min ({self.total:,} requests)"
            )
            async with AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=120_000,
            ) as producer:
                self.t0 = time.time()
                sub = asyncio.create_task(self.subscribe())
                sup = asyncio.create_task(self.supervise())
                faults = asyncio.create_task(self.faults_run())
                progress = asyncio.create_task(self.progress())
                await self.load(producer)
                await producer.flush()
                await faults
                progress.cancel()
                log(f"load over: {self.sent:,} requests; draining")
                drained = time.monotonic()
                await self.drain(sub)
                self.drain_s = time.monotonic() - drained
            sub.cancel()
            sup.cancel()
            for task in (sub, sup):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            for w in self.workers.values():
                await asyncio.to_thread(w.stop)
        await self.catch_up()
        self.observed_until = time.time()

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(30)
            decided = int((~np.isnan(self.first[: self.sent])).sum())
            log(
                f"{time.time() - self.t0:5.0f} s: {self.sent:,} sent, {decided:,} decided, "
                f"{len(self.seen):,} decision ids, worker pids "
                f"{[w.process.pid if w.process else None for w in self.workers.values()]}"
            )

    async def drain(self, sub: asyncio.Task) -> None:
        """Until every acknowledged request is decided, or nothing changed for 240 s (the workers'
        graceful stop then commits what they consumed)."""
        last, changed, deadline = -1, time.monotonic(), time.monotonic() + self.a.drain_s
        while True:
            if sub.done():
                sub.result()
            undecided = int((np.isnan(self.first) & (self.acked == 1)).sum())
            if undecided == 0:
                return
            if undecided != last:
                last, changed = undecided, time.monotonic()
            elif time.monotonic() - changed > 240 or time.monotonic() > deadline:
                log(
                    f"drain: {undecided:,} acknowledged request(s) still without a decision ("
                    + (
                        "none decided for 240 s)"
                        if time.monotonic() - changed > 240
                        else f"the drain's limit of {self.a.drain_s:g} s)"
                    )
                )
                return
            await asyncio.sleep(0.5)  # poll interval

    # --- the counts -----------------------------------------------------------------------------

    async def deliveries(self, c: Counts) -> None:
        topic = self.settings.topic("deliveries.sms")
        first: dict[tuple[str, str], str] = {}
        seen: set[str] = set()
        async for r in read_log(self.settings, topic, await end_offsets(self.settings, topic)):
            d = orjson.loads(r.value)
            key, did = (d["app"], d["request_id"]), d["decision_id"]
            if did in seen:
                c.delivery_repeats += 1
                continue
            seen.add(did)
            if first.setdefault(key, did) != did:
                c.delivered_twice.append(f"{key[0]}/{key[1]}: {first[key]} and {did} (p{r.partition}@{r.offset})")
        c.delivered = len(first)

    def replay(self, c: Counts) -> None:
        started = time.monotonic()
        try:
            self._replay(c)
        except subprocess.TimeoutExpired:
            c.replay = f"not finished in {self.a.replay_timeout_s:g} s (--replay-timeout): no figure"
            self.problems.append(f"sendgate replay --compare: {c.replay}")
        self.replay_s = time.monotonic() - started

    def _replay(self, c: Counts) -> None:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sendgate.streams.cli",
                "replay",
                "--name",
                "soak",
                "--compare",
                "--changed-out",
                str(self.work / "replay-soak-changed.jsonl"),
            ],
            env={**os.environ, **self.settings.to_env()},
            capture_output=True,
            text=True,
            cwd=self.work,
            timeout=self.a.replay_timeout_s,
        )
        c.replay = out.stdout.strip() or out.stderr.strip()[-2000:]
        m = re.search(r"requests: \d+ live, \d+ replayed, (\d+) changed", out.stdout)
        c.replay_changed = int(m.group(1)) if m else None
        if out.returncode != 0 or m is None:
            self.problems.append(f"sendgate replay --compare exited {out.returncode}:\n{out.stderr[-2000:]}")

    def gaps(self) -> tuple[float, int]:
        """The faults' longest gaps between new decisions per partition; the baseline before the first."""
        arrivals = {p: np.frombuffer(a, dtype=float) for p, a in self.arrivals.items()}

        def longest(start: float, end: float) -> tuple[float, int]:
            """The longest gap between new decisions of a partition that began in [start, end] (counted
            from `start`, up to the partition's next decision, however late, or the end of the run)."""
            best, where = 0.0, -1
            for p in range(self.settings.partitions):
                times = arrivals.get(p, np.zeros(0))
                after = np.concatenate(([start], times[times > start], [self.observed_until]))
                gaps = np.diff(after)[after[:-1] <= end]
                g = float(gaps.max()) if len(gaps) else 0.0
                if g > best:
                    best, where = g, p
            return best, where

        bounds = [f.start for f in self.faults] + [self.load_end]
        intended = self.intended[: self.sent]  # increasing
        lat = np.where(self.acked[: self.sent] == 1, (self.first[: self.sent] - intended) * 1000, 0.0)
        first_fault = self.faults[0].start if self.faults else self.load_end
        a, b = np.searchsorted(intended, [self.t0 + 30, first_fault])
        calm = lat[a:b][~np.isnan(lat[a:b])]
        self.calm_p99 = float(np.percentile(calm, 99)) if len(calm) else 0.0
        self.caught_up_ms = max(CAUGHT_UP_MS, 2 * self.calm_p99)
        for f, end in zip(self.faults, bounds[1:]):
            f.gap_s, f.gap_partition = longest(f.start, end)
            for t in np.arange(f.start, end, 1.0):  # per second of intended time after the fault
                a, b = np.searchsorted(intended, [t, t + 1])
                if b > a and not np.isnan(lat[a:b]).any() and np.percentile(lat[a:b], 99) <= self.caught_up_ms:
                    f.caught_up_s = float(t - f.start)
                    break
        if first_fault <= self.t0 + 30:
            return 0.0, -1
        saved, self.observed_until = self.observed_until, first_fault
        try:
            return longest(self.t0 + 30, first_fault)
        finally:
            self.observed_until = saved

    def counts(self) -> Counts:
        n = self.sent
        acked, first = self.acked[:n], self.first[:n]
        c = Counts(
            requests=n,
            acked=int((acked == 1).sum()),
            not_acked=int((acked != 1).sum()),
            decided=int((~np.isnan(first)).sum()),
            conflicting=list(self.conflicts),
            decision_records=self.records,
            decision_repeats=self.records - len(self.seen),
            outcomes=self.outcomes,
        )
        lost = np.flatnonzero((acked == 1) & np.isnan(first))
        c.lost = [
            f"lat-app-{self.app[i]:03d}/{PREFIX}{i:08d} (events partition "
            f"{partition_for(f'lat-app-{self.app[i]:03d}'.encode(), self.settings.partitions)}, intended "
            f"{time.strftime('%H:%M:%S', time.gmtime(self.intended[i]))})"
            for i in lost
        ]
        by_partition: dict[int, list[int]] = {}
        for i in lost:
            p = partition_for(f"lat-app-{self.app[i]:03d}".encode(), self.settings.partitions)
            by_partition.setdefault(p, []).append(i)
        c.lost_by_partition = {
            p: (len(ix), self.intended[ix[0]], self.intended[ix[-1]]) for p, ix in sorted(by_partition.items())
        }
        return c


OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps a partition's persisted offset


async def store_divergence(settings: Settings, tables: Path) -> list[list[str]]:
    """Each partition's local `state` store (`tables`/state-N.db, read from a copy) against the state
    changelog, as the store would be after the recovery it runs at its next start: its rows, with
    the changelog applied from the offset the store says it holds up to the last commit record,
    against the changelog's committed view. A store may hold rows past its persisted offset (a
    checkpoint written after records it never read keeps the offset before them, and recovery
    reads them again in changelog order); keys written after the last commit record (an unfinished
    checkpoint, dropped by recovery) are left out. Rows it would lack or hold otherwise, and rows
    it would hold that the changelog deleted or never committed, by kind."""
    import rocksdict

    from sendgate.streams.worker.checkpoint import KIND, STATE, CheckpointLog, Commit, checkpoint_token, commit_key

    topic = settings.changelog_topic(STATE)
    ends = await end_offsets(settings, topic)
    rows: list[list[str]] = []
    for p in sorted(ends):
        path = tables / f"state-{p}.db"
        if not path.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "db"
            shutil.copytree(path, copy)
            (copy / "LOCK").unlink(missing_ok=True)
            db = rocksdict.Rdict(str(copy), options=rocksdict.Options(raw_mode=True))
            try:
                raw = db.get(OFFSET_KEY)
                have = {k: v for k, v in db.items() if k != OFFSET_KEY}
            finally:
                db.close()
        held = int(raw) if raw is not None else -1
        log_records = [
            (r.offset, r.key, r.value, checkpoint_token(r.headers))
            async for r in read_log(settings, topic, {p: ends[p]})
        ]
        # the committed view (every checkpoint its commit record commits, `CheckpointLog`), and the
        # store as recovery makes it: the changelog read on from its offset, from its last commit's epoch
        want: dict[bytes, bytes | None] = {}
        recovered: dict[bytes, bytes | None] = dict(have)
        uncommitted: set[bytes] = set()  # orphans: recovery drops them and a checkpoint rewrites their keys
        whole, resumed = (
            CheckpointLog(),
            CheckpointLog(Commit.from_bytes(have[commit_key(p)]).epoch if commit_key(p) in have else 0),
        )
        for offset, k, v, token in log_records:
            applied, orphans = whole.read((k, v), k, v, token)
            want.update(applied)
            uncommitted.update(key for key, _ in orphans)
            if offset > held:
                recovered.update(resumed.read((k, v), k, v, token)[0])
        uncommitted.update(key for (key, _), _ in whole.held)
        missing, differ, extra = Counter(), Counter(), Counter()

        def kind(k: bytes) -> str:
            return KIND.get(k[:2], k[:2].decode(errors="replace"))

        for k, v in want.items():
            if k in uncommitted:
                continue
            got = recovered.get(k)
            if v is None:
                if got is not None:
                    extra[kind(k)] += 1
            elif got is None:
                missing[kind(k)] += 1
            elif got != v:
                differ[kind(k)] += 1
        extra.update(kind(k) for k, v in recovered.items() if v is not None and k not in want and k not in uncommitted)
        if missing or differ or extra:
            rows.append(
                [
                    str(p),
                    fmt(held),
                    fmt(len(have)),
                    *(", ".join(f"{k} {n}" for k, n in c.most_common()) or "0" for c in (missing, differ, extra)),
                ]
            )
    return rows


def check_stores(settings: Settings, work: Path) -> dict[str, list[list[str]]]:
    out = {}
    for label in ("A", "B"):
        tables = work / f"store-{label.lower()}" / settings.group_id / "v1" / "tables"
        out[label] = asyncio.run(store_divergence(settings, tables)) if tables.exists() else []
        log(f"worker {label}'s store: {len(out[label])} partition(s) differ from the changelog")
    return out


def store_memory_mb(port: int) -> float:
    """A worker's `sendgate_store_memory_bytes` (its /metrics), in MB; nan when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return float("nan")
    found = re.search(r"^sendgate_store_memory_bytes ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) / 2**20 if found else float("nan")


def fill(path: Path) -> int:
    """Fill the filesystem of `path` at once with one file; returns its size in bytes. fallocate
    takes the free space in one call (a write loop took ~30 s of a 2 GB tmpfs on a loaded host, so
    the fault lasted half a minute longer than the disk stayed full); a worker writing meanwhile can
    take some of it, so it asks a little less each time until it fits, then writes the last few kB."""
    with open(path, "wb", buffering=0) as fh:
        margin = 0
        while True:
            st = os.statvfs(path.parent)
            size = os.fstat(fh.fileno()).st_size
            ask = st.f_bavail * st.f_frsize - margin
            if ask < 1 << 20:
                break
            try:
                os.posix_fallocate(fh.fileno(), size, ask)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                margin += 1 << 20  # taken meanwhile
        fh.seek(0, os.SEEK_END)
        while True:  # the last kB
            try:
                fh.write(b"\0" * 4096)
            except OSError:
                return os.fstat(fh.fileno()).st_size


# --- the results -------------------------------------------------------------------------------


def percentiles(lat: np.ndarray) -> str:
    if not len(lat):
        return "none"
    return " / ".join(f"{np.percentile(lat, q):,.0f}" for q in (50, 99, 99.9)) + f" / {lat.max():,.0f}"


def rss_rows(s: Soak) -> tuple[list[list[str]], str, bool | None]:
    """Per worker process: RSS at its first and last sample and its maximum, RocksDB's part of it at
    its first and last reading, and how much the rest grew between those two readings; the
    flat-memory verdict on the longest-lived process (its growth from 5 minutes into the load to
    the end)."""
    by_pid: dict[tuple[str, int], list[tuple[float, float]]] = {}
    read: dict[tuple[str, int], list[tuple[float, float, float]]] = {}  # (t, RSS, RocksDB's) where it answered
    for t, label, pid, mb, rocks in s.rss:
        by_pid.setdefault((label, pid), []).append((t, mb))
        if rocks == rocks:  # not nan
            read.setdefault((label, pid), []).append((t, mb, rocks))

    def rocksdb(key: tuple[str, int]) -> list[str]:
        xs = read.get(key)
        if not xs:
            return ["-", "-", "-"]
        rest = (xs[-1][1] - xs[-1][2]) - (xs[0][1] - xs[0][2])
        return [f"{xs[0][2]:.0f}", f"{xs[-1][2]:.0f}", f"{rest:+.0f}"]

    rows = [
        [
            label,
            str(pid),
            f"{(xs[0][0] - s.t0) / 60:.1f}-{(xs[-1][0] - s.t0) / 60:.1f}",
            f"{xs[0][1]:.0f}",
            f"{xs[-1][1]:.0f}",
            f"{max(m for _, m in xs):.0f}",
            *rocksdb((label, pid)),
        ]
        for (label, pid), xs in by_pid.items()
    ]
    if not by_pid:
        return rows, "no RSS samples", None
    (label, pid), xs = max(by_pid.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0])
    warm = [mb for t, mb in xs if t >= s.t0 + 300] or [mb for _, mb in xs]
    if xs[-1][0] - xs[0][0] < 600:
        return rows, f"worker {label} (pid {pid}) lived {(xs[-1][0] - xs[0][0]) / 60:.1f} min: too short to judge", None
    ts = np.array([t for t, mb in xs if t >= s.t0 + 300]) / 60
    slope = float(np.polyfit(ts, warm, 1)[0]) if len(ts) > 2 else 0.0
    growth = warm[-1] - warm[0]
    flat = growth <= max(0.10 * warm[0], 20.0)
    rocks = [r for t, _, r in read.get((label, pid), []) if t >= s.t0 + 300] or [float("nan")]
    return (
        rows,
        (
            f"worker {label} (pid {pid}, the longest-lived process, {(xs[-1][0] - xs[0][0]) / 60:.0f} min): "
            f"{warm[0]:.0f} MB 5 min into the load, {warm[-1]:.0f} MB at the end ({growth:+.0f} MB; "
            f"fit {slope:+.2f} MB/min), of which RocksDB's (memtables, table readers, block cache) "
            f"{rocks[0]:.0f} MB then and {rocks[-1]:.0f} MB at the end: the rest grew {growth - (rocks[-1] - rocks[0]):+.0f} MB; "
            f"flat = grew at most 10 % or 20 MB"
        ),
        flat,
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def markdown(s: Soak, c: Counts, baseline: tuple[float, int], plot: str | None, wall_s: float) -> list[str]:
    n = c.requests
    lat = ((s.first[:n] - s.intended[:n]) * 1000)[(s.acked[:n] == 1) & ~np.isnan(s.first[:n])]
    rows, rss_note, flat = rss_rows(s)
    slow = [f for f in s.faults if f.gap_s > RECOVERED_WITHIN_S]
    achieved = (n - 1) / (s.load_end - s.t0) if s.load_end > s.t0 else 0.0
    counts = [
        [
            "requests produced (open loop)",
            fmt(n),
            f"{s.a.rate:,}/s offered for {s.a.minutes:g} min; {achieved:,.0f}/s produced",
            "",
        ],
        ["acknowledged by the broker", fmt(c.acked), f"{fmt(c.not_acked)} not acknowledged (the producer gave up)", ""],
        ["decided (at least one decision)", fmt(c.decided), "", ""],
        ["**lost**: acknowledged, no decision", fmt(len(c.lost)), "0", verdict(not c.lost)],
        [
            "**conflicting**: two different first answers or endings",
            fmt(len(c.conflicting)),
            "0",
            verdict(not c.conflicting),
        ],
        ["requests delivered", fmt(c.delivered), "", ""],
        ["**delivered twice** (two decision ids)", fmt(len(c.delivered_twice)), "0", verdict(not c.delivered_twice)],
        [
            "delivery records repeated with their own decision id (subscribers drop them)",
            fmt(c.delivery_repeats),
            "",
            "",
        ],
        [
            "decision records; repeated with their own decision id",
            f"{fmt(c.decision_records)}; {fmt(c.decision_repeats)}",
            "",
            "",
        ],
        [
            "**replay** (`sendgate replay --compare`): requests changed",
            "?" if c.replay_changed is None else fmt(c.replay_changed),
            "0",
            verdict(None if c.replay_changed is None else c.replay_changed == 0),
        ],
        [
            "**decisions again within 60 s of every fault** (longest partition gap)",
            f"{max((f.gap_s for f in s.faults), default=0):.1f} s at most",
            "<= 60 s",
            verdict(not slow if s.faults else None),
        ],
        [
            "worker processes that exited on their own (started again)",
            str(len(s.exits)),
            "; ".join(f"{e.worker} at {(e.at - s.t0) / 60:.1f} min, code {e.code}" for e in s.exits),
            "",
        ],
        ["latency p99 before the first fault (from 30 s in) ms", f"{s.calm_p99:,.0f}", "", ""],
        ["**flat memory**", rss_note, "", verdict(flat)],
        [
            "latency from the intended send time, acknowledged requests: p50 / p99 / p99.9 / max ms",
            percentiles(lat),
            "",
            "",
        ],
    ]
    faults = [
        [
            str(k + 1),
            f.kind,
            f"{(f.start - s.t0) / 60:.1f}",
            f"{f.end - f.start:.1f}",
            f"{f.gap_s:.1f} (p{f.gap_partition})",
            "not within the window" if f.caught_up_s is None else f"{f.caught_up_s:.0f}",
            verdict(f.gap_s <= RECOVERED_WITHIN_S),
            f.note,
        ]
        for k, f in enumerate(s.faults)
    ]
    parts = [
        "## Counts",
        md_table(["figure", "count", "target / note", ""], counts),
        "## Faults",
        f"Before the first fault (from 30 s into the load), the longest gap of a decisions partition was "
        f"{baseline[0]:.2f} s (p{baseline[1]}).",
        md_table(
            [
                "#",
                "fault",
                "at min",
                "fault lasted s",
                "longest partition gap from its start s",
                f"requests due after it back to p99 <= {s.caught_up_ms / 1000:.1f} s (all decided), from its start s",
                "<= 60 s",
                "note",
            ],
            faults,
        ),
        "Longest partition gap: for each decisions partition, the longest time without a new decision "
        "that began between the fault's start and the next fault, up to that partition's next decision "
        "however late (or the end of the run); the table names the partition. Back to p99: the first "
        "second of intended send time after the fault whose requests were all decided with a p99 at most "
        "max(1 s, twice the p99 before the first fault).",
    ]
    if s.exits:
        parts += [
            "Worker processes that exited on their own (the last critical or error line of each log):",
            "\n".join(f"- {e.worker} at {(e.at - s.t0) / 60:.1f} min, exit code {e.code}: `{e.why}`" for e in s.exits),
        ]
    parts += [
        "## Worker RSS",
        md_table(
            [
                "worker",
                "pid",
                "alive min (of the load)",
                "first MB",
                "last MB",
                "max MB",
                "RocksDB first MB",
                "RocksDB last MB",
                "the rest grew MB",
            ],
            rows,
        ),
        rss_note,
    ]
    if plot:
        parts += ["## Plot", f"![decisions per second, latency and RSS over time, faults marked]({plot})"]
    problems = []
    if c.lost_by_partition:
        problems.append(
            "lost by events partition (count; intended send times of the first and last):\n"
            + "\n".join(
                f"- p{p}: {n:,}; {time.strftime('%H:%M:%S', time.gmtime(a))} - {time.strftime('%H:%M:%S', time.gmtime(b))}"
                for p, (n, a, b) in c.lost_by_partition.items()
            )
        )
    for name, items in (("lost", c.lost), ("conflicting", c.conflicting), ("delivered twice", c.delivered_twice)):
        if items:
            problems.append(f"{name} ({len(items)}), the first 20:\n```\n" + "\n".join(items[:20]) + "\n```")
    if problems or s.problems:
        parts += ["## Problems"] + problems + [f"```\n{p}\n```" for p in s.problems]
    parts.append(divergence_md(s.divergence))
    parts += [
        "## Outcomes (distinct decisions)",
        md_table(["outcome/reason", "decisions"], [[k, fmt(v)] for k, v in c.outcomes.most_common()]),
        "## Replay against live",
        f"```\n{c.replay}\n```",
        "## Settings",
        md_table(
            ["setting", "value"],
            [
                [
                    "broker",
                    f"`LocalKafka` Apache Kafka {KAFKA_VERSION} on {s.settings.bootstrap}, data dir in the "
                    f"work dir, -Xmx{s.kafka.heap}; killed with SIGKILL to its process group and started "
                    "again on the same port and data dir",
                ],
                [
                    "workers",
                    f"2 `sendgate worker` processes, group `{s.settings.group_id}`, "
                    f"{s.settings.partitions} partitions, store {s.settings.store}, processing guarantee "
                    f"{s.settings.processing_guarantee}, session / heartbeat / rebalance "
                    f"{s.settings.session_timeout_s:g} / {s.settings.heartbeat_interval_s:g} / "
                    f"{s.settings.rebalance_timeout_s:g} s, ticker {s.settings.tick_interval_s:g} s",
                ],
                ["worker B's store", s.tmpfs_note],
                ["worker A's own environment", ", ".join(f"{k}={v}" for k, v in s.a.worker_a_env) or "none"],
                [
                    "rate",
                    f"{s.a.rate:,} requests/s; one worker's capacity on this mix was 1,806 decisions/s "
                    "(bench/results/latest.md, latency at 3,000/s offered: decided /s), so at least half "
                    "of it"
                    if s.a.rate >= 903
                    else f"{s.a.rate:,} requests/s",
                ],
                [
                    "faults",
                    f"every {s.a.fault_every_s:g} s from {s.a.first_fault_s:g} s, in rotation: "
                    + ", ".join(s.a.rotation),
                ],
                [
                    "phases",
                    f"set-up {s.setup_s:.0f} s, drain {s.drain_s:.0f} s, replay {s.replay_s:.0f} s; "
                    f"wall time {wall_s / 60:.1f} min",
                ],
            ],
        ),
    ]
    return parts


def divergence_md(divergence: dict[str, list[list[str]]]) -> str:
    if not divergence:
        return ""
    parts = [
        "## Local stores against the changelog",
        "After the run (workers stopped), each worker's local `state` store, partition by partition, as the "
        "recovery at its next start makes it (the changelog applied from the offset the store says it holds, "
        "Faust's persisted offset, up to the last commit record), against the changelog's committed rows: a "
        "store that a worker decides from must hold exactly those rows, and a difference fails the run. Rows "
        "by kind (models/gate/tables.py; `h:` an app's home).",
    ]
    for label, rows in divergence.items():
        parts.append(
            f"Worker {label}:\n\n"
            + (
                "every partition's store holds the changelog's rows."
                if not rows
                else md_table(
                    [
                        "partition",
                        "persisted offset",
                        "store rows",
                        "missing (the changelog has them)",
                        "other value",
                        "extra (deleted or never written)",
                    ],
                    rows,
                )
            )
        )
    return "\n\n".join(parts)


def plot(s: Soak, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = s.sent
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    secs = sorted(s.per_second)
    axes[0].plot([t / 60 for t in secs], [s.per_second[t] for t in secs], "-", lw=0.7, color="black")
    axes[0].axhline(s.a.rate, color="grey", lw=0.8, ls=":", label=f"offered {s.a.rate:,}/s")
    axes[0].set(ylabel="new decisions / s", title="Fault soak: two workers, open-loop load, faults shaded")
    axes[0].legend(loc="upper right", fontsize=8)
    ok = (s.acked[:n] == 1) & ~np.isnan(s.first[:n])
    t_rel, lat = (s.intended[:n][ok] - s.t0), ((s.first[:n] - s.intended[:n]) * 1000)[ok]
    bins = (t_rel // 5).astype(int)
    xs, p50, p99 = [], [], []
    for b in np.unique(bins):
        v = lat[bins == b]
        xs.append(b * 5 / 60)
        p50.append(np.percentile(v, 50))
        p99.append(np.percentile(v, 99))
    axes[1].plot(xs, p99, "-", color="C3", lw=0.9, label="p99")
    axes[1].plot(xs, p50, "-", color="C0", lw=0.9, label="p50")
    axes[1].set(yscale="log", ylabel="latency ms (5 s bins of intended send time)")
    axes[1].legend(loc="upper right", fontsize=8)
    for label in ("A", "B"):
        pts = [(t - s.t0, mb) for t, lbl, _, mb, _ in s.rss if lbl == label]
        axes[2].plot([t / 60 for t, _ in pts], [mb for _, mb in pts], ".", ms=2, label=f"worker {label}")
    axes[2].set(ylabel="VmRSS MB", xlabel="minutes since the load began", ylim=(0, None))
    axes[2].legend(loc="lower right", fontsize=8)
    colors = {KILL: "C1", STOP: "C2", BROKER: "C3", DISK: "C4"}
    for ax in axes:
        ax.grid(True, alpha=0.3)
        for f in s.faults:
            ax.axvspan((f.start - s.t0) / 60, (max(f.end, f.start + 2) - s.t0) / 60, color=colors[f.kind], alpha=0.25)
    for f in s.faults:
        axes[0].annotate(
            f.kind.split(" (")[0],
            ((f.start - s.t0) / 60, axes[0].get_ylim()[1]),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def run(a: argparse.Namespace) -> tuple[Path, list[str]]:
    """The soak; returns the results file and the correctness problems (empty: none)."""
    out = out_path(a.out, a.quick, "soak")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the faults make this process's clients retry, loudly
    work = Path(tempfile.mkdtemp(prefix="sendgate-soak-"))
    started = time.monotonic()
    log(f"work dir {work}; results -> {out}")
    s = Soak(a, work)
    s.ports = {"A": free_port(), "B": free_port()}
    s.mount_tmpfs(work / "store-b")
    c = Counts()
    baseline = (0.0, -1)
    try:
        s.start_broker()
        d = Settings()
        s.settings = bench_settings(
            s.kafka.bootstrap,
            work,
            "soak",
            web_enabled=True,
            tick_interval_s=1.0,
            log_level="info",
            session_timeout_s=d.session_timeout_s,
            heartbeat_interval_s=d.heartbeat_interval_s,
            rebalance_timeout_s=d.rebalance_timeout_s,
        )
        try:
            asyncio.run(s.run())
        except Exception:
            s.problems.append("the run: " + traceback.format_exc())
            log(s.problems[-1])
        if s.t0:
            c = s.counts()
            asyncio.run(s.deliveries(c))
            log(
                f"counts: {len(c.lost)} lost, {len(c.conflicting)} conflicting, {len(c.delivered_twice)} delivered "
                f"twice; replay ..."
            )
            s.replay(c)
            baseline = s.gaps()
            s.divergence = check_stores(s.settings, work)
    except Exception:
        s.problems.append(traceback.format_exc())
        log(s.problems[-1])
    finally:
        with contextlib.suppress(Exception):
            s.kafka.close()
        if s.tmpfs:
            subprocess.run(["umount", "-l", s.tmpfs], capture_output=True)
    svg = None
    if s.t0:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            svg = plot(s, out.with_suffix(".svg"))
        except Exception:
            s.problems.append("plot: " + traceback.format_exc())
    wall = time.monotonic() - started
    write_report(
        out,
        "sendgate fault soak" + (" (short version)" if a.quick else ""),
        getattr(a, "prog", "python -m bench.soak"),
        [
            f"work dir {work} (worker logs)",
            "a shared machine (2 cores; the broker, two workers, the load "
            "generator and other engineers' jobs compete for them): latencies and recovery times are those of "
            "a loaded host",
        ],
        markdown(s, c, baseline, svg, wall) if s.t0 else ["## Problems"] + [f"```\n{p}\n```" for p in s.problems],
    )
    problems = c.correctness + ([] if s.t0 else ["the soak did not start: " + "; ".join(s.problems)[-2000:]])
    problems += [p for p in s.problems if p.startswith("the run")]
    problems += [
        f"worker {label}'s local store differs from the changelog in {len(rows)} partition(s)"
        for label, rows in s.divergence.items()
        if rows
    ]
    return out, problems


def parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from ._common import cli

    ap = ap or cli(__doc__, "the short version (about 5 minutes, 3 faults), for CI", "soak")
    ap.add_argument("--minutes", type=float, help="load duration (default 30; quick 3.5)")
    ap.add_argument(
        "--rate", type=int, help="requests per second (default 910: half of one worker's 1,806/s; quick 300)"
    )
    ap.add_argument(
        "--fault-every", dest="fault_every_s", type=float, help="seconds between faults (default 240; quick 55)"
    )
    ap.add_argument("--first-fault", dest="first_fault_s", type=float, help="seconds (default 150; quick 40)")
    ap.add_argument("--broker-port", type=int, help="the soak broker's port (default: a free one)")
    ap.add_argument("--tmpfs-mb", type=int, default=2048, help="size of worker B's store tmpfs")
    ap.add_argument("--no-tmpfs", action="store_true", help="no tmpfs, no full-disk fault")
    ap.add_argument(
        "--faults",
        help="the rotation, a comma list of: kill (kill -9 worker A), stop (SIGSTOP worker "
        "B), broker (kill -9), disk (B's store full) (default kill,stop,broker,disk; "
        "quick kill,stop,broker)",
    )
    ap.add_argument(
        "--drain",
        dest="drain_s",
        type=float,
        help="at most this long for the last decisions after the load (default 600 s; quick 90 s: the "
        "short version stays under 6 minutes)",
    )
    ap.add_argument(
        "--worker-a-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=lambda kv: tuple(kv.split("=", 1)),
        help="an environment variable for worker A alone, to compare the two side by side (repeatable; "
        "e.g. MALLOC_ARENA_MAX=2 with --first-fault past the load's end)",
    )
    ap.add_argument("--replay-timeout", dest="replay_timeout_s", type=float, default=1500.0)
    ap.add_argument("--seed", type=int, default=20240601)
    return ap


def defaults(a: argparse.Namespace) -> argparse.Namespace:
    q = a.quick
    a.minutes = a.minutes or (3.5 if q else 30.0)
    a.rate = a.rate or (300 if q else 910)
    a.fault_every_s = a.fault_every_s or (55.0 if q else 240.0)
    a.first_fault_s = a.first_fault_s or (40.0 if q else 150.0)
    a.broker_port = a.broker_port or free_port()
    a.drain_s = a.drain_s or (90.0 if q else 600.0)
    names = {"kill": KILL, "stop": STOP, "broker": BROKER, "disk": DISK}
    a.rotation = (
        [names[f.strip()] for f in a.faults.split(",")] if a.faults else list(QUICK_ROTATION if q else ROTATION)
    )
    return a


def check_kept(work: Path) -> int:
    """--check-stores: the local stores of a kept work dir against its changelog (its broker started
    again on its data dir, on a free port)."""
    group = next((d.name for d in (work / "store-a").iterdir() if d.is_dir()), None)
    if group is None:
        sys.exit(f"{work}/store-a holds no store")
    with LocalKafka(data_dir=work / "kafka") as kafka:
        print(divergence_md(check_stores(Settings(bootstrap=kafka.bootstrap, group_id=group), work)))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    ap.add_argument(
        "--check-stores",
        metavar="WORK_DIR",
        help="only compare the local stores of a kept work dir with its changelog (markdown on stdout)",
    )
    a = ap.parse_args(argv)
    if a.check_stores:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return check_kept(Path(a.check_stores))
    a = defaults(a)
    out, problems = run(a)
    if problems:
        log(f"FAILED ({out}): " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
