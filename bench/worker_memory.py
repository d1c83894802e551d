"""Worker memory on a real broker: RSS of a live worker holding N userkeys, changelog bytes per
userkey and per burst cluster, restarts and fail-over, and RSS over a long run with cluster expiry on.

Method:

1. Userkeys. N userkeys each write the keyword START to one of 100 apps x 10 senders (a Userkey and
   a Conversation row each). The log is published, the group's offsets set to its end, and
   `sendgate rebuild` writes the state changelog from it (the same state a worker deciding them
   live would hold, in minutes at 1M). A worker (`sendgate worker`, RocksDB store) starts on it with
   Faust's own restore (SENDGATE_FAST_RESTORE=0, as before streams/worker/restore.py); 1,000 new
   userkeys write and are answered, which proves recovery done, and its VmRSS is read from /proc.
   N = 0 is the baseline: bytes per userkey = (RSS at N - RSS at 0) / N. Changelog bytes are the key
   + value bytes of the rows read back from the topic. Then, each time with a new probe published
   first and timed from the new process to its decisions: the store is deleted and the worker starts
   again (a disk lost: restore.py); it is killed (kill -9) and restarted on its store; it is stopped
   (SIGTERM) and restarted.
2. Fail-over. Two workers (production group timings: heartbeat 3 s, rebalance timeout 60 s; own
   stores and web ports, one group) start on that state, the second on a copy of the first's store.
   Once both own partitions and have decided a probe, one is killed (kill -9) and a probe published
   for the apps on its partitions (its /sendgate/status names them), timed from the kill to the
   probe's first and last decision (record timestamps). The survivor's log (level info) shows when
   the group rebalanced, what it restored (the moved partitions' changelog rows between its store's
   offset and the changelog's end) and whether it held them as standbys. With the default session
   timeout (10 s) and with 30 s (the default before; Kafka's own is 45 s).
3. Long run. Every hour of event time each sender sends a fresh spam template (personalised) to 15
   opted-in recipients and answers 10 users who wrote to it: each cluster expires after 24 h idle
   (`cluster_idle_s`), so a sender holds about 24 (`max_clusters` is 32). One worker decides the
   whole log; its VmRSS and the decisions so far are sampled every second from the first decision.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import random
import re
import shutil
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from sendgate.models.burst import SenderState
from sendgate.models.gate import CLUSTERS, SENDERS, SKETCHES
from sendgate.models.policy import Policy
from sendgate.streams.config import Settings
from sendgate.streams.kafka import end_offsets, read_log
from sendgate.streams.local.broker import free_port
from sendgate.streams.local.process import WorkerProcess
from sendgate.streams.ops.rebuild import rebuild
from sendgate.streams.worker.outbox import partition_for
from sendgate.streams.worker.checkpoint import COMMIT, HOME, KIND, PREFIX, STATE

from ._common import HOUR, T0, Log, labelled, load_corpus, proc_kb
from .throughput import (
    NAMES,
    bench_settings,
    declare_outputs,
    expected,
    publish_records,
    read_all,
    stopping,
    topic_total,
    wait_for_count,
)

PROBE_USERKEYS = 1_000
FAILOVER_SESSION_TIMEOUTS = (10.0, 30.0)  # the default, and the default before


def vmrss_mb(pid: int) -> float:
    return proc_kb("VmRSS", f"/proc/{pid}/status") / 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def userkeys_log(n: int, first: int = 0, ts: int = T0) -> Log:
    """Userkeys first..first+n-1 write START, spread over 100 apps x 10 senders."""
    log = Log()
    for i in range(first, first + n):
        log.emit(
            "inbound",
            f"uk-{i:08d}",
            f"app-{i % 100:03d}",
            ts + i,
            sender=f"sender-{i // 100 % 10}",
            userkey=f"+1555{i:08d}",
            text="START",
        )
    return log


def probe_log(first: int, ts: int) -> list[tuple[bytes, bytes]]:
    """PROBE_USERKEYS new userkeys write, then each is answered: one decision per userkey."""
    log = userkeys_log(PROBE_USERKEYS, first, ts)
    for i in range(first, first + PROBE_USERKEYS):
        log.emit(
            "send",
            f"probe-{i:08d}",
            f"app-{i % 100:03d}",
            ts + 10**6,
            sender=f"sender-{i // 100 % 10}",
            userkey=f"+1555{i:08d}",
            text=f"Your code is {i % 997:03d}",
        )
    return log.records


async def commit_end(settings: Settings) -> None:
    """Set the worker group's offsets on the events topic to its end (as after a worker decided it)."""
    topic = settings.topic("events")
    ends = {TopicPartition(topic, p): end for p, end in (await end_offsets(settings, topic)).items()}
    async with AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=settings.group_id, enable_auto_commit=False
    ) as consumer:
        consumer.assign(list(ends))
        if any(ends.values()):
            await consumer.commit({tp: end for tp, end in ends.items() if end > 0})


