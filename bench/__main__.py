"""sendgate benchmarks on a real Kafka broker, plus the in-process ones.

    bench/run                 # full suite (10-20 min on 2 cores), writes bench/results/latest.md (+ PNGs)
    bench/run --quick         # smoke version for CI, writes $TMPDIR/sendgate-bench/quick.md (not the tracked results)
    SENDGATE_BOOTSTRAP=host:port bench/run ...   # use a running broker instead of starting one

Workloads (the method of each: throughput.py, latency.py, worker_memory.py):
  throughput  one worker process vs a raw aiokafka pass-through on the same generated log
  replay      `sendgate replay` over the same log, next to the live worker's events/s
  scale       two workers in one group against one, next to two pass-through consumers against one
  latency     fixed offered rates (1,000 and 3,000 requests/s): produce -> decision at a subscriber
  profile     py-spy samples of the worker (saturated, and at 1,000/s), when py-spy is installed
  memory      worker RSS holding 100k and 1M userkeys, changelog bytes, restarts and fail-over (one of two
              workers killed), RSS over a long run
  inprocess   bench.steps, bench.state_size, bench.detection (subprocesses)
  soak        bench.soak: two workers at a fixed open-loop rate, a fault every few minutes (its own broker,
              killed too), then the counts: 30 min into soak.md and soak.svg (quick: about 5 min, 3 faults);
              lost, conflicting, delivered-twice or replay-changed requests fail the run. Only it:
              bench/run --only soak
Benchmarks are not tests: a missed target is reported, not failed; a broken workload exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sendgate.streams.local.broker import KAFKA_VERSION, LocalKafka

from . import faust_anchor
from . import latency as lat
from . import pyspy
from . import scaling as sc
from . import soak
from . import throughput as tp
from . import worker_memory as mem
from ._common import ROOT, cli, fmt, md_table, out_path, write_report

INPROCESS = ("steps", "state_size", "detection")
BROKER_WORKLOADS = ("throughput", "replay", "scale", "latency", "profile", "memory")  # on the suite's broker
WORKLOADS = (*BROKER_WORKLOADS, "inprocess", "soak")
BROKER_KEYS = (
    "num.network.threads",
    "num.io.threads",
    "log.flush.interval.messages",
    "log.segment.bytes",
    "message.max.bytes",
    "compression.type",
    "group.initial.rebalance.delay.ms",
    "offsets.topic.num.partitions",
    "auto.create.topics.enable",
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fmt_s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def method(module) -> str:
    """The method a workload's docstring gives: the results file says how each figure is measured."""
    return module.__doc__.split("Method:", 1)[1].strip()


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


async def admin(bootstrap: str, use):
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    try:
        return await use(client)
    finally:
        await client.close()


async def broker_configs(client: AIOKafkaAdminClient) -> dict[str, str]:
    try:
        broker_id = str((await client.describe_cluster())["brokers"][0]["node_id"])
        resp = await client.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)])
        found = {e["config_names"]: e["config_value"] for e in resp[0].to_object()["resources"][0]["config_entries"]}
        return {k: str(found.get(k)) for k in BROKER_KEYS}
    except Exception as exc:  # informative only
        return {"error": f"{type(exc).__name__}: {exc}"}


async def delete_topics(client: AIOKafkaAdminClient, prefixes: list[str]) -> int:
    names = [t for t in await client.list_topics() if t.startswith(tuple(prefixes))]
    if names:
        await client.delete_topics(names)
    return len(names)


class Report:
    """What a run measured, for the results file."""

    def __init__(self, args, work: Path) -> None:
        self.args, self.work, self.bootstrap = args, work, ""
        self.prefixes: list[str] = []  # of the topics the run created
        self.broker, self.faust, self.worker = {}, {}, {}  # settings, as reported
        self.log = self.expected = self.tp_settings = self.worker_run = self.replay = self.latency = None
        self.profile_tp = self.long_run = None
        self.publish_s, self.wall_s = 0.0, 0.0
        self.passthrough, self.held, self.inprocess, self.errors, self.plots = [], [], [], [], []
        self.scaling: sc.Scaling | None = None
        self.anchors: list[tp.AnchorRun] = []  # do-nothing Faust agents over the throughput log
        self.inprocess_logs: list[tuple[str, tp.Log, tp.Expected]] = []  # the gate in-process on other logs
        self.soak: Path | None = None  # the soak's results file

    def settings(self, tag: str, **overrides):
        s = tp.bench_settings(self.bootstrap, self.work, tag, **overrides)
        self.prefixes.append(s.group_id)
        if not self.worker:  # the settings of the first workload's worker are the ones reported
            self.worker, self.faust = tp.worker_settings_table(s), tp.faust_settings(s)
            log(f"worker settings: {self.worker}\nFaust settings: {self.faust}")
        return s


# --- the phases ----------------------------------------------------------------------------------


