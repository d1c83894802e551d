"""Scaling: two worker processes in one group against one, next to two pass-through consumers
against one, on the throughput log.

Method: the one-worker figure is the throughput phase's worker on the same log. Two workers
(`sendgate worker`, the throughput phase's settings, a fresh prefix with the same log published
to it) start first; once the group is stable with both members, the log is published and the
span runs from the first to the last decision (record timestamps). The pass-through runs in
child processes (`python -m bench.scaling PARTITIONS...`: orjson decode + encode, produce
acks=all, linger 0, 16 KiB batches, as the throughput phase's pass-through) with the partitions
assigned by hand, started together once each is connected and at the start of its partitions:
one process over all 8 partitions, then two over 4 each, then one again (the baseline is the mean
of the two single runs); span from the first to the last output record's timestamp (the
producer's clock). Scaling = two / one; the worker's scaling is then compared with the
pass-through's. Both share the 2 cores with the broker and each other, so neither can
double: the ratio says how much of the pass-through's gain the worker gets.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sendgate.streams.config import Settings
from sendgate.streams.kafka import end_offsets, ensure_topics, read_log

from . import throughput as tp

STABLE_S = 120.0  # how long two workers may take to form a stable group


@dataclass
class Scaling:
    passthrough_one: list[tp.RateResult]
    passthrough_two: tp.RateResult
    workers_two: tp.RateResult | None
    problem: str | None

    @property
    def passthrough_gain(self) -> float:
        one = sum(r.rate for r in self.passthrough_one) / len(self.passthrough_one)
        return self.passthrough_two.rate / one if one else 0.0


async def timestamps_rate(settings: Settings, topic: str, label: str) -> tp.RateResult:
    ts = [r.timestamp async for r in read_log(settings, topic, await end_offsets(settings, topic))]
    span = (max(ts) - min(ts)) / 1000 if ts else 0.0
    return tp.RateResult(label, len(ts), span, tp.bins_per_second(ts, 1000))


async def passthrough_processes(settings: Settings, groups: list[list[int]], label: str) -> tp.RateResult:
    """One child process per partition group, each reading its partitions to their end."""
    out = settings.topic(f"scale.{label}")
    await ensure_topics(settings, [out])
    env = {**os.environ, "SENDGATE_BOOTSTRAP": settings.bootstrap}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.scaling", settings.topic("events"), out, *map(str, partitions)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for partitions in groups
    ]
    for child in children:  # each connected, assigned and at the start of its partitions
        line = await asyncio.to_thread(child.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"pass-through child: {line!r}, exit {child.wait()}")
    for child in children:  # then all go at once: the span is not a process start-up
        child.stdin.write(b"go\n")
        child.stdin.close()
    for child in children:
        if await asyncio.to_thread(child.wait) != 0:
            raise RuntimeError(f"pass-through child exited with {child.returncode}")
    return await timestamps_rate(settings, out, f"pass-through, {len(groups)} process(es)")


async def group_stable(settings: Settings, members: int, timeout_s: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_consumer_groups([settings.group_id])
            groups = [grp for d in described for grp in d.groups]
            if groups and groups[0][2] == "Stable" and len(groups[0][5]) == members:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {settings.group_id}: not stable with {members} members in {timeout_s:.0f} s")
            await asyncio.sleep(0.5)  # poll interval
    finally:
        await admin.close()


async def two_workers(settings: Settings, log_dir: Path, log: tp.Log, expected_decisions: int) -> tp.RateResult:
    await tp.declare_outputs(settings)
    workers = [  # each on its own store, as on two machines
        tp.WorkerProcess(settings.with_(data_dir=f"{settings.data_dir}-{i}"), log_dir / f"scale-worker-{i}.log").start()
        for i in (1, 2)
    ]
    with tp.stopping(*workers):
        await group_stable(settings, 2, STABLE_S)
        await tp.publish_records(settings, log.records)
        _, problem = await tp.wait_for_count(settings, settings.topic("decisions"), expected_decisions, None)
        if problem:
            raise RuntimeError(f"two workers: {problem}")
    return await timestamps_rate(settings, settings.topic("decisions"), "two workers, one group")


async def scaling(tp_settings: Settings, fresh: Settings, log_dir: Path, log: tp.Log, expected: int) -> Scaling:
    """`tp_settings`: the throughput phase's (its events topic holds the log); `fresh`: a new
    prefix for the two workers."""
    partitions = list(range(tp_settings.partitions))
    half = len(partitions) // 2
    one = [await passthrough_processes(tp_settings, [partitions], "one-a")]
    two = await passthrough_processes(tp_settings, [partitions[:half], partitions[half:]], "two")
    one.append(await passthrough_processes(tp_settings, [partitions], "one-b"))
    try:
        workers, problem = await two_workers(fresh, log_dir, log, expected), None
    except Exception as exc:  # reported with the pass-through figures
        workers, problem = None, f"{type(exc).__name__}: {exc}"
    return Scaling(one, two, workers, problem)


async def _child(topic: str, out: str, partitions: list[int]) -> None:
    bootstrap = os.environ["SENDGATE_BOOTSTRAP"]
    tps = [TopicPartition(topic, p) for p in partitions]
    async with (
        AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False) as consumer,
        AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=16384) as producer,
    ):
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        futures = []
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        while left:
            for tp_, messages in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for m in messages:
                    futures.append(await producer.send(out, value=orjson.dumps(orjson.loads(m.value)), key=m.key))
                if messages and messages[-1].offset + 1 >= ends[tp_]:
                    left.discard(tp_)
        await asyncio.gather(*futures)


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]))