async def changelog_rows(settings: Settings) -> dict[bytes, bytes]:
    """The state changelog's last value per key (deleted keys left out)."""
    topic = settings.changelog_topic(STATE)
    last: dict[bytes, bytes | None] = {}
    async for r in read_log(settings, topic, await end_offsets(settings, topic)):
        last[r.key] = r.value
    return {k: v for k, v in last.items() if v is not None}


def changelog_bytes(rows: dict[bytes, bytes]) -> dict[str, list[int]]:
    """Row kind -> [rows, key + value bytes]."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k, v in rows.items():
        kind = "commit records" if k.startswith(COMMIT) else "homes" if k.startswith(HOME) else KIND.get(k[:2], "?")
        out[kind][0] += 1
        out[kind][1] += len(k) + len(v)
    return dict(out)


@dataclass
class HeldState:
    group_id: str  # also the prefix of its topics
    userkeys: int
    rebuild_s: float
    changelog: dict[str, list[int]]
    recovered_s: float  # worker start to the probe's last decision, empty store, Faust's own restore (before)
    rss_mb: float
    store_bytes: int  # the worker's RocksDB directory after the probe
    problem: str | None = None
    disk_lost_s: float | None = None  # empty store again, restored by streams/worker/restore.py, to the probe decided
    restore: tuple[int, float] | None = None  # that restore's rows applied and seconds, from the worker's log
    after_kill_s: float | None = None  # restart after kill -9 (same store) to the next probe's last decision
    after_stop_s: float | None = None  # restart after a graceful stop (SIGTERM) to the next probe's last decision
    failovers: list["FailOver"] = field(default_factory=list)  # one per session timeout

    @property
    def userkey_bytes(self) -> int:
        return sum(self.changelog.get(k, [0, 0])[1] for k in ("userkeys", "conversations"))


async def held_state(bootstrap: str, work: Path, n: int, restarts: bool = True) -> HeldState:
    s = bench_settings(bootstrap, work, f"mem{n}", log_level="info")  # info: the worker logs "Ready"
    await declare_outputs(s)
    if n:
        await publish_records(s, userkeys_log(n).records)
    await commit_end(s)
    started = time.monotonic()
    await rebuild(s, Policy())
    rebuild_s = time.monotonic() - started
    changelog = changelog_bytes(await changelog_rows(s))
    log_path = work / f"worker-{s.group_id}.log"
    started = time.monotonic()
    worker = WorkerProcess(s.with_(fast_restore=False), log_path).start()  # the restore as it was
    try:
        worker.wait_ready(600)
        await publish_records(s, probe_log(n, T0 + n + 10))
        _, problem = await wait_for_count(s, s.topic("decisions"), PROBE_USERKEYS, worker, stall_s=300)
        recovered_s = time.monotonic() - started
        held = HeldState(
            s.group_id,
            n,
            rebuild_s,
            changelog,
            recovered_s,
            vmrss_mb(worker.process.pid),
            dir_bytes(Path(s.data_dir)),
            problem,
        )
        for round_, how in enumerate(("disk_lost", "after_kill", "after_stop") if restarts else (), start=2):
            worker.kill() if how == "after_kill" else worker.stop()
            if how == "disk_lost":  # a new machine: nothing local
                shutil.rmtree(Path(s.data_dir) / s.group_id, ignore_errors=True)
            await publish_records(s, probe_log(n + (round_ - 1) * PROBE_USERKEYS, T0 + n + 10 * round_))
            started = time.monotonic()
            worker = WorkerProcess(s, log_path).start()
            _, problem = await wait_for_count(s, s.topic("decisions"), PROBE_USERKEYS * round_, worker, stall_s=300)
            setattr(held, f"{how}_s", time.monotonic() - started)
            held.problem = held.problem or problem
            if how == "disk_lost":
                held.restore = restore_logged(log_path.read_text(errors="replace"))
        if restarts:  # fail-over: two workers, the second on a copy of this one's store
            worker.stop()
            shutil.copytree(s.data_dir, f"{s.data_dir}-2")
            for k, timeout in enumerate(FAILOVER_SESSION_TIMEOUTS):
                round_ = 5 + 2 * k  # two probes a fail-over: before the kill, and after it
                failover = await fail_over(s, work, n + (round_ - 1) * PROBE_USERKEYS, T0 + n + 10 * round_, timeout)
                held.failovers.append(failover)
                held.problem = held.problem or failover.problem
    finally:
        worker.stop()
    return held


RESTORE_LINE = re.compile(
    r"local state store up to its changelog's last commit records: ([\d,]+) row\(s\) applied "
    r"of [\d,]+ read in ([\d.]+) s"
)


def restore_logged(log: str) -> tuple[int, float] | None:
    """(rows applied, seconds) of the last restore a worker logged (streams/worker/lifecycle.py, restore.py)."""
    found = RESTORE_LINE.findall(log)
    return (int(found[-1][0].replace(",", "")), float(found[-1][1])) if found else None


@dataclass
class FailOver:
    session_timeout_s: float
    moved: list[int]  # the events partitions the killed worker owned
    standbys: dict[int, int]  # state changelog partition -> the survivor's standby offset before the kill
    probe: int  # decisions expected: the sends of the probe's apps on the moved partitions
    decided: int = 0  # of them, decided (once the decisions stopped coming)
    first_s: float | None = None  # kill to the probe's first decision (its record timestamp)
    last_s: float | None = None  # kill to its last decision
    marks: dict[str, float] = field(default_factory=dict)  # the survivor's log: what -> s after the kill (first)
    restored: dict[int, int] = field(default_factory=dict)  # moved partition -> changelog records read after the kill
    # moved partition -> changelog records written to it between the survivor's last standby
    # offsets before the kill and the kill (what its standby read meanwhile, if it held one)
    written: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)  # partition -> the survivor's lag (events), when undecided
    reread: int = 0  # events the survivor read again from Kafka after the kill because its stream skipped them
    problem: str | None = None


# What the survivor logs after the kill (Faust and aiokafka at level info), first occurrence each
FAILOVER_MARKS = {
    "heartbeat: rebalancing": re.compile(r"Heartbeat failed .* rebalancing"),
    "joined": re.compile(r"Joined group"),
    "assigned": re.compile(r"Setting newly assigned partitions"),
    "recovered": re.compile(r"Recovery complete"),
}
_SKIPPED = re.compile(r"the stream skipped .* read (\d+) record\(s\) from Kafka")  # GateWorker's gap fill
_LOG_ENTRY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] ", re.M)


def log_entries(path: Path) -> list[tuple[float, str]]:
    """(wall time, message with its continuation lines) of each entry of a worker's log."""
    text = path.read_text(errors="replace")
    found = list(_LOG_ENTRY.finditer(text))
    return [
        (
            _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(),
            text[m.end() : after.start() if after else len(text)].rstrip(),
        )
        for m, after in zip(found, found[1:] + [None])
    ]