async def phase_throughput(r: Report) -> None:
    a = r.args
    log(f"generating {a.events:,} events (seed {a.seed}) ...")
    r.log = tp.generate(a.events, a.seed)
    log(tp.describe(r.log))
    r.expected = tp.expected(r.log)
    log(f"in-process pass: {r.expected.decisions:,} decisions expected, {fmt(r.expected.rate)} events/s")
    settings = r.settings("tp")
    r.publish_s = await tp.publish_records(settings, r.log.records)
    log(f"published in {r.publish_s:.1f} s to {settings.topic('events')}")
    n = len(r.log.records)
    inprocess_checks(r)
    for label in ("A", "B"):
        if label == "B":
            await anchor(r, settings, "each")
            log("sendgate worker ...")
            w = r.worker_run = await tp.worker_pass(settings, r.work, r.expected.decisions, n)
            log(
                f"worker: {w.decisions.records:,} decisions in {w.decisions.seconds:.1f} s = "
                f"{fmt(w.decisions.rate)} decisions/s, {fmt(w.events_rate)} events/s, dead letters {w.deadletters}"
                + (f"; PROBLEM {w.problem}" if w.problem else "")
            )
            if w.problem:
                r.errors.append(f"throughput worker: {w.problem}")
            await anchor(r, settings, "take")
        log(f"pass-through {label} ...")
        res = await tp.passthrough(settings, label, n)
        r.passthrough.append(res)
        log(f"pass-through {label}: {res.records:,} records in {res.seconds:.1f} s = {fmt(res.rate)} records/s")
    r.tp_settings = settings


async def anchor(r: Report, settings, mode: str) -> None:
    log(f"do-nothing Faust agent ({mode}) ...")
    a = await tp.faust_anchor_pass(settings, r.work, mode, len(r.log.records))
    r.anchors.append(a)
    log(f"Faust agent {mode}: {a.echoes.records:,} echoes in {a.echoes.seconds:.1f} s = {fmt(a.echoes.rate)}/s")
    if a.problem:
        r.errors.append(f"Faust agent {mode}: {a.problem}")


def inprocess_checks(r: Report) -> None:
    """The gate in-process on other logs: the second mix (same size), and the 60,000-event log when
    the run's is bigger (cost per event must not grow with the state)."""
    a = r.args
    logs = [(f"{tp.MIXES['many-senders'].name} mix, {a.events:,} events", a.events, tp.MIXES["many-senders"])]
    if a.events > 60_000:
        logs.insert(0, ("bench mix, 60,000 events", 60_000, tp.MIXES["bench"]))
    for label, n, mix in logs:
        generated = tp.generate(n, a.seed, mix)
        e = tp.expected(generated)
        r.inprocess_logs.append((label, generated, e))
        log(f"in-process, {label}: {fmt(e.rate)} events/s")


async def phase_replay(r: Report) -> None:
    if r.tp_settings is not None:  # on the throughput log, next to the live worker
        log("replay ...")
        r.replay = await tp.replay_speed(r.tp_settings)
        rr = r.replay.result
        log(f"replay: {rr.events:,} events in {rr.seconds:.1f} s = {fmt(rr.rate)} events/s")


async def phase_scale(r: Report) -> None:
    if r.tp_settings is None or r.worker_run is None:
        return
    log("scaling: pass-through 1, 2, 1 process(es), then two workers ...")
    fresh = r.settings("scale")
    r.scaling = s = await sc.scaling(r.tp_settings, fresh, r.work, r.log, r.expected.decisions)
    log(
        "scaling: pass-through "
        + ", ".join(f"{fmt(x.rate)}/s" for x in (s.passthrough_one[0], s.passthrough_two, s.passthrough_one[1]))
        + (f"; two workers {fmt(s.workers_two.rate)} decisions/s" if s.workers_two else f"; PROBLEM {s.problem}")
    )
    if s.problem:
        r.errors.append(f"scale: {s.problem}")


async def phase_latency(r: Report) -> None:
    a = r.args
    log(f"latency at {a.rates} requests/s ...")
    settings = r.settings("lat", tick_interval_s=1.0)
    hook = None
    if "profile" not in a.skip and pyspy.pyspy():

        def hook(pid):
            return pyspy.record(pid, 10, a.outdir / f"{a.stem}-profile-1000rps.txt", "the worker at 1,000 requests/s")

    log("raw aiokafka echo baseline ...")
    echo = await lat.run_echo(r.settings("echo"), r.work, a.rates, a.latency_seconds, a.latency_warmup, a.seed, a.quick)
    log("sendgate worker ...")
    r.latency = await lat.run(settings, r.work, a.rates, a.latency_seconds, a.latency_warmup, a.seed, a.quick, hook)
    r.latency.echo = echo


async def phase_profile(r: Report) -> None:
    if r.log is None:
        return
    rate = r.worker_run.events_rate if r.worker_run and r.worker_run.events_rate else 1000.0
    seconds = 5.0 if r.args.quick else 20.0
    n = min(len(r.log.records), int(rate * (seconds + 15)))
    settings = r.settings("prof")
    await tp.publish_records(settings, r.log.records[:n])
    await tp.declare_outputs(settings)
    worker = await tp.start_worker(settings, r.work / f"worker-{settings.group_id}.log", tp.first_decision(settings))
    with tp.stopping(worker):
        log(f"py-spy on the worker (pid {worker.process.pid}) for {seconds:.0f} s ({n:,} events published) ...")
        r.profile_tp = await pyspy.record(
            worker.process.pid,
            seconds,
            r.args.outdir / f"{r.args.stem}-profile-saturated.txt",
            "the saturated worker (the throughput log, fresh prefix)",
        )


