"""Latency on a real broker: send requests offered at fixed rates to a running worker.

Method: setup events (sender profiles, inbounds, opt-ins) first; requests are 35 % replies
(consent only), 65 % sends to opted-in userkeys (consent + burst step), sent at t0 + i/rate (a late
loop sends everything due at once). Latency = arrival of the request's first decision at a
subscriber (no group, every partition, from the end) - request sent; in = decision produced (its
record timestamp, ms resolution) - request sent; out = arrival - decision produced; same host
clock. decided /s = decisions / (last arrival - first measured send): the worker's capacity when it
cannot keep up. Baseline, same rates and requests in the same run: a raw aiokafka echo process
(`python -m bench.latency echo`: no group, reads every partition, orjson decode + re-encode,
produce acks=all linger 0) between the same producer and the same kind of subscriber: what Kafka
and one Python hop cost on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.streams.config import Settings
from sendgate.streams.kafka import ensure_topics, partitions_of

from ._common import DAY, ROOT, Log, doc, labelled, load_corpus
from .throughput import declare_outputs, start_worker, stopping

PRODUCER = dict(acks="all", linger_ms=0)  # the request producer (aiokafka defaults otherwise)
SUBSCRIBER = dict(fetch_max_wait_ms=500, fetch_min_bytes=1)  # aiokafka defaults, stated


@dataclass
class LatencyResult:
    rate: int
    sent: int
    achieved_rate: float
    decided: int
    lat_ms: np.ndarray
    in_ms: np.ndarray
    out_ms: np.ndarray
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (s since start, latency ms)
    note: str = ""
    decided_rate: float = 0.0  # decisions / (last arrival - first measured send): the capacity when saturated

    def pct(self, arr: np.ndarray, q: float) -> float:
        return float(np.percentile(arr, q)) if len(arr) else float("nan")

    def summary(self) -> str:
        """p50 / p99 / max ms"""
        return f"{self.pct(self.lat_ms, 50):.1f} / {self.pct(self.lat_ms, 99):.1f} / {self.lat_ms.max():.1f}"


@dataclass
class Setup:
    texts: list[str]
    log: Log = field(default_factory=Log)  # the setup events
    replies: list[tuple[str, str, str, str]] = field(default_factory=list)  # (app, sender, userkey, inbound id)
    opted_in: list[tuple[str, str]] = field(default_factory=list)  # (app, userkey)
    senders: dict[str, list[str]] = field(default_factory=dict)


def make_setup(seed: int, quick: bool) -> Setup:
    rng = random.Random(seed)
    setup = Setup([t for t in labelled(load_corpus(), "ham") if t.strip()])
    n_apps, n_senders, n_inbound, n_opt = (50, 2, 5, 20) if quick else (50, 3, 20, 200)
    now, log = int(time.time() * 1000), setup.log
    for a in range(n_apps):
        app = f"lat-app-{a:03d}"
        setup.senders[app] = [f"sender-{j}" for j in range(n_senders)]
        for s in setup.senders[app]:
            log.emit("sender_profile", f"sp-{app}-{s}", app, sender=s, registered_ts=now - 400 * DAY)
            for u in range(n_inbound):
                uk, eid = f"+1555{a:03d}{u:04d}", f"in-{app}-{s}-{u}"
                log.emit("inbound", eid, app, sender=s, userkey=uk, text=rng.choice(setup.texts))
                setup.replies.append((app, s, uk, eid))
        for u in range(n_opt):
            log.emit("opt_in", f"oi-{app}-{u}", app, userkey=f"+1666{a:03d}{u:04d}", source="web form")
            setup.opted_in.append((app, f"+1666{a:03d}{u:04d}"))
    return setup


class Subscriber:
    """Reads every partition of the decisions topic from its end; notes each request's first decision."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.topic("decisions")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, **SUBSCRIBER)
        self.watch: dict[str, float] = {}  # request_id -> send time
        self.seen: dict[str, tuple[float, float]] = {}  # request_id -> (arrival, decision CreateTime s)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in await partitions_of(self.settings, self.topic, 120.0)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)  # resolve now: nothing produced from here on is missed
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            arrival = time.time()
            for messages in batch.values():
                for m in messages:
                    rid = orjson.loads(m.value)["request_id"]
                    if rid in self.watch and rid not in self.seen:
                        self.seen[rid] = (arrival, m.timestamp / 1000)

    async def wait_for(self, ids: list[str], timeout: float, alive=lambda: True) -> bool:
        deadline = time.monotonic() + timeout
        pending = [i for i in ids if i not in self.seen]
        while time.monotonic() < deadline and alive():
            pending = [i for i in pending if i not in self.seen]
            if not pending:
                return True
            if self._task is not None and self._task.done():
                self._task.result()  # raises what killed it
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


