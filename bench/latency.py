"""Latency on a real broker: send requests offered at a fixed rate to a running worker.

latency = the arrival of a request's first decision at a subscriber - the time the bench called
`producer.send` for the request. Both clocks are this process's `time.time()`. The decision's
record timestamp (the worker's produce time, CreateTime, ms) splits it into
  in  = decision produced - request sent   (producer, broker, worker fetch, Faust, the gate)
  out = decision arrived  - decision produced (worker producer, broker acks, subscriber fetch).

Setup (published before the measured windows, event time = record time): every app's senders
get a sender_profile (registered long ago), some userkeys write an inbound, more opt in. The
offered requests are 35 % replies naming one of those inbounds (consent, no burst step) and 65 %
sends to opted-in userkeys with corpus texts (consent and the burst step: MinHash and clusters).
Requests are scheduled at t0 + i/rate; a late loop sends everything due at once, so the offered
rate holds on average. Warm-up requests (the first `warmup_s`) are not counted.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.streams.kafka import partitions_of
from sendgate.streams.config import Settings
from ._common import load_corpus
from .throughput import declare_outputs, start_worker

DAY = 86_400_000

PRODUCER = dict(acks="all", linger_ms=0)  # the request producer (aiokafka defaults otherwise)
SUBSCRIBER = dict(fetch_max_wait_ms=500, fetch_min_bytes=1)  # aiokafka defaults, stated


@dataclass
class LatencyResult:
    rate: int
    seconds: float
    sent: int
    achieved_rate: float
    decided: int
    missing: int
    lat_ms: np.ndarray
    in_ms: np.ndarray
    out_ms: np.ndarray
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (s since start, latency ms)
    note: str = ""
    decided_rate: float = 0.0  # decisions / (last arrival - first measured send): the capacity when saturated

    def pct(self, arr: np.ndarray, q: float) -> float:
        return float(np.percentile(arr, q)) if len(arr) else float("nan")


@dataclass
class Setup:
    replies: list[tuple[str, str, str, str]]  # (app, sender, userkey, inbound event_id)
    opted_in: list[tuple[str, str]]  # (app, userkey)
    senders: dict[str, list[str]]
    texts: list[str]


def make_setup(seed: int, quick: bool) -> tuple[Setup, list[tuple[bytes, bytes]]]:
    rng = random.Random(seed)
    ham = [t for label, t in load_corpus() if label == "ham" and t.strip()]
    n_apps, n_senders, n_inbound, n_opt = (50, 2, 5, 20) if quick else (50, 3, 20, 200)
    now = int(time.time() * 1000)
    records: list[tuple[bytes, bytes]] = []
    replies, opted_in, senders = [], [], {}
    for a in range(n_apps):
        app = f"lat-app-{a:03d}"
        senders[app] = [f"sender-{j}" for j in range(n_senders)]
        for s in senders[app]:
            records.append((app.encode(), orjson.dumps({"type": "sender_profile", "event_id": f"sp-{app}-{s}",
                                                        "app": app, "sender": s,
                                                        "registered_ts": now - 400 * DAY})))
            for u in range(n_inbound):
                uk, eid = f"+1555{a:03d}{u:04d}", f"in-{app}-{s}-{u}"
                records.append((app.encode(), orjson.dumps({"type": "inbound", "event_id": eid, "app": app,
                                                            "sender": s, "userkey": uk, "network": "sms",
                                                            "text": rng.choice(ham)})))
                replies.append((app, s, uk, eid))
        for u in range(n_opt):
            uk = f"+1666{a:03d}{u:04d}"
            records.append((app.encode(), orjson.dumps({"type": "opt_in", "event_id": f"oi-{app}-{u}", "app": app,
                                                        "userkey": uk, "source": "web form"})))
            opted_in.append((app, uk))
    return Setup(replies, opted_in, senders, ham), records


class Subscriber:
    """Reads every partition of the decisions topic from its end; notes each request's first decision."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.topic("decisions")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                         **SUBSCRIBER)
        self.watch: dict[str, float] = {}  # request_id -> send time
        self.seen: dict[str, tuple[float, float]] = {}  # request_id -> (arrival, decision CreateTime s)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = await partitions_of(self.settings, self.topic, 120.0)
        tps = [TopicPartition(self.topic, p) for p in partitions]
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
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()