async def phase_memory(r: Report) -> None:
    a = r.args
    if not r.faust:  # the Faust settings in effect (standby replicas among them)
        r.faust = tp.faust_settings(tp.bench_settings(r.bootstrap, r.work, "mem"))
    for n in a.userkeys:
        log(f"worker memory holding {n:,} userkeys (rebuild, then a worker recovers them) ...")
        held = await mem.held_state(r.bootstrap, r.work, n, a.restarts)
        r.prefixes.append(held.group_id)
        r.held.append(held)
        log(f"  {held}")
        if held.problem:
            r.errors.append(f"memory {n:,} userkeys: {held.problem}")
    hours, senders = (6, 4) if a.quick else (96, 40)
    log(f"long run: {senders} senders, a blast each per hour over {hours} h of event time ...")
    r.long_run = await mem.long_run(r.bootstrap, r.work, hours, senders, a.seed)
    r.prefixes.append(r.long_run.group_id)
    if r.long_run.problem:
        r.errors.append(f"memory long run: {r.long_run.problem}")


def run_inprocess(r: Report) -> None:
    for name in INPROCESS:
        out = r.args.outdir / f"{name}{'.quick' if r.args.quick else ''}.md"
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if r.args.quick else []), "--out", str(out)]
        log(f"{' '.join(cmd[1:])} ...")
        started = time.monotonic()
        with open(r.work / f"inprocess-{name}.log", "wb") as fh:
            try:
                rc = subprocess.run(
                    cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=600 if r.args.quick else 3600
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0:
            tail = (r.work / f"inprocess-{name}.log").read_text(errors="replace")[-1500:]
            r.errors.append(f"bench.{name} exited {rc}:\n{tail}")
            text = f"failed (exit {rc}); output tail:\n\n```\n{tail}\n```"
        elif out.exists():
            shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
            text = f"(from `{shown}`, written by this run)\n\n" + out.read_text()
        else:
            text = f"exit 0, but it wrote no {out}"
        r.inprocess.append((name, rc, time.monotonic() - started, text))
        log(f"bench.{name}: exit {rc} in {r.inprocess[-1][2]:.0f} s")


def run_soak(r: Report) -> None:
    a = soak.defaults(soak.parser().parse_args(["--quick"] if r.args.quick else []))
    a.out = str(r.args.outdir / ("soak.quick.md" if r.args.quick else "soak.md"))
    a.prog = "bench/run"
    log(f"soak ({a.minutes:g} min at {a.rate:,}/s, a fault every {a.fault_every_s:g} s) -> {a.out} ...")
    r.soak, problems = soak.run(a)
    r.errors += [f"soak: {p} (see {r.soak})" for p in problems]


# --- the results ---------------------------------------------------------------------------------


def summary_rows(r: Report) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(*cells: str) -> None:  # figure, sendgate, baseline, ratio, target, verdict; missing ones empty
        rows.append([*cells, *[""] * (6 - len(cells))])

    pt = [p for p in r.passthrough if p.records]
    pt_rate = sum(p.rate for p in pt) / len(pt) if pt else 0.0
    w = r.worker_run
    pt_named = f"pass-through {fmt(pt_rate)} records/s (" + ", ".join(fmt(p.rate) for p in pt) + ")"

    def against(
        figure: str, rate: float, base: str, base_rate: float, target: float | None = None, at_most: bool = False
    ) -> None:
        ratio = rate / base_rate if base_rate else None
        met = None if ratio is None or target is None else ratio <= target if at_most else ratio >= target
        row(
            figure,
            fmt(rate),
            base,
            f"{ratio:.2f}" if ratio is not None else "",
            "" if target is None else f"{'<=' if at_most else '>='} {target:.2f}",
            verdict(met) if target is not None else "",
        )

    if r.expected is not None:
        against(
            "in-process gate: Gate.handle_record events/s (MemoryStore, no Kafka)",
            r.expected.rate,
            pt_named,
            pt_rate,
            1.0,
        )
    for label, g, e in r.inprocess_logs:
        if g.mix is tp.MIXES["bench"]:  # the run's log against a smaller one: cost per event must not grow
            against(
                f"in-process gate, {label}: events/s (ratio: µs per event on the run's log / on this one, "
                f"{1e6 / r.expected.rate:.1f} / {1e6 / e.rate:.1f})",
                e.rate,
                f"the run's log ({fmt(r.expected.events)} events): {fmt(r.expected.rate)} events/s",
                r.expected.rate,
                1.20,
                at_most=True,
            )
        else:
            against(
                f"in-process gate, {label}: events/s",
                e.rate,
                f"bench log {fmt(r.expected.rate)} events/s",
                r.expected.rate,
            )
    if w is not None:
        against("throughput: events/s (all types), one worker process", w.events_rate, pt_named, pt_rate, 0.40)
        if r.replay is not None:
            rr = r.replay.result.rate
            against(
                "throughput: worker events/s against `sendgate replay` on the same log",
                w.events_rate,
                f"replay {fmt(rr)} events/s",
                rr,
                0.90,
            )
        each = next((a for a in r.anchors if a.mode == "each" and a.echoes.records), None)
        if each is not None:
            against(
                "throughput: worker events/s against a do-nothing Faust agent",
                w.events_rate,
                f"Faust agent (`async for`) {fmt(each.echoes.rate)} events/s",
                each.echoes.rate,
                5.0,
            )
        row(
            "throughput: decisions/s, one worker process",
            fmt(w.decisions.rate),
            f"pass-through {fmt(pt_rate)} records/s",
            f"{w.decisions.rate / pt_rate:.2f}" if pt_rate else "",
        )
    if (s := r.scaling) is not None and s.workers_two is not None and w is not None:
        gain = s.workers_two.rate / w.decisions.rate if w.decisions.rate else 0.0
        ratio = gain / s.passthrough_gain if s.passthrough_gain else 0.0
        row(
            "scaling: decisions/s of two workers in one group / of one",
            f"{gain:.2f}x ({fmt(s.workers_two.rate)} / {fmt(w.decisions.rate)})",
            f"two pass-through processes / one: {s.passthrough_gain:.2f}x",
            f"{ratio:.2f}",
            ">= 0.80",
            verdict(ratio >= 0.80),
        )
    for a in r.anchors:
        against(f"do-nothing Faust agent ({a.mode}): events/s", a.echoes.rate, f"pass-through {fmt(pt_rate)}", pt_rate)
    if r.latency is not None:
        echo = {e.rate: e for e in r.latency.echo}
        for res in r.latency.results:
            if not len(res.lat_ms):
                row(f"latency at {res.rate:,}/s", "no decisions")
                continue
            e, target = echo.get(res.rate), res.rate == 1000
            row(
                f"latency at {res.rate:,}/s offered ({fmt(res.achieved_rate)}/s achieved): p50 / p99 / max ms",
                res.summary(),
                f"raw aiokafka echo {e.summary()}" if e is not None and len(e.lat_ms) else "",
                "",
                "p99 <= 25 ms" if target else "",
                verdict(res.pct(res.lat_ms, 99) <= 25.0) if target else "",
            )
    if r.replay is not None:
        against("replay: events/s of `sendgate replay` on the same log", r.replay.result.rate, pt_named, pt_rate)
    base = next((h for h in r.held if h.userkeys == 0), None)
    for h in r.held:
        if h.userkeys and base is not None:
            row(
                f"memory: worker RSS holding {h.userkeys:,} userkeys (MB; bytes per userkey)",
                f"{h.rss_mb:.0f}; {(h.rss_mb - base.rss_mb) * 2**20 / h.userkeys:,.0f} B",
                f"worker holding none: {base.rss_mb:.0f} MB; changelog {h.userkey_bytes / h.userkeys:.0f} B/userkey",
            )
    for h in r.held:  # issue 14's targets, at every N but the baseline
        if not h.userkeys:
            continue
        if h.disk_lost_s is not None:
            restored, took = h.restore or (0, 0.0)
            rate = restored / took if took else 0.0
            row(
                f"recovery: empty store (disk lost), {h.userkeys:,} userkeys, "
                f"{sum(v[0] for v in h.changelog.values()):,} rows: new process to the probe decided s; "
                "rows/s of the restore (its own log line)",
                f"{fmt_s(h.disk_lost_s)}; {fmt(rate)} ({restored:,} rows in {took:.1f} s)",
                f"Faust's own restore (before): {fmt_s(h.recovered_s)} s to the probe decided",
                f"{h.recovered_s / h.disk_lost_s:.1f}x" if h.disk_lost_s else "",
                "<= 60 s at 1M; >= 50,000 rows/s",
                verdict(rate >= 50_000 and (h.userkeys < 1_000_000 or h.disk_lost_s <= 60)) if h.restore else "n/a",
            )
        for label, took, limit in (("after kill -9", h.after_kill_s, 30.0), ("after SIGTERM", h.after_stop_s, 15.0)):
            if took is not None:
                row(
                    f"recovery: restart {label}, {h.userkeys:,} userkeys: new process to the probe decided s",
                    fmt_s(took),
                    "",
                    "",
                    f"<= {limit:g} s",
                    verdict(took <= limit),
                )
    for h in r.held:
        for f in h.failovers:
            row(
                f"fail-over: one of two workers killed, {h.userkeys:,} userkeys, session timeout "
                f"{f.session_timeout_s:g} s: kill to the survivor's first / last decision s",
                f"{fmt_s(f.first_s)} / {fmt_s(f.last_s)}"
                + ("" if f.decided == f.probe else f" ({f.decided:,} of {f.probe:,} decided)"),
                f"rebalance seen {fmt_s(f.marks.get('heartbeat: rebalancing'))} s after the kill; "
                f"{sum(f.restored.values()):,} changelog record(s) restored",
                "",
                "<= 30 s",
                verdict(f.last_s <= 30 and f.decided == f.probe if f.last_s is not None else None),
            )
    return rows


def settings_md(r: Report) -> str:
    return "\n\n".join(
        [
            "## Settings",
            "Broker: " + r.broker.get("_where", "?"),
            md_table(["broker config", "value"], [[k, v] for k, v in r.broker.items() if not k.startswith("_")]),
            "Worker (`sendgate worker` in a child process, `WorkerProcess`; as the integration tests run it):",
            md_table(["sendgate setting", "value"], list(r.worker.items())),
            "Faust settings in effect (read from the worker's `App.conf`; sendgate sets acks, guarantee, store and group "
            "timings, the rest are Faust defaults):",
            md_table(["Faust setting", "value"], list(r.faust.items())),
            "Clients: log publisher aiokafka acks=all, linger 20 ms, batch 256 KiB; pass-through consumer (group, manual "
            "commit) and producer acks=all, linger 0, batch 16 KiB (as Faust's producer); latency request producer "
            f"{lat.PRODUCER} (no Publisher validation on the hot path), subscriber {lat.SUBSCRIBER}, no group, every "
            "partition, from the end.",
        ]
    )


def throughput_md(r: Report) -> str:
    rows = [[p.label, fmt(p.records), f"{p.seconds:.1f}", fmt(p.rate), ""] for p in r.passthrough]
    rows += [
        [a.echoes.label, fmt(a.echoes.records), f"{a.echoes.seconds:.1f}", fmt(a.echoes.rate), a.problem or ""]
        for a in r.anchors
    ]
    if (w := r.worker_run) is not None:
        rows.append(
            [
                "sendgate worker: decisions",
                fmt(w.decisions.records),
                f"{w.decisions.seconds:.1f}",
                fmt(w.decisions.rate),
                f"events/s over the same span: {fmt(w.events_rate)}; dead letters "
                f"{w.deadletters}; worker start to last decision {w.wall_s:.1f} s"
                + (f"; PROBLEM: {w.problem}" if w.problem else ""),
            ]
        )
    parts = [
        "## Throughput",
        "Log: " + tp.describe(r.log) + f"\nPublished up front in {r.publish_s:.1f} s to one "
        "events topic of 8 partitions, keys = app.",
        f"Expected decisions (in-process pass over the same log) = {fmt(r.expected.decisions)} "
        f"({fmt(r.log.types['send'])} sends + releases and cancellations of paced requests); in-process pass took "
        f"{r.expected.seconds:.1f} s.",
        md_table(["run", "records", "span s (first to last)", "per second", "note"], rows),
        method(tp),
        method(faust_anchor),
        "Run order: pass-through A, Faust agent `each`, the worker, Faust agent `take`, pass-through B.",
    ]
    if r.inprocess_logs:
        parts += [
            "The gate in-process (`Gate.handle_record`, MemoryStore) on other logs, in this process "
            "right after the bench log's pass:",
            md_table(
                ["log", "events", "decisions", "s", "events/s", "µs/event"],
                [
                    [label, fmt(e.events), fmt(e.decisions), f"{e.seconds:.1f}", fmt(e.rate), f"{1e6 / e.rate:.1f}"]
                    for label, e in [("bench mix (the run's log)", r.expected)]
                    + [(label, e) for label, _, e in r.inprocess_logs]
                ],
            ),
            *(f"{label}: " + tp.describe(g) for label, g, _ in r.inprocess_logs),
        ]
    parts += [
        "Outcome counts (the live worker and replay must reproduce the in-process pass):",
    ]
    cols = [
        (n, c)
        for n, c in (
            ("in-process", r.expected.outcomes),
            ("live worker", w and w.outcomes),
            ("replay", r.replay and r.replay.outcomes),
        )
        if c is not None
    ]
    keys = sorted(set().union(*[set(c) for _, c in cols]), key=lambda k: -max(c.get(k, 0) for _, c in cols))
    rows = [[k] + [fmt(c.get(k, 0)) for _, c in cols] for k in keys]
    rows.append(["**total**"] + [fmt(sum(c.values())) for _, c in cols])
    same = all(c == cols[0][1] for _, c in cols)
    parts += [
        md_table(["outcome/reason"] + [n for n, _ in cols], rows),
        f"Identical outcome counts across {', '.join(n for n, _ in cols)}: **{'yes' if same else 'NO'}**",
    ]
    if r.replay is not None:
        rr = r.replay.result
        parts += [
            "## Replay",
            "`sendgate.streams.ops.replay.replay(settings, 'bench', policy)` (what `sendgate "
            f"replay --name bench` runs) over the same log: {fmt(rr.events)} events, {fmt(rr.decisions)} decisions, "
            f"{rr.deadlettered} invalid, {rr.seconds:.1f} s = **{fmt(rr.rate)} events/s** (includes reading the "
            f"log and producing the decisions to `{r.replay.topic}`, acks=all, linger 20 ms). "
            + (f"Live worker on the same log: {fmt(w.events_rate)} events/s." if w else ""),
        ]
    if (sc_ := r.scaling) is not None:
        runs = [*sc_.passthrough_one[:1], sc_.passthrough_two, *sc_.passthrough_one[1:]]
        runs += [sc_.workers_two] if sc_.workers_two is not None else []
        parts += [
            "## Scaling",
            method(sc),
            md_table(
                ["run", "records", "span s", "per second"],
                [[x.label, fmt(x.records), f"{x.seconds:.1f}", fmt(x.rate)] for x in runs],
            ),
        ]
        if sc_.problem:
            parts.append(f"Two workers: **{sc_.problem}**")
    return "\n\n".join(parts)


def latency_md(r: Report) -> str:
    a, rows = r.args, []
    for who, res in [("sendgate worker", x) for x in r.latency.results] + [
        ("raw aiokafka echo", x) for x in r.latency.echo
    ]:
        if not len(res.lat_ms):
            rows.append([who, f"{res.rate:,}", fmt(res.sent)] + [""] * 10 + [res.note])
            continue
        q = res.pct
        rows.append(
            [
                who,
                f"{res.rate:,}",
                fmt(res.sent),
                fmt(res.achieved_rate),
                fmt(res.decided),
                fmt(res.decided_rate),
                *(f"{q(res.lat_ms, p):.1f}" for p in (50, 90, 99, 99.9)),
                f"{res.lat_ms.max():.1f}",
                f"{q(res.in_ms, 50):.1f} / {q(res.in_ms, 99):.1f}",
                f"{q(res.out_ms, 50):.1f} / {q(res.out_ms, 99):.1f}",
                res.note,
            ]
        )
    parts = [
        "## Latency",
        f"One worker (same settings, but the wall-clock ticker on at 1 s as in production) on a fresh prefix; "
        f"{r.latency.setup_events:,} setup events. Each rate: {a.latency_warmup:g} s warm-up (not counted) + "
        f"{a.latency_seconds:g} s measured. " + method(lat),
        md_table(
            [
                "path",
                "offered /s",
                "requests",
                "achieved /s",
                "decided",
                "decided /s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "in p50 / p99 ms",
                "out p50 / p99 ms",
                "note",
            ],
            rows,
        ),
    ]
    if r.latency.profile is not None and len((res := r.latency.profile[1]).lat_ms):
        parts.append(
            f"Profiled window (1,000/s for 10 s with py-spy attached, not part of the figures above): "
            f"p50 {res.pct(res.lat_ms, 50):.1f} ms, p99 {res.pct(res.lat_ms, 99):.1f} ms."
        )
    return "\n\n".join(parts)


def memory_md(r: Report) -> str:
    parts = ["## Memory", method(mem)]
    base = next((h for h in r.held if h.userkeys == 0), None)
    rows = [
        [
            fmt(h.userkeys),
            f"{h.rss_mb:.1f}",
            f"{(h.rss_mb - base.rss_mb) * 2**20 / h.userkeys:,.0f}" if base is not None and h.userkeys else "",
            f"{h.userkey_bytes / h.userkeys:.0f}" if h.userkeys else "",
            ", ".join(f"{k} {v[0]:,} rows / {v[1]:,} B" for k, v in sorted(h.changelog.items())),
            f"{h.store_bytes / 2**20:.1f}",
            f"{h.rebuild_s:.0f}",
            f"{h.recovered_s:.1f}",
            fmt_s(h.disk_lost_s),
            fmt_s(h.after_kill_s),
            fmt_s(h.after_stop_s),
        ]
        for h in r.held
    ]
    parts.append(
        md_table(
            [
                "userkeys",
                "worker RSS MB",
                "RSS bytes/userkey (vs 0)",
                "changelog bytes/userkey",
                "state changelog (last value per key)",
                "RocksDB dir MB",
                "rebuild s",
                "empty store, Faust's restore (before): start to probe decided s",
                "empty store, streams/worker/restore.py: start to probe decided s",
                "after kill -9: restart to probe decided s",
                "after SIGTERM: restart to probe decided s",
            ],
            rows,
        )
    )
    if failovers := [(h, f) for h in r.held for f in h.failovers]:
        rows = [
            [
                fmt(h.userkeys),
                f"{f.session_timeout_s:g}",
                ", ".join(map(str, f.moved)),
                fmt(f.probe) if f.decided == f.probe else f"**{fmt(f.decided)} of {fmt(f.probe)}** (lag {f.lag})",
                fmt_s(f.first_s),
                fmt_s(f.last_s),
                *(fmt_s(f.marks.get(m)) for m in mem.FAILOVER_MARKS),
                "yes"
                if set(f.moved) <= set(f.standbys)
                else f"no ({', '.join(map(str, sorted(f.standbys)))})"
                if f.standbys
                else "no (none)",
                fmt(sum(f.written.values())) if f.written else "",
                fmt(sum(f.restored.values())),
                fmt(f.reread),
            ]
            for h, f in failovers
        ]
        parts += [
            "Fail-over (one of two workers killed; s after the kill):",
            md_table(
                [
                    "userkeys",
                    "session timeout s",
                    "killed worker's partitions",
                    "probe decisions",
                    "first decision",
                    "last decision",
                    *(f"survivor: {m}" for m in mem.FAILOVER_MARKS),
                    "survivor held them as standbys",
                    "changelog records written to them since its standby offsets",
                    "changelog records it restored after the kill",
                    "events it read again (its stream skipped them)",
                ],
                rows,
            ),
            "The survivor learns of the death at its first heartbeat after the coordinator's session timeout "
            "(counted from the dead worker's last heartbeat), so `heartbeat: rebalancing` is the session "
            "timeout give or take one heartbeat interval (3 s); rejoin, assignment and recovery follow. The "
            "workers' group timings are those of the fail-over round (the Faust settings table above is that "
            "of the other workers); standby replicas are Faust's `table_standby_replicas`.",
        ]
    if (lr := r.long_run) is not None and lr.samples:
        rss = [x[2] for x in lr.samples]
        done = [x for x in lr.samples if x[1] >= lr.decisions / 2]
        second_half = (max(rss[-len(done) :]) - done[0][2]) if done else 0.0
        clusters, sizes = sorted(c for c, _ in lr.sender_rows), [b for _, b in lr.sender_rows]
        parts.append(
            f"Long run: {lr.log.senders} senders in 4 apps, {len(lr.log.records):,} events "
            f"({', '.join(f'{t} {c:,}' for t, c in lr.log.types.most_common())}) over {lr.log.event_hours:g} h "
            f"of event time; {lr.decisions:,} decisions. Worker RSS: {rss[0]:.1f} MB at the first decision, "
            f"{max(rss):.1f} MB at most, {rss[-1]:.1f} MB at the end; change over the second half of the "
            f"decisions {second_half:+.1f} MB. Senders at the end (changelog): {len(sizes)} holding "
            f"{clusters[0] if clusters else 0}-{clusters[-1] if clusters else 0} clusters, "
            f"{sum(sizes) / len(sizes) if sizes else 0:,.0f} B a sender (its head, cluster and sketch rows) "
            f"on average. Plot: `{r.args.stem}-memory.png`."
        )
    return "\n\n".join(parts)


def write_markdown(r: Report, path: Path) -> str:
    sections = [
        "## Summary",
        md_table(["figure", "sendgate", "baseline (same run)", "ratio", "target", ""], summary_rows(r)),
    ]
    if r.errors:
        sections += ["## Errors"] + [f"```\n{e}\n```" for e in r.errors]
    if tp.STARTS:
        sections.append(
            "Worker restarts needed at start-up (a worker that had not joined and recovered in 45 s was "
            "stopped and started again; it had processed nothing): " + "; ".join(tp.STARTS)
        )
    sections.append(settings_md(r))
    if r.log is not None:
        sections.append(throughput_md(r))
    if r.latency is not None:
        sections.append(latency_md(r))
    if r.held or r.long_run is not None:
        sections.append(memory_md(r))
    sections += [
        "## Where the worker's time goes",
        "### Saturated (the throughput log, fresh prefix, py-spy attached)",
        pyspy.profile_md(r.profile_tp),
    ]
    if r.latency is not None and r.latency.profile is not None:
        sections += ["### At 1,000 requests/s", pyspy.profile_md(r.latency.profile[0])]
    if r.plots:
        sections += ["## Plots"] + [f"![{p}]({p})" for p in r.plots]
    if r.soak is not None:
        sections += ["## Fault soak", f"Counts, per-fault recovery and RSS: `{r.soak.name}` (written by this run)."]
    if r.inprocess:
        sections.append("## In-process benchmarks")
        for name, rc, secs, text in r.inprocess:
            sections += [f"### bench.{name} (exit {rc}, {secs:.0f} s)", re.sub(r"^(#+)", r"\1##", text, flags=re.M)]
    return write_report(
        path,
        "sendgate benchmarks: broker workloads" + (" (quick smoke run)" if r.args.quick else ""),
        "bench/run",
        [
            f"wall time {r.wall_s / 60:.1f} min; Apache Kafka {KAFKA_VERSION}",
            "a shared machine: the broker, the worker, the bench process and other jobs compete for "
            "the same cores, so absolute figures are noisy; the side-by-side ratios are the "
            "figures to compare",
        ],
        sections,
        bootstrap=True,
        echo=False,
    )


def plots(r: Report, stem: str, where: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return []
    made = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(where / f"{stem}-{name}.png", dpi=110)
        plt.close(fig)
        made.append(f"{stem}-{name}.png")

    def cdf(ax, values, style: str, color: str, label: str) -> None:
        xs = sorted(values)
        ax.plot(xs, [100 * (i + 1) / len(xs) for i in range(len(xs))], style, color=color, label=label)

    if r.worker_run is not None or r.passthrough:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for p in r.passthrough:
            if p.per_second:
                ax.plot(range(len(p.per_second)), p.per_second, "o-", ms=3, label=f"{p.label} (records/s)", alpha=0.8)
        if r.worker_run is not None and (s := r.worker_run.decisions.per_second):
            ax.plot(
                range(len(s)),
                s,
                "o-" if len(s) < 30 else "-",
                ms=3,
                label="sendgate worker (decisions/s)",
                color="black",
            )
        ax.set(
            xlabel="seconds since the first output record",
            ylabel="records per second (1 s bins)",
            yscale="log",
            title="Throughput over time, same events topic",
        )
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        save(fig, "throughput")
    if r.latency is not None and any(len(x.lat_ms) for x in r.latency.results):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for k, res in enumerate(r.latency.results):
            if len(res.lat_ms):
                cdf(axes[0], res.lat_ms, "-", f"C{k}", f"{res.rate:,}/s")
                bins = defaultdict(list)
                for t, ms in res.timeline:
                    bins[int(t)].append(ms)
                for q, style in ((99, "-"), (50, "--")):
                    axes[1].plot(
                        sorted(bins),
                        [np.percentile(bins[t], q) for t in sorted(bins)],
                        style,
                        color=f"C{k}",
                        label=f"{res.rate:,}/s p{q}",
                    )
        for k, res in enumerate(r.latency.echo):
            if len(res.lat_ms):
                cdf(axes[0], res.lat_ms, ":", f"C{k}", f"raw aiokafka echo {res.rate:,}/s")
        axes[0].axvline(25, color="red", lw=0.8, label="25 ms target")
        axes[0].set(xscale="log", xlabel="latency ms (log)", ylabel="% of requests at or below")
        axes[1].set(yscale="log", xlabel="seconds into the measured window", ylabel="latency ms per 1 s bin (log)")
        for ax, size in zip(axes, (None, 8)):
            ax.legend(fontsize=size)
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle("Send request produce -> decision at a subscriber")
        save(fig, "latency")
    if (lr := r.long_run) is not None and lr.samples:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot([x[1] for x in lr.samples], [x[2] for x in lr.samples], "-", color="black")
        ax.set(
            xlabel=f"decisions made (of {lr.decisions:,}; {lr.log.event_hours:g} h of event time, clusters expire "
            "after 24 h idle)",
            ylabel="worker VmRSS MB",
            title="Worker memory over a long run with cluster expiry",
            ylim=(0, None),
        )
        ax.grid(True, alpha=0.3)
        save(fig, "memory")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = cli(__doc__, "seconds-long smoke version (CI)", "latest", "quick.md")
    ap.add_argument("--events", type=int, help="events in the throughput/replay log (default 200,000; quick 5,000)")
    ap.add_argument(
        "--rates",
        help="offered request rates per second (default 100,1000,3000: 100/s shows the "
        "latency without queueing; quick 1000,3000)",
    )
    ap.add_argument("--latency-seconds", type=float, help="measured seconds per rate (default 20; quick 3)")
    ap.add_argument("--userkeys", help="userkeys held in the memory workload (default 0,100000,1000000; quick 0,10000)")
    ap.add_argument(
        "--no-restarts",
        dest="restarts",
        action="store_false",
        help="memory workload: time only the first start, not the disk-lost, kill -9 and SIGTERM restarts "
        "nor the fail-over",
    )
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--skip", default="", help=f"comma list of: {', '.join(WORKLOADS)}")
    ap.add_argument("--only", default="", help="comma list of the workloads to run (the others skipped)")
    ap.add_argument("--profile", action="store_true", help="profile with py-spy also in --quick")
    a = ap.parse_args(argv)
    a.events = a.events or (5_000 if a.quick else 200_000)
    a.latency_seconds = a.latency_seconds or (3.0 if a.quick else 20.0)
    a.latency_warmup = 0.5 if a.quick else 2.0
    a.rates = [int(x) for x in (a.rates or ("1000,3000" if a.quick else "100,1000,3000")).split(",") if x.strip()]
    a.userkeys = [
        int(x) for x in (a.userkeys or ("0,10000" if a.quick else "0,100000,1000000")).split(",") if x.strip()
    ]
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if only := {s.strip() for s in a.only.split(",") if s.strip()}:
        if unknown := only - set(WORKLOADS):
            ap.error(f"--only: unknown workload(s) {', '.join(sorted(unknown))}")
        a.skip |= set(WORKLOADS) - only
    if unknown := a.skip - set(WORKLOADS):
        ap.error(f"--skip: unknown workload(s) {', '.join(sorted(unknown))}")
    if a.quick and not a.profile:
        a.skip.add("profile")
    out = out_path(a.out, a.quick, "latest", "quick.md")
    a.stem, a.outdir = out.stem, out.parent
    a.outdir.mkdir(parents=True, exist_ok=True)

    r = Report(a, Path(tempfile.mkdtemp(prefix="sendgate-bench-")))
    t_start = time.monotonic()
    log(f"work dir {r.work}; results -> {out}")
    external = os.environ.get("SENDGATE_BOOTSTRAP")
    on_broker = set(BROKER_WORKLOADS) - a.skip
    if on_broker and not external:
        log(f"starting a local Kafka {KAFKA_VERSION} broker ...")
    with contextlib.nullcontext() if external or not on_broker else LocalKafka() as kafka:
        r.bootstrap = external or (kafka.bootstrap if kafka else "")
        r.broker["_where"] = (
            ""
            if not on_broker
            else (
                f"external, SENDGATE_BOOTSTRAP={external} (its own settings; shared with whatever else uses it)"
                if external
                else f"started by the bench: `sendgate.streams.local.broker.LocalKafka`, Apache Kafka "
                f"{KAFKA_VERSION}, one KRaft broker+controller on {r.bootstrap}, -Xmx{kafka.heap}, "
                "G1GC, data in a temporary directory, replication 1"
            )
        )
        if on_broker:
            r.broker.update(asyncio.run(admin(r.bootstrap, broker_configs)))
        if on_broker:
            log(f"broker {r.bootstrap}: {r.broker}")
        for name, phase in (
            ("throughput", phase_throughput),
            ("replay", phase_replay),
            ("scale", phase_scale),
            ("latency", phase_latency),
            ("profile", phase_profile),
            ("memory", phase_memory),
        ):
            if name not in a.skip:
                try:
                    asyncio.run(phase(r))
                except Exception:
                    r.errors.append(f"{name}: " + traceback.format_exc())
                    log(r.errors[-1])
        if external and r.prefixes:
            try:
                log(f"deleted {asyncio.run(admin(r.bootstrap, lambda c: delete_topics(c, r.prefixes)))} bench topic(s)")
            except Exception as exc:
                log(f"could not delete the bench topics: {exc}")
    if "inprocess" not in a.skip:
        run_inprocess(r)
    if "soak" not in a.skip:
        try:
            run_soak(r)
        except Exception:
            r.errors.append("soak: " + traceback.format_exc())
            log(r.errors[-1])
    r.wall_s = time.monotonic() - t_start
    if a.skip >= set(WORKLOADS) - {"soak"}:  # the soak alone wrote its own results: the suite's stay as they are
        for e in r.errors:
            log(e)
        return 1 if r.errors else 0
    try:
        r.plots = plots(r, a.stem, a.outdir)
    except Exception:
        r.errors.append("plots: " + traceback.format_exc())
        log(r.errors[-1])
    try:
        print(write_markdown(r, out).split("## Settings")[0])
    except Exception:  # keep the figures of a long run: dump the raw report next to the scratch files
        import pickle

        (r.work / "report.pickle").write_bytes(pickle.dumps(r))
        log(f"writing {out} failed; raw report pickled to {r.work / 'report.pickle'}:\n{traceback.format_exc()}")
        return 1
    if r.errors:
        log(f"{len(r.errors)} error(s); worker logs and scratch kept in {r.work}")
        return 1
    shutil.rmtree(r.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