def log_table(message: str, topic: str) -> dict[int, int]:
    """partition -> value of the rows of `topic` in one of Faust's recovery log tables (highwaters,
    offsets at start of reading); a repeated topic name is written as a ditto mark."""
    out: dict[int, int] = {}
    current = None
    for line in message.splitlines()[1:]:
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 3 and cells[1].isdigit() and cells[2].lstrip("-").isdigit():
            current = current if cells[0] == "〃" else cells[0]
            if current == topic:
                out[int(cells[1])] = int(cells[2])
    return out


def worker_status(port: int) -> dict | None:
    """The worker's /sendgate/status (its partitions and readiness), None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sendgate/status", timeout=2) as answer:
            return orjson.loads(answer.read())
    except (OSError, ValueError):
        return None


def wait_for_split(workers: list[WorkerProcess], partitions: int, timeout: float) -> list[list[int]]:
    """Poll the workers' status until all are ready and each owns some of the events partitions,
    together all of them once. Returns each one's partitions."""
    deadline = time.monotonic() + timeout
    while True:
        docs = [worker_status(w.settings.web_port) for w in workers]
        owned = [sorted(p["partition"] for p in doc["partitions"]) if doc else [] for doc in docs]
        if (
            all(doc and doc["state"]["ready"] for doc in docs)
            and all(owned)
            and sorted(p for ps in owned for p in ps) == list(range(partitions))
        ):
            return owned
        for w in workers:
            if not w.running:
                raise RuntimeError(f"worker exited with {w.process.returncode}:\n{w.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers own {owned} after {timeout:.0f} s")
        time.sleep(0.25)  # poll interval