@contextlib.asynccontextmanager
async def clients(settings: Settings, topic: str | None = None):
    """The request producer and a Subscriber on `topic` (default: the decisions)."""
    sub = Subscriber(settings, topic)
    async with AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **PRODUCER) as producer:
        try:
            await sub.start()
            yield producer, sub
        finally:
            await sub.stop()


def _request(setup: Setup, rng: random.Random, rid: str) -> tuple[bytes, bytes]:
    if rng.random() < 0.35:
        app, sender, uk, eid = rng.choice(setup.replies)
        d = doc("send", rid, app, sender=sender, userkey=uk, text=rng.choice(setup.texts), reply_to=eid)
    else:
        app, uk = rng.choice(setup.opted_in)
        d = doc("send", rid, app, sender=rng.choice(setup.senders[app]), userkey=uk, text=rng.choice(setup.texts))
    return app.encode(), orjson.dumps(d)


async def offer(
    producer: AIOKafkaProducer,
    sub: Subscriber,
    setup: Setup,
    rng: random.Random,
    topic: str,
    rate: int,
    seconds: float,
    warmup_s: float,
    drain_s: float,
    tag: str,
    alive=lambda: True,
) -> LatencyResult:
    """Offer `rate` requests/s for warmup_s + seconds; wait for the decisions; compute the figures."""
    total, n_warm = int(rate * (warmup_s + seconds)), int(rate * warmup_s)
    ids = [f"{tag}-{i:07d}" for i in range(total)]
    signer = sub.settings.signing_key()  # the echo baseline moves the same signed records
    payloads = [
        (key, value, signer.headers(value) if signer else None)  # built and signed before the clock runs
        for key, value in (_request(setup, rng, rid) for rid in ids)
    ]
    sent_at: list[float] = [0.0] * total
    t0 = time.perf_counter()
    i = 0
    while i < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            key, value, headers = payloads[i]
            sub.watch[ids[i]] = sent_at[i] = time.time()
            await producer.send(topic, value=value, key=key, headers=headers)
            i += 1
        delay = t0 + i / rate - time.perf_counter()
        await asyncio.sleep(delay if delay > 0 else 0)
    measured = ids[n_warm:]
    ok = await sub.wait_for(measured, drain_s, alive)
    lat, lin, lout, timeline = [], [], [], []
    start = sent_at[n_warm]
    for rid, sent in zip(measured, sent_at[n_warm:]):
        if (got := sub.seen.get(rid)) is None:
            continue
        arrival, created = got
        lat.append((arrival - sent) * 1000)
        lin.append((created - sent) * 1000)
        lout.append((arrival - created) * 1000)
        timeline.append((sent - start, (arrival - sent) * 1000))
    span = sent_at[-1] - sent_at[n_warm]
    decided = len(lat)
    last_arrival = max((sub.seen[rid][0] for rid in measured if rid in sub.seen), default=start)
    note = "" if ok else f"{len(measured) - decided} decision(s) had not arrived {drain_s:.0f} s after the last send"
    return LatencyResult(
        rate,
        len(measured),
        (len(measured) - 1) / span if span > 0 else 0.0,
        decided,
        np.array(lat),
        np.array(lin),
        np.array(lout),
        timeline,
        note,
        decided / (last_arrival - start) if last_arrival > start else 0.0,
    )


async def offer_rates(
    producer,
    sub,
    setup: Setup,
    rng: random.Random,
    topic: str,
    rates: list[int],
    seconds: float,
    warmup_s: float,
    who: str,
    alive,
) -> list[LatencyResult]:
    results = []
    for rate in rates:
        drain = max(60.0, rate * (seconds + warmup_s) / 100)  # generous: a saturated worker drains slowly
        r = await offer(producer, sub, setup, rng, topic, rate, seconds, warmup_s, drain, f"{who}{rate}", alive)
        results.append(r)
        print(f"  {who} {rate:>5}/s: p50 / p99 / max ms {r.summary() if len(r.lat_ms) else 'none decided'}", flush=True)
        if not alive():
            raise RuntimeError(f"the {who} process exited")
    return results


@dataclass
class LatencyRun:
    results: list[LatencyResult]
    setup_events: int
    profile: Any = None  # (profile, LatencyResult) when a profiled window ran
    echo: list[LatencyResult] = field(default_factory=list)  # the raw aiokafka echo baseline, same rates