def _request(setup: Setup, rng: random.Random, rid: str) -> tuple[bytes, bytes]:
    if rng.random() < 0.35:
        app, sender, uk, eid = rng.choice(setup.replies)
        doc: dict[str, Any] = {"type": "send", "request_id": rid, "app": app, "sender": sender, "userkey": uk,
                               "network": "sms", "text": rng.choice(setup.texts), "reply_to": eid}
    else:
        app, uk = rng.choice(setup.opted_in)
        doc = {"type": "send", "request_id": rid, "app": app, "sender": rng.choice(setup.senders[app]),
               "userkey": uk, "network": "sms", "text": rng.choice(setup.texts)}
    return app.encode(), orjson.dumps(doc)


async def offer(producer: AIOKafkaProducer, sub: Subscriber, setup: Setup, rng: random.Random, topic: str,
                rate: int, seconds: float, warmup_s: float, drain_s: float, tag: str,
                alive=lambda: True) -> LatencyResult:
    """Offer `rate` requests/s for warmup_s + seconds; wait for the decisions; compute the figures."""
    total = int(rate * (warmup_s + seconds))
    n_warm = int(rate * warmup_s)
    payloads = [_request(setup, rng, f"{tag}-{i:07d}") for i in range(total)]  # built before the clock runs
    ids = [f"{tag}-{i:07d}" for i in range(total)]
    sent_at: list[float] = [0.0] * total
    t0 = time.perf_counter()
    i = 0
    while i < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            key, value = payloads[i]
            now = time.time()
            sub.watch[ids[i]] = now
            sent_at[i] = now
            await producer.send(topic, value=value, key=key)
            i += 1
        next_at = t0 + i / rate
        delay = next_at - time.perf_counter()
        await asyncio.sleep(delay if delay > 0 else 0)
    measured = ids[n_warm:]
    ok = await sub.wait_for(measured, drain_s, alive)
    lat, lin, lout, timeline = [], [], [], []
    start = sent_at[n_warm]
    for rid, sent in zip(measured, sent_at[n_warm:]):
        got = sub.seen.get(rid)
        if got is None:
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
    return LatencyResult(rate, seconds, len(measured), (len(measured) - 1) / span if span > 0 else 0.0, decided,
                         len(measured) - decided, np.array(lat), np.array(lin), np.array(lout), timeline, note,
                         decided / (last_arrival - start) if last_arrival > start else 0.0)


@dataclass
class LatencyRun:
    results: list[LatencyResult]
    setup_events: int
    worker_log: Path
    profile: Any = None  # filled by the caller when a profiled window ran
    echo: list[LatencyResult] = field(default_factory=list)  # the raw aiokafka echo baseline, same rates


# --- the baseline: a raw aiokafka echo process ---------------------------------------------------


async def echo_main(bootstrap: str, in_topic: str, out_topic: str) -> None:
    """The latency baseline, in its own process: read every partition of `in_topic` from its end
    (no group), orjson decode + re-encode each value, produce it to `out_topic` (acks=all, linger
    0, as Faust's producer). What Kafka and one Python hop cost, without Faust and the gate."""
    settings = Settings(bootstrap=bootstrap)
    partitions = await partitions_of(settings, in_topic, 60.0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(in_topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    await producer.send(out_topic, value=orjson.dumps(orjson.loads(m.value)), key=m.key)
    finally:
        await producer.stop()
        await consumer.stop()


async def run_echo(settings: Settings, log_dir: Path, rates: list[int], seconds: float, warmup_s: float, seed: int,
                   quick: bool) -> list[LatencyResult]:
    """The same offered load through the echo process: requests to `<prefix>events`, the echo's
    output read from `<prefix>echo` by the same kind of subscriber."""
    import subprocess
    import sys

    from sendgate.streams.kafka import ensure_topics

    rng = random.Random(seed)
    setup, _ = make_setup(seed, quick)
    in_topic, out_topic = settings.topic("events"), settings.topic("echo")
    await ensure_topics(settings, [in_topic, out_topic])
    with open(log_dir / f"echo-{settings.group_id}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.latency", "echo", settings.bootstrap, in_topic, out_topic],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=Path(__file__).parents[1])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **PRODUCER)
    sub = Subscriber(settings, out_topic)
    results: list[LatencyResult] = []
    try:
        await producer.start()
        await sub.start()
        ok = False
        for i in range(60):  # until the echo process is reading (it starts from the end)
            rid = f"echo-probe-{i}"
            sub.watch[rid] = time.time()
            await producer.send(in_topic, key=b"probe", value=orjson.dumps({"request_id": rid}))
            if await sub.wait_for([rid], 1.0, lambda: proc.poll() is None):
                ok = True
                break
        if not ok:
            raise RuntimeError("the echo process did not answer in 60 s")
        for rate in rates:
            drain = max(60.0, rate * (seconds + warmup_s) / 100)
            results.append(await offer(producer, sub, setup, rng, in_topic, rate, seconds, warmup_s, drain,
                                       f"echo{rate}", alive=lambda: proc.poll() is None))
            r = results[-1]
            print(f"  echo {rate:>5}/s: p50 {r.pct(r.lat_ms, 50):.1f} ms, p99 {r.pct(r.lat_ms, 99):.1f} ms"
                  if len(r.lat_ms) else f"  echo {rate}/s: no answers", flush=True)
    finally:
        await sub.stop()
        await producer.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return results


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 5 and sys.argv[1] == "echo":
        try:
            asyncio.run(echo_main(*sys.argv[2:]))
        except KeyboardInterrupt:
            pass
    else:
        sys.exit("usage: python -m bench.latency echo BOOTSTRAP IN_TOPIC OUT_TOPIC (run by bench/__main__.py)")