async def fail_over(s: Settings, work: Path, first: int, ts: int, session_timeout_s: float) -> FailOver:
    """Fail-over (the module docstring, 2.): a probe of userkeys from `first`, then the kill."""
    d = Settings()  # the production group timings, but the session timeout
    runs = [
        s.with_(
            web_enabled=True,
            web_port=free_port(),
            data_dir=s.data_dir + ("-2" if i else ""),
            session_timeout_s=session_timeout_s,
            heartbeat_interval_s=d.heartbeat_interval_s,
            rebalance_timeout_s=d.rebalance_timeout_s,
        )
        for i in range(2)
    ]
    workers = [
        WorkerProcess(run, work / f"worker-{s.group_id}-failover{session_timeout_s:g}-{i}.log").start()
        for i, run in enumerate(runs)
    ]
    survivor, victim = workers
    changelog, decisions = s.changelog_topic(STATE), s.topic("decisions")
    with stopping(*workers):
        for w in workers:
            w.wait_ready(600)
        owned = wait_for_split(workers, s.partitions, 300)
        decided = await topic_total(s, decisions)
        await publish_records(s, probe_log(first, ts))
        decided, problem = await wait_for_count(s, decisions, decided + PROBE_USERKEYS, survivor, stall_s=120)
        standbys = [
            log_table(m, changelog)
            for _, m in log_entries(survivor.log_path)
            if "standby offsets at start of reading" in m.split("\n", 1)[0]
        ]
        moved = owned[1]
        probe = [r for r in probe_log(first + PROBE_USERKEYS, ts + 5) if partition_for(r[0], s.partitions) in moved]
        ids = {doc["request_id"] for doc in map(orjson.loads, (v for _, v in probe)) if doc["type"] == "send"}
        result = FailOver(session_timeout_s, moved, standbys[-1] if standbys else {}, len(ids), problem=problem)
        killed_at = time.time()
        victim.kill()
        await publish_records(s, probe)
        _, result.problem = await wait_for_count(s, decisions, decided + len(ids), survivor, stall_s=120)
        times = {doc["request_id"]: t for t, doc in await read_all(s, decisions) if doc["request_id"] in ids}
        result.decided = len(times)
        if times:
            result.first_s, result.last_s = (
                min(times.values()) / 1000 - killed_at,
                max(times.values()) / 1000 - killed_at,
            )
        if result.decided < len(ids):  # the lag says where (Faust commits every few seconds: only now a sign)
            status = worker_status(survivor.settings.web_port)
            result.lag = {p["partition"]: p["lag"] for p in (status or {}).get("partitions", []) if p["lag"]}
            result.problem = (
                f"fail-over: {result.decided:,} of {len(ids):,} probe decisions after the kill "
                f"({result.problem or 'the count was reached with decisions of other requests'}); "
                f"the survivor's lag by partition {result.lag}, readiness {(status or {}).get('state')}"
            )
        after = [(t, m) for t, m in log_entries(survivor.log_path) if t >= killed_at]
        for what, pattern in FAILOVER_MARKS.items():
            result.marks[what] = next((t - killed_at for t, m in after if pattern.search(m)), None)
        result.reread = sum(int(m.group(1)) for _, line in after for m in [_SKIPPED.search(line)] if m)
        tables = {
            title: [log_table(m, changelog) for _, m in after if title in m.split("\n", 1)[0]]
            for title in ("Highwater for active changelog partitions", "active offsets at start of reading")
        }
        highwaters, starts = (t[0] if t else {} for t in tables.values())  # the first recovery after the kill
        result.restored = {p: highwaters[p] - starts[p] for p in moved if p in highwaters and p in starts}
        result.written = {
            p: highwaters[p] - result.standbys[p] for p in moved if p in highwaters and p in result.standbys
        }
        return result


