"""sendgate benchmarks on a real Kafka broker, plus the in-process ones.

    bench/run                 # full suite (10-20 min on 2 cores), writes bench/results/latest.md (+ PNGs)
    bench/run --quick         # smoke version for CI, writes bench/results/quick.md
    SENDGATE_BOOTSTRAP=host:port bench/run ...   # use a running broker instead of starting one

Workloads (see throughput.py, latency.py, replay_speed.py for the method of each):
  throughput  one worker process vs a raw aiokafka pass-through on the same generated log
  replay      `sendgate replay` over the same log, next to the live worker's events/s
  latency     fixed offered rates (1,000 and 3,000 requests/s): produce -> decision at a subscriber
  profile     py-spy samples of the worker (saturated, and at 1,000/s), when py-spy is installed
  memory      worker RSS holding 100k and 1M userkeys, changelog bytes, restarts and fail-over (one of two
              workers killed), RSS over a long run (worker_memory.py)
  inprocess   bench.steps, bench.state_size, bench.detection (subprocesses; skipped if absent)
Benchmarks are not tests: a missed target is reported, not failed; a broken workload exits 1.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import importlib.metadata as md
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sendgate.streams.local.broker import KAFKA_VERSION, LocalKafka
from sendgate.streams.config import Settings

from . import latency as lat
from . import replay_speed
from . import throughput as tp
from . import worker_memory as mem
from ._common import loadavg, md_table, nproc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
INPROCESS = ("steps", "state_size", "detection")
BROKER_KEYS = ("num.network.threads", "num.io.threads", "log.flush.interval.messages", "log.segment.bytes",
               "message.max.bytes", "compression.type", "group.initial.rebalance.delay.ms",
               "offsets.topic.num.partitions", "auto.create.topics.enable")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- py-spy ------------------------------------------------------------------------------------


def pyspy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def pyspy_record(pid: int, seconds: float, out: Path, rate: int = 100) -> "Profile | str":
    exe = pyspy()
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    proc = await asyncio.create_subprocess_exec(exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                                "--rate", str(rate), "--format", "raw", "-o", str(out),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    text, _ = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        return f"py-spy failed ({proc.returncode}): {text.decode(errors='replace')[-500:]}"
    return summarize(out, seconds, rate)


def _short(path: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "python3.11/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<path>[^():]*)(?::\d+)?\)$")

CATEGORIES = [  # first match over the stack (without its root frames) wins
    ("tables: Faust Table get/set, RocksDB, changelog", ("faust/tables/", "faust/stores/")),
    ("gate: decode, consent, burst, sketches (sendgate.models)", ("models/",)),
    ("outputs: topic.send, producer buffer, aiokafka producer", ("faust/topics.py", "faust/channels.py",
                                                                "faust/transport/producer", "aiokafka/producer/")),
    ("input: aiokafka consumer, fetch, record parsing", ("aiokafka/consumer/", "aiokafka/record/")),
    ("Faust stream, agent, event and commit machinery", ("faust/",)),
    ("aiokafka client and connections (other)", ("aiokafka/",)),
    ("sendgate.streams glue (GateWorker.process itself)", ("streams/worker/app.py",)),
    ("mode services, threads and timers", ("mode/",)),
]
CROSS_CUTTING = [  # shares that cut across the categories (a sample may be in several)
    ("logging: LogRecords built for debug calls (Faust's worker sets the root logger to DEBUG for its spinner "
     "when the level is warning or above)", lambda fn, fp: fp.startswith("logging/")),
    ("socket writes (asyncio transport.write, i.e. send syscalls)", lambda fn, fp: fn == "_SelectorSocketTransport.write"),
    ("Faust table changelog sends (ProducerBuffer)", lambda fn, fp: fn.startswith("ProducerBuffer.")),
    ("decisions and deliveries: GateWorker.process -> Topic.send", lambda fn, fp: fn == "Topic.send"),
    ("Gate.handle_record (all of the pure gate, its table reads and writes included)",
     lambda fn, fp: fn == "Gate.handle_record"),
    ("sketching: Sketcher.sketch (normalise, shingles, MinHash)", lambda fn, fp: fn == "Sketcher.sketch"),
]
ROOT_FRAMES = ("mode/worker.py", "streams/cli.py", "<frozen runpy>")  # in every stack of the main thread
GENERIC_FRAMES = ROOT_FRAMES + ("asyncio/base_events.py", "asyncio/events.py")

@dataclass
class Profile:
    samples: int
    seconds: float
    rate: int
    self_top: list[tuple[str, int]]
    incl_top: list[tuple[str, int]]
    categories: list[tuple[str, int]]
    path: Path
    threads: list[tuple[str, int, int]] = field(default_factory=list)  # (thread, busy, waiting)
    idle: int = 0
    cross: list[tuple[str, int]] = field(default_factory=list)


def summarize(path: Path, seconds: float, rate: int) -> Profile:
    """Aggregate py-spy's collapsed stacks. Samples whose leaf is the selector's epoll wait are the
    event loop waiting for I/O (py-spy's idle detection does not catch them here): counted per
    thread, then left out of every CPU share."""
    self_c: Counter = Counter()
    incl_c: Counter = Counter()
    cats: Counter = Counter()
    threads: Counter = Counter()
    cross: Counter = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append((m.group("fn"), _short(m.group("path"))) if m else (raw.strip(), ""))
        thread = ("other threads (Faust's aiokafka consumer thread)" if any(fn == "Thread._bootstrap" for fn, _ in frames)
                  else "main thread (event loop: agent, producer, tables, timers)")
        if frames[-1][1] == "selectors.py":
            threads[(thread, "waiting in epoll")] += n
            idle += n
            continue
        threads[(thread, "busy")] += n
        total += n
        names = [f"{fn} ({p})" for fn, p in frames]
        self_c[names[-1]] += n
        for name in {nm for nm, (_, fp) in zip(names, frames) if fp not in GENERIC_FRAMES}:
            incl_c[name] += n  # inclusive: once per sample, without the frames every stack has
        for label, test in CROSS_CUTTING:
            if any(test(fn, fp) for fn, fp in frames):
                cross[label] += n
        paths = [p for _, p in frames if p not in ROOT_FRAMES]
        for label, markers in CATEGORIES:
            if any(p.startswith(mk) or f"/{mk}" in p for p in paths for mk in markers):
                cats[label] += n
                break
        else:
            cats["event loop: callbacks, other stdlib"] += n
    rows = []
    for thread in sorted({t for t, _ in threads}):
        busy, wait = threads[(thread, "busy")], threads[(thread, "waiting in epoll")]
        rows.append((thread, busy, wait))
    return Profile(total, seconds, rate, self_c.most_common(20), incl_c.most_common(25), cats.most_common(), path,
                   rows, idle, [(label, cross[label]) for label, _ in CROSS_CUTTING])


def profile_md(p: Profile | str | None, title: str) -> str:
    if p is None:
        return f"### {title}\n\nnot run"
    if isinstance(p, str):
        return f"### {title}\n\n{p}"
    pct = lambda n: f"{100 * n / p.samples:.1f} %"  # noqa: E731
    ticks = p.seconds * p.rate
    return "\n\n".join([
        f"### {title}",
        f"py-spy {p.rate} Hz for {p.seconds:.0f} s: {p.samples:,} busy samples, {p.idle:,} waiting in epoll "
        "(the event loop idle; left out of the shares below). Raw collapsed stacks: "
        f"`{p.path.name}` (speedscope or flamegraph.pl read it).",
        md_table(["thread", "busy samples", "waiting samples", "busy share of wall time"],
                 [[t, b, w, f"{100 * b / ticks:.0f} %"] for t, b, w in p.threads]),
        "Where the busy time goes (each sample counted once: the first category, in this order, with a frame "
        "in the stack; a table write made by the gate counts as tables):",
        md_table(["category", "samples", "share of busy"], [[c, n, pct(n)] for c, n in p.categories]),
        "Across categories (a sample can count in several rows):",
        md_table(["samples with a frame of", "samples", "share of busy"], [[c, n, pct(n)] for c, n in p.cross]),
        "Top functions by own time:",
        md_table(["function (file)", "samples", "share of busy"], [[f, n, pct(n)] for f, n in p.self_top[:15]]),
        "Top functions by inclusive time:",
        md_table(["function (file)", "samples", "share of busy"], [[f, n, pct(n)] for f, n in p.incl_top[:20]]),
    ])


# --- broker ------------------------------------------------------------------------------------


async def broker_configs(bootstrap: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_cluster()
        broker_id = str(meta["brokers"][0]["node_id"])
        resp = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)])
        entries = resp[0].to_object()["resources"][0]["config_entries"]
        found = {e["config_names"]: e["config_value"] for e in entries}
        return {k: str(found.get(k)) for k in BROKER_KEYS}
    except Exception as exc:  # informative only
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefixes: list[str]) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if any(t.startswith(p) for p in prefixes)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


# --- results -----------------------------------------------------------------------------------


@dataclass
class Report:
    args: argparse.Namespace
    started: str = ""
    load_start: str = ""
    broker: dict[str, str] = field(default_factory=dict)
    faust: dict[str, str] = field(default_factory=dict)
    worker: dict[str, str] = field(default_factory=dict)
    log: Any = None
    expected: Any = None
    publish_s: float = 0.0
    passthrough: list = field(default_factory=list)
    worker_run: Any = None
    replay: Any = None
    latency: Any = None
    profile_tp: Any = None
    held: list = field(default_factory=list)  # worker_memory.HeldState, by userkeys
    long_run: Any = None
    inprocess: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def fmt(x: float, d: int = 0) -> str:
    return f"{x:,.{d}f}"


def versions() -> str:
    out = []
    for pkg in ("faust-streaming", "aiokafka", "orjson", "datasketch", "numpy", "rocksdict", "matplotlib"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def command(args: argparse.Namespace) -> str:
    cmd = os.environ.get("SENDGATE_BENCH_COMMAND") or ("python -m bench " + " ".join(sys.argv[1:])).strip()
    if os.environ.get("SENDGATE_BOOTSTRAP"):
        cmd = f"SENDGATE_BOOTSTRAP={os.environ['SENDGATE_BOOTSTRAP']} {cmd}"
    return cmd


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def summary_rows(r: Report) -> list[list[str]]:
    rows = []
    pt = [p for p in r.passthrough if p.records]
    pt_rate = sum(p.rate for p in pt) / len(pt) if pt else 0.0
    w = r.worker_run
    if w is not None:
        ratio = w.decisions.rate / pt_rate if pt_rate else 0.0
        rows.append(["throughput: decisions/s, one worker process", fmt(w.decisions.rate),
                     f"pass-through {fmt(pt_rate)} records/s (" + ", ".join(fmt(p.rate) for p in pt) + ")",
                     f"{ratio:.2f}", ">= 0.40", verdict(ratio >= 0.40 if pt_rate else None)])
        rows.append(["throughput: events/s (all types), one worker", fmt(w.events_rate),
                     f"pass-through {fmt(pt_rate)} records/s", f"{w.events_rate / pt_rate:.2f}" if pt_rate else "",
                     "", ""])
    if r.expected is not None:
        rows.append(["in-process ceiling: Gate.handle_record events/s (MemoryStore, no Kafka)",
                     fmt(r.expected.rate), "", "", "", ""])
    if r.latency is not None:
        echo = {e.rate: e for e in r.latency.echo}
        for res in r.latency.results:
            if not len(res.lat_ms):
                rows.append([f"latency at {res.rate:,}/s", "no decisions", "", "", "", ""])
                continue
            p99 = res.pct(res.lat_ms, 99)
            target = "p99 <= 25 ms" if res.rate == 1000 else ""
            e = echo.get(res.rate)
            base = (f"raw aiokafka echo {e.pct(e.lat_ms, 50):.1f} / {e.pct(e.lat_ms, 99):.1f} / {e.lat_ms.max():.1f}"
                    if e is not None and len(e.lat_ms) else "")
            rows.append([f"latency at {res.rate:,}/s offered ({fmt(res.achieved_rate)}/s achieved): p50 / p99 / max ms",
                         f"{res.pct(res.lat_ms, 50):.1f} / {p99:.1f} / {res.lat_ms.max():.1f}", base, "", target,
                         verdict(p99 <= 25.0) if res.rate == 1000 else ""])
    if r.replay is not None and w is not None:
        rr = r.replay.result.rate
        rows.append(["replay: events/s of `sendgate replay` on the same log", fmt(rr),
                     f"live worker {fmt(w.events_rate)} events/s", f"{rr / w.events_rate:.2f}" if w.events_rate else "",
                     "", ""])
    base = next((h for h in r.held if h.userkeys == 0), None)
    for h in r.held:
        if h.userkeys and base is not None:
            uk = sum(h.changelog.get(k, [0, 0])[1] for k in ("userkeys", "conversations"))
            rows.append([f"memory: worker RSS holding {h.userkeys:,} userkeys (MB; bytes per userkey)",
                         f"{h.rss_mb:.0f}; {(h.rss_mb - base.rss_mb) * 2**20 / h.userkeys:,.0f} B",
                         f"worker holding none: {base.rss_mb:.0f} MB; changelog {uk / h.userkeys:.0f} B/userkey",
                         "", "", ""])
    for h in r.held:  # issue 14's targets, at every N but the baseline
        if not h.userkeys:
            continue
        rows_held = sum(v[0] for v in h.changelog.values())
        if h.disk_lost_s is not None:
            restored, took = h.restore or (0, 0.0)
            rate = restored / took if took else 0.0
            rows.append([f"recovery: empty store (disk lost), {h.userkeys:,} userkeys, {rows_held:,} rows: new "
                         "process to the probe decided s; rows/s of the restore (its own log line)",
                         f"{fmt_s(h.disk_lost_s)}; {fmt(rate)} ({restored:,} rows in {took:.1f} s)",
                         f"Faust's own restore (before): {fmt_s(h.recovered_s)} s to the probe decided",
                         f"{h.recovered_s / h.disk_lost_s:.1f}x" if h.disk_lost_s else "",
                         "<= 60 s at 1M; >= 50,000 rows/s",
                         verdict(rate >= 50_000 and (h.userkeys < 1_000_000 or h.disk_lost_s <= 60))
                         if h.restore else "n/a"])
        for label, took, limit in (("after kill -9", h.after_kill_s, 30.0), ("after SIGTERM", h.after_stop_s, 15.0)):
            if took is not None:
                rows.append([f"recovery: restart {label}, {h.userkeys:,} userkeys: new process to the probe decided s",
                             fmt_s(took), "", "", f"<= {limit:g} s", verdict(took <= limit)])
    for h in r.held:
        for f in h.failovers:
            marks = f.marks.get("heartbeat: rebalancing")
            rows.append([f"fail-over: one of two workers killed, {h.userkeys:,} userkeys, session timeout "
                         f"{f.session_timeout_s:g} s: kill to the survivor's first / last decision s",
                         f"{fmt_s(f.first_s)} / {fmt_s(f.last_s)}" + ("" if f.decided == f.probe else
                                                                     f" ({f.decided:,} of {f.probe:,} decided)"),
                         f"rebalance seen {fmt_s(marks)} s after the kill; {sum(f.restored.values()):,} changelog "
                         "record(s) restored", "", "<= 30 s", verdict(f.last_s <= 30 and f.decided == f.probe if f.last_s is not None else None)])
    return rows


def outcome_table(r: Report) -> str:
    cols = [("in-process", r.expected.outcomes if r.expected else None),
            ("live worker", r.worker_run.outcomes if r.worker_run else None),
            ("replay", r.replay.outcomes if r.replay else None)]
    cols = [(n, c) for n, c in cols if c is not None]
    keys = sorted(set().union(*[set(c) for _, c in cols]), key=lambda k: -max(c.get(k, 0) for _, c in cols))
    rows = [[k] + [fmt(c.get(k, 0)) for _, c in cols] for k in keys]
    rows.append(["**total**"] + [fmt(sum(c.values())) for _, c in cols])
    same = all(c == cols[0][1] for _, c in cols)
    return (md_table(["outcome/reason"] + [n for n, _ in cols], rows)
            + f"\n\nIdentical outcome counts across {', '.join(n for n, _ in cols)}: **{'yes' if same else 'NO'}**")


def write_markdown(r: Report, path: Path) -> None:
    a = r.args
    parts = [
        "# sendgate benchmarks: broker workloads" + (" (quick smoke run)" if a.quick else ""),
        "",
        f"- command: `{command(a)}` (from the project root)",
        f"- date: {r.started}; wall time {r.wall_s / 60:.1f} min",
        f"- nproc: {nproc()}; load average at start {r.load_start}, at end {loadavg()} — a shared machine: "
        "the broker, the worker, the bench process and other jobs compete for the same cores, so absolute "
        "figures are noisy; the side-by-side ratios are the figures to compare",
        f"- Python {platform.python_version()}; {versions()}; Apache Kafka {KAFKA_VERSION}",
        f"- machine: {platform.machine()}, {platform.system()} {platform.release()}",
        "",
        "## Summary",
        "",
        md_table(["figure", "sendgate", "baseline (same run)", "ratio", "target", ""], summary_rows(r)),
    ]
    if r.errors:
        parts += ["", "## Errors", ""] + [f"```\n{e}\n```" for e in r.errors]
    if tp.STARTS:
        parts += ["", "Worker restarts needed at start-up (a worker that had not joined and recovered in 45 s was "
                  "stopped and started again; it had processed nothing): " + "; ".join(tp.STARTS)]
    parts += ["", "## Settings", "",
              "Broker: " + r.broker.get("_where", "?"), "",
              md_table(["broker config", "value"], [[k, v] for k, v in r.broker.items() if not k.startswith("_")]),
              "", "Worker (`sendgate worker` in a child process, `WorkerProcess`; as the integration tests run it):", "",
              md_table(["sendgate setting", "value"], list(r.worker.items())), "",
              ("Worker environment overrides (`--worker-env`): " + ", ".join(f"`{e}`" for e in a.worker_env)
               if a.worker_env else "No worker environment overrides (`--worker-env`)."), "",
              "Faust settings in effect (read from the worker's `App.conf`; sendgate sets acks, guarantee, store "
              "and group timings, the rest are Faust defaults):", "",
              md_table(["Faust setting", "value"], list(r.faust.items())), "",
              "Clients: log publisher aiokafka acks=all, linger 20 ms, batch 256 KiB; pass-through consumer "
              "(group, manual commit) and producer acks=all, linger 0, batch 16 KiB (as Faust's producer); latency "
              f"request producer {lat.PRODUCER} (no Publisher validation on the hot path), subscriber "
              f"{lat.SUBSCRIBER}, no group, every partition, from the end."]
    if r.log is not None:
        parts += ["", "## Throughput", "", "Log: " + r.log.describe(),
                  f"Published up front in {r.publish_s:.1f} s to one events topic of 8 partitions, keys = app.", "",
                  "Expected decisions (in-process pass over the same log) = "
                  f"{fmt(r.expected.decisions)} ({fmt(r.log.sends)} sends + releases and cancellations of paced "
                  f"requests); in-process pass took {r.expected.seconds:.1f} s.", ""]
        rows = []
        for p in r.passthrough:
            rows.append([p.label, fmt(p.records), f"{p.seconds:.1f}", fmt(p.rate), p.note])
        if r.worker_run is not None:
            w = r.worker_run
            rows.append(["sendgate worker: decisions", fmt(w.decisions.records), f"{w.decisions.seconds:.1f}",
                         fmt(w.decisions.rate), f"events/s over the same span: {fmt(w.events_rate)}; dead letters "
                         f"{w.deadletters}; worker start to last decision {w.wall_s:.1f} s"
                         + (f"; PROBLEM: {w.problem}" if w.problem else "")])
        parts += [md_table(["run", "records", "span s (first to last)", "per second", "note"], rows), "",
                  "Pass-through runs before (A) and after (B) the worker; the baseline is their mean. Span = first to "
                  "last produce (pass-through: this process's clock at `send`; worker: decision record timestamps, "
                  "i.e. the worker's produce times), so start-up and group joins are not counted. The worker's "
                  "events/s counts every event of the log over the decisions' span (events before the first "
                  "and after the last decision are few)."]
        if r.expected is not None:
            parts += ["", "Outcome counts (the live worker and replay must reproduce the in-process pass):", "",
                      outcome_table(r)]
    if r.replay is not None:
        rr = r.replay.result
        parts += ["", "## Replay", "",
                  f"`sendgate.streams.ops.replay.replay(settings, 'bench', policy)` (what `sendgate replay --name bench` "
                  f"runs) over the same log: {fmt(rr.events)} events, {fmt(rr.decisions)} decisions, "
                  f"{rr.deadlettered} invalid, {rr.seconds:.1f} s = **{fmt(rr.rate)} events/s** (includes reading "
                  f"the log and producing the decisions to `{r.replay.topic}`, acks=all, linger 20 ms). "
                  + (f"Live worker on the same log: {fmt(r.worker_run.events_rate)} events/s." if r.worker_run else "")]
    if r.latency is not None:
        rows = []
        for who, res in ([("sendgate worker", x) for x in r.latency.results]
                         + [("raw aiokafka echo", x) for x in r.latency.echo]):
            if not len(res.lat_ms):
                rows.append([who, f"{res.rate:,}", fmt(res.sent), "", "", "", "", "", "", "", "", "", "", res.note])
                continue
            q = res.pct
            rows.append([who, f"{res.rate:,}", fmt(res.sent), fmt(res.achieved_rate), fmt(res.decided),
                         fmt(res.decided_rate),
                         f"{q(res.lat_ms, 50):.1f}", f"{q(res.lat_ms, 90):.1f}", f"{q(res.lat_ms, 99):.1f}",
                         f"{q(res.lat_ms, 99.9):.1f}", f"{res.lat_ms.max():.1f}",
                         f"{q(res.in_ms, 50):.1f} / {q(res.in_ms, 99):.1f}",
                         f"{q(res.out_ms, 50):.1f} / {q(res.out_ms, 99):.1f}", res.note])
        a_ = r.args
        parts += ["", "## Latency", "",
                  f"One worker (same settings, but the wall-clock ticker on at 1 s as in production) on a fresh "
                  f"prefix; {r.latency.setup_events:,} setup events (sender profiles, inbounds, opt-ins) first. "
                  f"Each rate: {a_.latency_warmup:g} s warm-up (not counted) + {a_.latency_seconds:g} s measured. "
                  "Requests: 35 % replies (consent only), 65 % sends to opted-in userkeys (consent + burst step). "
                  "in = decision produced (its record timestamp, ms resolution) - request sent; out = arrival at the "
                  "subscriber - decision produced; same host clock. decided /s = decisions / (last arrival - first "
                  "measured send): the worker's capacity when it cannot keep up. Baseline, same rates and requests in "
                  "the same run: a raw aiokafka echo process (`python -m bench.latency echo`: no group, reads every "
                  "partition, orjson decode + re-encode, produce acks=all linger 0) between the same producer and "
                  "the same kind of subscriber: what Kafka and one Python hop cost on this machine.", "",
                  md_table(["path", "offered /s", "requests", "achieved /s", "decided", "decided /s", "p50 ms", "p90 ms", "p99 ms",
                            "p99.9 ms", "max ms", "in p50 / p99 ms", "out p50 / p99 ms", "note"], rows)]
        if r.latency.profile is not None:
            prof, res = r.latency.profile
            if len(res.lat_ms):
                parts += ["", f"Profiled window (1,000/s for 10 s with py-spy attached, not part of the figures "
                              f"above): p50 {res.pct(res.lat_ms, 50):.1f} ms, p99 {res.pct(res.lat_ms, 99):.1f} ms."]
    if r.held or r.long_run is not None:
        parts += memory_md(r)
    parts += ["", "## Where the worker's time goes", ""]
    parts += [profile_md(r.profile_tp, "Saturated (the throughput log, fresh prefix, py-spy attached)")]
    if r.latency is not None and r.latency.profile is not None:
        parts += ["", profile_md(r.latency.profile[0], "At 1,000 requests/s")]
    if r.plots:
        parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r.plots]
    if r.inprocess:
        parts += ["", "## In-process benchmarks", ""]
        for name, rc, secs, text in r.inprocess:
            parts += [f"### bench.{name} (exit {rc}, {secs:.0f} s)", ""]
            if text:
                parts += [re.sub(r"^(#+)", r"\1##", text, flags=re.M).strip()]
            parts += [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts).rstrip() + "\n")


def plots(r: Report, stem: str, where: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    if r.worker_run is not None or r.passthrough:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for p in r.passthrough:
            if p.per_second:
                ax.plot(range(len(p.per_second)), p.per_second, "o-", ms=3, label=f"{p.label} (records/s)", alpha=0.8)
        if r.worker_run is not None and r.worker_run.decisions.per_second:
            s = r.worker_run.decisions.per_second
            ax.plot(range(len(s)), s, "o-" if len(s) < 30 else "-", ms=3, label="sendgate worker (decisions/s)",
                    color="black")
        ax.set_xlabel("seconds since the first output record")
        ax.set_ylabel("records per second (1 s bins)")
        ax.set_yscale("log")
        ax.set_title("Throughput over time, same events topic")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        name = f"{stem}-throughput.png"
        fig.tight_layout()
        fig.savefig(where / name, dpi=110)
        plt.close(fig)
        made.append(name)
    if r.latency is not None and any(len(x.lat_ms) for x in r.latency.results):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for k, res in enumerate(r.latency.results):
            if not len(res.lat_ms):
                continue
            color = f"C{k}"
            xs = sorted(res.lat_ms)
            axes[0].plot(xs, [100 * (i + 1) / len(xs) for i in range(len(xs))], color=color, label=f"{res.rate:,}/s")
            bins = defaultdict(list)
            for t, l in res.timeline:
                bins[int(t)].append(l)
            ts_ = sorted(bins)
            import numpy as np
            axes[1].plot(ts_, [np.percentile(bins[t], 99) for t in ts_], color=color, label=f"{res.rate:,}/s p99")
            axes[1].plot(ts_, [np.percentile(bins[t], 50) for t in ts_], "--", color=color, label=f"{res.rate:,}/s p50")
        for k, res in enumerate(r.latency.echo):
            if len(res.lat_ms):
                xs = sorted(res.lat_ms)
                axes[0].plot(xs, [100 * (i + 1) / len(xs) for i in range(len(xs))], ":", color=f"C{k}",
                             label=f"raw aiokafka echo {res.rate:,}/s")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("latency ms (log)")
        axes[0].set_ylabel("% of requests at or below")
        axes[0].axvline(25, color="red", lw=0.8, label="25 ms target")
        axes[0].legend()
        axes[0].grid(True, which="both", alpha=0.3)
        axes[1].set_yscale("log")
        axes[1].set_xlabel("seconds into the measured window")
        axes[1].set_ylabel("latency ms per 1 s bin (log)")
        axes[1].legend(fontsize=8)
        axes[1].grid(True, which="both", alpha=0.3)
        fig.suptitle("Send request produce -> decision at a subscriber")
        name = f"{stem}-latency.png"
        fig.tight_layout()
        fig.savefig(where / name, dpi=110)
        plt.close(fig)
        made.append(name)
    lr = r.long_run
    if lr is not None and lr.samples:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot([x[1] for x in lr.samples], [x[2] for x in lr.samples], "-", color="black")
        ax.set_xlabel(f"decisions made (of {lr.decisions:,}; {lr.log.event_hours:g} h of event time, "
                      "clusters expire after 24 h idle)")
        ax.set_ylabel("worker VmRSS MB")
        ax.set_ylim(bottom=0)
        ax.set_title("Worker memory over a long run with cluster expiry")
        ax.grid(True, alpha=0.3)
        name = f"{stem}-memory.png"
        fig.tight_layout()
        fig.savefig(where / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


# --- phases ------------------------------------------------------------------------------------


async def phase_throughput(r: Report, bootstrap: str, work: Path, prefixes: list[str]) -> Settings:
    a = r.args
    log(f"generating {a.events:,} events (seed {a.seed}) ...")
    r.log = tp.generate(a.events, a.seed)
    log(r.log.describe())
    r.expected = tp.expected(r.log)
    log(f"in-process pass: {r.expected.decisions:,} decisions expected, {fmt(r.expected.rate)} events/s")
    settings = tp.bench_settings(bootstrap, work, "tp")
    prefixes.append(settings.group_id)
    r.worker = tp.worker_settings_table(settings)
    r.faust = tp.faust_settings(settings)
    log(f"worker settings: {r.worker}")
    log(f"Faust settings: {r.faust}")
    r.publish_s = await tp.publish_records(settings, r.log.records)
    log(f"published in {r.publish_s:.1f} s to {settings.topic('events')}")
    n = len(r.log.records)
    for label in ("A", "B"):
        if label == "B":
            log("sendgate worker ...")
            r.worker_run = await tp.worker_pass(settings, work, r.expected.decisions, n)
            w = r.worker_run
            log(f"worker: {w.decisions.records:,} decisions in {w.decisions.seconds:.1f} s = "
                f"{fmt(w.decisions.rate)} decisions/s, {fmt(w.events_rate)} events/s, dead letters {w.deadletters}"
                + (f"; PROBLEM {w.problem}" if w.problem else ""))
            if w.problem:
                r.errors.append(f"throughput worker: {w.problem}")
        log(f"pass-through {label} ...")
        res = await tp.passthrough(settings, label, n)
        r.passthrough.append(res)
        log(f"pass-through {label}: {res.records:,} records in {res.seconds:.1f} s = {fmt(res.rate)} records/s")
    return settings


async def phase_profile_tp(r: Report, bootstrap: str, work: Path, prefixes: list[str]) -> None:
    rate = r.worker_run.events_rate if r.worker_run and r.worker_run.events_rate else 1000.0
    seconds = 20.0 if not r.args.quick else 5.0
    n = min(len(r.log.records), int(rate * (seconds + 15)))
    settings = tp.bench_settings(bootstrap, work, "prof")
    prefixes.append(settings.group_id)
    await tp.publish_records(settings, r.log.records[:n])
    await tp.declare_outputs(settings)
    worker = await tp.start_worker(settings, work / f"worker-{settings.group_id}.log", tp.first_decision(settings))
    try:
        log(f"py-spy on the worker (pid {worker.process.pid}) for {seconds:.0f} s ({n:,} events published) ...")
        r.profile_tp = await pyspy_record(worker.process.pid, seconds,
                                          r.args.outdir / f"{r.args.stem}-profile-saturated.txt")
    finally:
        worker.stop()


async def phase_memory(r: Report, bootstrap: str, work: Path, prefixes: list[str]) -> None:
    if not r.faust:  # the Faust settings in effect (standby replicas among them), when no other workload read them
        r.faust = tp.faust_settings(tp.bench_settings(bootstrap, work, "mem"))
    for n in r.args.userkeys:
        log(f"worker memory holding {n:,} userkeys (rebuild, then a worker recovers them) ...")
        held = await mem.held_state(bootstrap, work, n, r.args.restarts)
        prefixes.append(held.group_id)
        r.held.append(held)
        log(f"  {n:,} userkeys: RSS {held.rss_mb:.1f} MB; rebuild {held.rebuild_s:.0f} s, worker start to probe "
            f"decided {held.recovered_s:.1f} s (empty store, Faust's restore), {fmt_s(held.disk_lost_s)} s (empty store, "
            f"restore.py), {fmt_s(held.after_kill_s)} s after kill -9, "
            f"{fmt_s(held.after_stop_s)} s after SIGTERM; changelog {held.changelog}")
        for f in held.failovers:
            log(f"  fail-over, session timeout {f.session_timeout_s:g} s: kill to first / last decision "
                f"{fmt_s(f.first_s)} / {fmt_s(f.last_s)} s; survivor {f.marks}; moved {f.moved}, standbys "
                f"{sorted(f.standbys)}, restored {f.restored}, written meanwhile {f.written}, read again {f.reread}, "
                f"decided {f.decided} of {f.probe}" + (f", lag {f.lag}" if f.lag else ""))
        if held.problem:
            r.errors.append(f"memory {n:,} userkeys: {held.problem}")
    hours, senders = (6, 4) if r.args.quick else (96, 40)
    log(f"long run: {senders} senders, a blast each per hour over {hours} h of event time ...")
    r.long_run = await mem.long_run(bootstrap, work, hours, senders, r.args.seed)
    prefixes.append(r.long_run.group_id)
    if r.long_run.problem:
        r.errors.append(f"memory long run: {r.long_run.problem}")


def fmt_s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def memory_md(r: Report) -> list[str]:
    parts = ["", "## Memory", "", mem.__doc__.split("Method:", 1)[1].strip(), ""]
    base = next((h for h in r.held if h.userkeys == 0), None)
    rows = []
    for h in r.held:
        uk = sum(h.changelog.get(k, [0, 0])[1] for k in ("userkeys", "conversations"))
        per = (f"{(h.rss_mb - base.rss_mb) * 2**20 / h.userkeys:,.0f}" if base is not None and h.userkeys else "")
        rows.append([fmt(h.userkeys), f"{h.rss_mb:.1f}", per,
                     f"{uk / h.userkeys:.0f}" if h.userkeys else "",
                     ", ".join(f"{k} {v[0]:,} rows / {v[1]:,} B" for k, v in sorted(h.changelog.items())),
                     f"{h.store_bytes / 2**20:.1f}", f"{h.rebuild_s:.0f}", f"{h.recovered_s:.1f}",
                     fmt_s(h.disk_lost_s), fmt_s(h.after_kill_s), fmt_s(h.after_stop_s)])
    parts += [md_table(["userkeys", "worker RSS MB", "RSS bytes/userkey (vs 0)", "changelog bytes/userkey",
                        "state changelog (last value per key)", "RocksDB dir MB", "rebuild s",
                        "empty store, Faust's restore (before): start to probe decided s",
                        "empty store, streams/worker/restore.py: start to probe decided s",
                        "after kill -9: restart to probe decided s",
                        "after SIGTERM: restart to probe decided s"], rows)]
    failovers = [(h, f) for h in r.held for f in h.failovers]
    if failovers:
        marks = list(mem.FAILOVER_MARKS)
        rows = [[fmt(h.userkeys), f"{f.session_timeout_s:g}", ", ".join(map(str, f.moved)),
                 fmt(f.probe) if f.decided == f.probe else f"**{fmt(f.decided)} of {fmt(f.probe)}** (lag {f.lag})",
                 fmt_s(f.first_s), fmt_s(f.last_s), *(fmt_s(f.marks.get(m)) for m in marks),
                 "yes" if set(f.moved) <= set(f.standbys) else
                 f"no ({', '.join(map(str, sorted(f.standbys)))})" if f.standbys else "no (none)",
                 fmt(sum(f.written.values())) if f.written else "", fmt(sum(f.restored.values())), fmt(f.reread)]
                for h, f in failovers]
        parts += ["", "Fail-over (one of two workers killed; s after the kill):", "",
                  md_table(["userkeys", "session timeout s", "killed worker's partitions", "probe decisions",
                            "first decision", "last decision", *(f"survivor: {m}" for m in marks),
                            "survivor held them as standbys", "changelog records written to them since its standby "
                            "offsets", "changelog records it restored after the kill",
                            "events it read again (its stream skipped them)"], rows), "",
                  "The survivor learns of the death at its first heartbeat after the coordinator's session timeout "
                  "(counted from the dead worker's last heartbeat), so `heartbeat: rebalancing` is the session "
                  "timeout give or take one heartbeat interval (3 s); rejoin, assignment and recovery follow. The "
                  "workers' group timings are those of the fail-over round (the Faust settings table above is that "
                  "of the other workers); standby replicas are Faust's `table_standby_replicas`."]
    lr = r.long_run
    if lr is not None and lr.samples:
        rss = [x[2] for x in lr.samples]
        done = [x for x in lr.samples if x[1] >= lr.decisions / 2]
        second_half = (max(rss[-len(done):]) - done[0][2]) if done else 0.0
        clusters = sorted(c for c, _ in lr.sender_rows)
        sizes = [b for _, b in lr.sender_rows]
        parts += ["", f"Long run: {lr.log.senders} senders in 4 apps, {len(lr.log.records):,} events "
                      f"({', '.join(f'{t} {c:,}' for t, c in lr.log.types.most_common())}) over {lr.log.event_hours:g} h "
                      f"of event time; {lr.decisions:,} decisions. Worker RSS: {rss[0]:.1f} MB at the first decision, "
                      f"{max(rss):.1f} MB at most, {rss[-1]:.1f} MB at the end; change over the second half of the "
                      f"decisions {second_half:+.1f} MB. Senders at the end (changelog): {len(sizes)} holding "
                      f"{clusters[0] if clusters else 0}-{clusters[-1] if clusters else 0} clusters, "
                      f"{sum(sizes) / len(sizes) if sizes else 0:,.0f} B a sender (its head, cluster and sketch rows) "
                      f"on average. Plot: `{r.args.stem}-memory.png`."]
    return parts


def run_inprocess(r: Report, work: Path) -> None:
    for name in INPROCESS:
        if not (ROOT / "bench" / f"{name}.py").exists():
            log(f"bench.{name}: not present, skipped")
            continue
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if r.args.quick else [])
        log(f"{' '.join(cmd[1:])} ...")
        started, wall_started = time.monotonic(), time.time()
        out = work / f"inprocess-{name}.log"
        try:
            with open(out, "wb") as fh:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=600 if r.args.quick else 3600)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -1
        secs = time.monotonic() - started
        # the file this run wrote (quick runs may write <name>.quick.md)
        fresh = [f for f in (RESULTS / f"{name}.quick.md", RESULTS / f"{name}.md")
                 if f.exists() and f.stat().st_mtime >= wall_started - 1]
        results = fresh[0] if fresh else None
        text = results.read_text() if rc == 0 and results is not None else ""
        if rc != 0:
            tail = out.read_text(errors="replace")[-1500:]
            r.errors.append(f"bench.{name} exited {rc}:\n{tail}")
            text = f"failed (exit {rc}); output tail:\n\n```\n{tail}\n```"
        else:
            text = (f"(from `bench/results/{results.name}`, written by this run)\n\n" + text if results is not None
                    else "exit 0, but no results file written by this run was found")
        r.inprocess.append((name, rc, secs, text))
        log(f"bench.{name}: exit {rc} in {secs:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke version (CI)")
    ap.add_argument("--events", type=int, help="events in the throughput/replay log (default 200,000; quick 5,000)")
    ap.add_argument("--rates", help="offered request rates per second (default 100,1000,3000: 100/s shows the "
                                    "latency without queueing; quick 1000,3000)")
    ap.add_argument("--latency-seconds", type=float, help="measured seconds per rate (default 20; quick 3)")
    ap.add_argument("--latency-warmup", type=float, help="warm-up seconds per rate (default 2; quick 0.5)")
    ap.add_argument("--userkeys", help="userkeys held in the memory workload (default 0,100000,1000000; quick 0,10000)")
    ap.add_argument("--no-restarts", dest="restarts", action="store_false",
                    help="memory workload: time only the first start, not the disk-lost, kill -9 and SIGTERM restarts "
                         "nor the fail-over")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--skip", default="", help="comma list of: throughput, replay, latency, profile, memory, inprocess")
    ap.add_argument("--profile", action="store_true", help="profile with py-spy also in --quick")
    ap.add_argument("--out", help="results file (default bench/results/latest.md; quick: quick.md)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the worker processes, e.g. PRODUCER_LINGER=0.005 (Faust reads its "
                         "settings from the environment); shown with the results")
    ap.add_argument("--keep-topics", action="store_true", help="do not delete the bench topics from an external broker")
    a = ap.parse_args(argv)
    a.events = a.events or (5_000 if a.quick else 200_000)
    a.latency_seconds = a.latency_seconds or (3.0 if a.quick else 20.0)
    a.latency_warmup = a.latency_warmup if a.latency_warmup is not None else (0.5 if a.quick else 2.0)
    a.rates = [int(x) for x in (a.rates or ("1000,3000" if a.quick else "100,1000,3000")).split(",") if x.strip()]
    a.userkeys = [int(x) for x in (a.userkeys or ("0,10000" if a.quick else "0,100000,1000000")).split(",") if x.strip()]
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    unknown = skip - {"throughput", "replay", "latency", "profile", "memory", "inprocess"}
    if unknown:
        ap.error(f"--skip: unknown workload(s) {', '.join(sorted(unknown))}")
    if "throughput" in skip:
        skip.add("replay")  # replay runs on the throughput log, next to the live worker
    if a.quick and not a.profile:
        skip.add("profile")
    out = Path(a.out) if a.out else RESULTS / ("quick.md" if a.quick else "latest.md")
    a.stem, a.outdir = out.stem, out.parent
    a.outdir.mkdir(parents=True, exist_ok=True)
    for item in a.worker_env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            ap.error(f"--worker-env wants KEY=VALUE, got {item!r}")
        os.environ[k] = v  # the worker processes inherit the environment; Faust reads its settings from it

    r = Report(a, started=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), load_start=loadavg())
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sendgate-bench-"))
    log(f"work dir {work}; results -> {out}")
    kafka = None
    external = os.environ.get("SENDGATE_BOOTSTRAP")
    prefixes: list[str] = []
    try:
        if external:
            bootstrap = external
            r.broker["_where"] = f"external, SENDGATE_BOOTSTRAP={external} (its own settings; shared with whatever else uses it)"
        else:
            log(f"starting a local Kafka {KAFKA_VERSION} broker ...")
            kafka = LocalKafka()
            kafka.start()
            bootstrap = kafka.bootstrap
            r.broker["_where"] = (f"started by the bench: `sendgate.streams.local.broker.LocalKafka`, Apache Kafka "
                                  f"{KAFKA_VERSION}, one KRaft broker+controller on {bootstrap}, -Xmx{kafka.heap}, "
                                  "G1GC, data in a temporary directory, replication 1")
        r.broker.update(asyncio.run(broker_configs(bootstrap)))
        log(f"broker {bootstrap}: {r.broker}")

        tp_settings = None
        if "throughput" not in skip:
            try:
                tp_settings = asyncio.run(phase_throughput(r, bootstrap, work, prefixes))
            except Exception:
                r.errors.append("throughput: " + traceback.format_exc())
                log(r.errors[-1])
        if "replay" not in skip and tp_settings is not None:
            log("replay ...")
            try:
                r.replay = asyncio.run(replay_speed.run(tp_settings))
                log(f"replay: {r.replay.result.events:,} events in {r.replay.result.seconds:.1f} s = "
                    f"{fmt(r.replay.result.rate)} events/s")
            except Exception:
                r.errors.append("replay: " + traceback.format_exc())
                log(r.errors[-1])
        if "latency" not in skip:
            log(f"latency at {a.rates} requests/s ...")
            try:
                settings = tp.bench_settings(bootstrap, work, "lat", tick_interval_s=1.0)
                prefixes.append(settings.group_id)
                if not r.worker:
                    r.worker = tp.worker_settings_table(settings)
                    r.faust = tp.faust_settings(settings)
                hook = None
                if "profile" not in skip and pyspy():
                    hook = lambda pid: pyspy_record(pid, 10, a.outdir / f"{a.stem}-profile-1000rps.txt")  # noqa: E731
                echo_settings = tp.bench_settings(bootstrap, work, "echo")
                prefixes.append(echo_settings.group_id)
                log("raw aiokafka echo baseline ...")
                echo = asyncio.run(lat.run_echo(echo_settings, work, a.rates, a.latency_seconds, a.latency_warmup,
                                                a.seed, a.quick))
                log("sendgate worker ...")
                r.latency = asyncio.run(lat.run(settings, work, a.rates, a.latency_seconds, a.latency_warmup, a.seed,
                                                a.quick, hook))
                r.latency.echo = echo
            except Exception:
                r.errors.append("latency: " + traceback.format_exc())
                log(r.errors[-1])
        if "profile" not in skip and r.log is not None:
            try:
                asyncio.run(phase_profile_tp(r, bootstrap, work, prefixes))
            except Exception:
                r.errors.append("profile: " + traceback.format_exc())
                log(r.errors[-1])
        if "memory" not in skip:
            try:
                asyncio.run(phase_memory(r, bootstrap, work, prefixes))
            except Exception:
                r.errors.append("memory: " + traceback.format_exc())
                log(r.errors[-1])
        if external and not a.keep_topics and prefixes:
            try:
                n = asyncio.run(delete_topics(bootstrap, prefixes))
                log(f"deleted {n} bench topic(s) from {bootstrap}")
            except Exception as exc:
                log(f"could not delete the bench topics: {exc}")
    finally:
        if kafka is not None:
            kafka.close()
    if "inprocess" not in skip:
        run_inprocess(r, work)
    r.wall_s = time.monotonic() - t_start
    try:
        r.plots = plots(r, a.stem, out.parent)
    except Exception:
        r.errors.append("plots: " + traceback.format_exc())
        log(r.errors[-1])
    try:
        write_markdown(r, out)
    except Exception:  # keep the figures of a long run: dump the raw report next to the scratch files
        import pickle
        dump = work / "report.pickle"
        dump.write_bytes(pickle.dumps(r))
        log(f"writing {out} failed; raw report pickled to {dump}:\n{traceback.format_exc()}")
        return 1
    log(f"wrote {out}" + (f" and {', '.join(r.plots)}" if r.plots else ""))
    print(out.read_text().split("## Settings")[0])
    if r.errors:
        log(f"{len(r.errors)} error(s); worker logs and scratch kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