async def run(settings: Settings, log_dir: Path, rates: list[int], seconds: float, warmup_s: float, seed: int,
              quick: bool, profile_hook=None) -> LatencyRun:
    """Start a worker, publish the setup, then offer each rate in turn (then the optional profiled
    window: `profile_hook(worker_pid)` returns an awaitable run while 1,000/s are offered)."""
    rng = random.Random(seed)
    setup, setup_records = make_setup(seed, quick)
    topic = settings.topic("events")
    await declare_outputs(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **PRODUCER)
    sub = Subscriber(settings)
    results: list[LatencyResult] = []
    profile = None
    worker = None
    try:
        await producer.start()
        await sub.start()
        first_app = next(iter(setup.senders))
        sub.watch["probe-first"] = time.time()  # decided first: tells that the worker runs
        await producer.send(topic, key=first_app.encode(), value=orjson.dumps(
            {"type": "send", "request_id": "probe-first", "app": first_app, "sender": setup.senders[first_app][0],
             "userkey": "+10000000000", "network": "sms", "text": "probe"}))
        for key, value in setup_records:
            await producer.send(topic, value=value, key=key)
        # the worker is ready when one request per app has its decision (sent before it starts)
        probes = []
        for app in setup.senders:
            rid = f"probe-{app}"
            sub.watch[rid] = time.time()
            probes.append(rid)
            await producer.send(topic, key=app.encode(), value=orjson.dumps(
                {"type": "send", "request_id": rid, "app": app, "sender": setup.senders[app][0],
                 "userkey": setup.replies[0][2], "network": "sms", "text": "probe"}))
        await producer.flush()
        worker = await start_worker(settings, log_dir / f"worker-{settings.group_id}.log",
                                    lambda timeout: sub.wait_for(["probe-first"], timeout))
        if not await sub.wait_for(probes, 300.0, lambda: worker.running):
            raise RuntimeError(f"the latency worker did not decide the setup in 300 s:\n{worker.log_tail()}")
        for rate in rates:
            drain = max(60.0, rate * (seconds + warmup_s) / 100)  # generous: a saturated worker drains slowly
            results.append(await offer(producer, sub, setup, rng, topic, rate, seconds, warmup_s, drain,
                                       f"lat{rate}", alive=lambda: worker.running))
            print(f"  {rate:>5}/s: p50 {results[-1].pct(results[-1].lat_ms, 50):.1f} ms, "
                  f"p99 {results[-1].pct(results[-1].lat_ms, 99):.1f} ms, max {results[-1].lat_ms.max():.1f} ms"
                  if len(results[-1].lat_ms) else f"  {rate}/s: no decisions", flush=True)
            if not worker.running:
                raise RuntimeError(f"the latency worker exited:\n{worker.log_tail()}")
        if profile_hook is not None and worker.process is not None:
            profiled = asyncio.ensure_future(profile_hook(worker.process.pid))
            await asyncio.sleep(0.5)
            prof_result = await offer(producer, sub, setup, rng, topic, 1000, 10.0, 0.5, 300.0, "latprof",
                                      alive=lambda: worker.running)
            profile = (await profiled, prof_result)
    finally:
        await sub.stop()
        await producer.stop()
        if worker is not None:
            worker.stop()
    out = LatencyRun(results, len(setup_records), log_dir / f"worker-{settings.group_id}.log")
    out.profile = profile
    return out