def long_run_log(hours: int, senders: int, seed: int) -> Log:
    """The long run's log (the module docstring, 3.): 4 apps, 60 opted-in recipients a sender."""
    rng = random.Random(seed)
    corpus = load_corpus()
    ham, spam = [t for t in labelled(corpus, "ham") if len(t) > 20], labelled(corpus, "spam")
    log = Log(seed, apps=4, senders=senders, userkeys=senders * 60, event_hours=hours)
    who = [(f"app-{j % 4}", f"sender-{j}") for j in range(senders)]
    recipients = {w: [f"+1666{j:04d}{r:04d}" for r in range(60)] for j, w in enumerate(who)}
    ts = T0
    for (app, _), users in recipients.items():
        for u in users:
            ts += 10
            log.emit("opt_in", f"oi-{len(log.records):08d}", app, ts, userkey=u, source="web form")
    for hour in range(hours):
        base = T0 + (hour + 1) * HOUR
        acts = []
        for j, w in enumerate(who):
            text = spam[(hour * senders + j) % len(spam)]
            users = rng.sample(recipients[w], 25)
            acts += [("blast", w, u, f"{rng.choice(NAMES)}, {text} {rng.randint(100, 999)}") for u in users[:15]]
            acts += [("talk", w, u, rng.choice(ham)) for u in users[15:]]
        rng.shuffle(acts)
        step = (HOUR // 2) // len(acts)
        for k, (kind, (app, sender), user, text) in enumerate(acts):
            at, seq = base + k * step, len(log.records)
            if kind == "talk":
                log.emit("inbound", f"in-{seq:08d}", app, at, sender=sender, userkey=user, text=rng.choice(ham))
                log.emit(
                    "send",
                    f"req-{seq + 1:08d}",
                    app,
                    at + step // 2,
                    sender=sender,
                    userkey=user,
                    text=text,
                    reply_to=f"in-{seq:08d}",
                )
            else:
                log.emit("send", f"req-{seq:08d}", app, at, sender=sender, userkey=user, text=text)
    return log


@dataclass
class LongRun:
    group_id: str
    log: Log
    decisions: int
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (s since start, decisions, RSS MB)
    sender_rows: list[tuple[int, int]] = field(default_factory=list)  # (clusters, bytes of all its rows) per sender
    problem: str | None = None


async def long_run(bootstrap: str, work: Path, hours: int, senders: int, seed: int) -> LongRun:
    log = long_run_log(hours, senders, seed)
    want = expected(log).decisions
    s = bench_settings(bootstrap, work, "memlong", log_level="info")
    decisions = s.topic("decisions")
    await declare_outputs(s)
    await publish_records(s, log.records)
    result = LongRun(s.group_id, log, want)
    started = time.monotonic()
    worker = WorkerProcess(s, work / f"worker-{s.group_id}.log").start()
    with stopping(worker):
        waiter = asyncio.ensure_future(wait_for_count(s, decisions, want, worker, stall_s=120))
        while not waiter.done():
            decided = await topic_total(s, decisions)
            if decided:  # from the first decision on: start-up (imports, group join) is not the run
                result.samples.append((time.monotonic() - started, decided, vmrss_mb(worker.process.pid)))
            await asyncio.wait([waiter], timeout=1.0)
        _, result.problem = waiter.result()
        result.samples.append(
            (time.monotonic() - started, await topic_total(s, decisions), vmrss_mb(worker.process.pid))
        )
    found = Counter(d["outcome"] for _, d in await read_all(s, decisions))
    if sum(found.values()) != want:
        result.problem = (result.problem or "") + f" decisions {sum(found.values())} != expected {want}"
    policy = Policy()
    rows = await changelog_rows(s)

    def row(table: str, head_key: bytes, cid: str) -> bytes | None:  # a cluster's row, keyed after its head's key
        return rows.get(PREFIX[table] + head_key[len(PREFIX[SENDERS]) :] + b"\x1f" + cid.encode())

    for k, v in rows.items():
        if k.startswith(PREFIX[SENDERS]) and v is not None:
            state = SenderState.from_rows(
                v, lambda cid, k=k: row(CLUSTERS, k, cid), lambda cid, k=k: row(SKETCHES, k, cid), policy.num_perm
            )
            size = (
                len(k)
                + len(v)
                + sum(len(row(t, k, c.cluster_id)) + len(k) for t in (CLUSTERS, SKETCHES) for c in state.clusters)
            )
            result.sender_rows.append((len(state.clusters), size))
    return result