async def echo_main(bootstrap: str, in_topic: str, out_topic: str) -> None:
    """The baseline, in its own process: read every partition of `in_topic` from its end (no group),
    orjson decode + re-encode each value, produce it to `out_topic` (acks=all, linger 0, as Faust)."""
    partitions = await partitions_of(Settings(bootstrap=bootstrap), in_topic, 60.0)
    async with (
        AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False) as consumer,
        AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0) as producer,
    ):
        tps = [TopicPartition(in_topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    await producer.send(out_topic, value=orjson.dumps(orjson.loads(m.value)), key=m.key)


async def run_echo(
    settings: Settings, log_dir: Path, rates: list[int], seconds: float, warmup_s: float, seed: int, quick: bool
) -> list[LatencyResult]:
    """The same offered load through the echo process: requests to `<prefix>events`, the echo's
    output read from `<prefix>echo` by the same kind of subscriber."""
    rng, setup = random.Random(seed), make_setup(seed, quick)
    in_topic, out_topic = settings.topic("events"), settings.topic("echo")
    await ensure_topics(settings, [in_topic, out_topic])
    with open(log_dir / f"echo-{settings.group_id}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "echo", settings.bootstrap, in_topic, out_topic],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    try:
        async with clients(settings, out_topic) as (producer, sub):
            for i in range(60):  # until the echo process is reading (it starts from the end)
                rid = f"echo-probe-{i}"
                sub.watch[rid] = time.time()
                await producer.send(in_topic, key=b"probe", value=orjson.dumps({"request_id": rid}))
                if await sub.wait_for([rid], 1.0, lambda: proc.poll() is None):
                    break
            else:
                raise RuntimeError("the echo process did not answer in 60 s")
            return await offer_rates(
                producer, sub, setup, rng, in_topic, rates, seconds, warmup_s, "echo", lambda: proc.poll() is None
            )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run(
    settings: Settings,
    log_dir: Path,
    rates: list[int],
    seconds: float,
    warmup_s: float,
    seed: int,
    quick: bool,
    profile_hook=None,
) -> LatencyRun:
    """Start a worker, publish the setup, then offer each rate in turn (then the optional profiled
    window: `profile_hook(worker_pid)` returns an awaitable run while 1,000/s are offered)."""
    rng, setup, topic = random.Random(seed), make_setup(seed, quick), settings.topic("events")
    await declare_outputs(settings)
    out = LatencyRun([], len(setup.log.records))

    signer = settings.signing_key()

    def signed(value: bytes) -> list | None:
        return signer.headers(value) if signer else None

    async def probe(rid: str, app: str, userkey: str) -> None:
        sub.watch[rid] = time.time()
        value = orjson.dumps(doc("send", rid, app, sender=setup.senders[app][0], userkey=userkey, text="probe"))
        await producer.send(topic, key=app.encode(), value=value, headers=signed(value))

    async with clients(settings) as (producer, sub):
        await probe("probe-first", next(iter(setup.senders)), "+10000000000")  # decided first: the worker runs
        for key, value in setup.log.records:
            await producer.send(topic, value=value, key=key, headers=signed(value))
        for app in setup.senders:  # ready when one request per app, sent before it starts, is decided
            await probe(f"probe-{app}", app, setup.replies[0][2])
        await producer.flush()
        worker = await start_worker(
            settings,
            log_dir / f"worker-{settings.group_id}.log",
            lambda timeout: sub.wait_for(["probe-first"], timeout),
        )
        with stopping(worker):
            if not await sub.wait_for([f"probe-{app}" for app in setup.senders], 300.0, lambda: worker.running):
                raise RuntimeError(f"the latency worker did not decide the setup in 300 s:\n{worker.log_tail()}")
            out.results = await offer_rates(
                producer, sub, setup, rng, topic, rates, seconds, warmup_s, "lat", lambda: worker.running
            )
            if profile_hook is not None:
                profiled = asyncio.ensure_future(profile_hook(worker.process.pid))
                await asyncio.sleep(0.5)
                window = await offer(
                    producer, sub, setup, rng, topic, 1000, 10.0, 0.5, 300.0, "latprof", alive=lambda: worker.running
                )
                out.profile = (await profiled, window)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] != ["echo"] or len(sys.argv) != 5:
        sys.exit("usage: python -m bench.latency echo BOOTSTRAP IN_TOPIC OUT_TOPIC (run by bench/__main__.py)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(echo_main(*sys.argv[2:]))
