"""Helpers for tests against a real Kafka broker: isolated settings, worker processes, publishing
through the CLI, and reading topics with a deadline (never a sleep). Users can reuse them."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.streams.client import ensure_topics, partitions_of
from sendgate.streams.config import Settings
from sendgate.streams.process import WorkerProcess

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z: event time in tests is explicit, never the wall clock
MIN = 60_000
DAY = 86_400_000
DEADLINE_S = 90.0


def make_settings(bootstrap: str, data_dir: Path, **overrides) -> Settings:
    run = uuid.uuid4().hex[:8]
    base = Settings(bootstrap=bootstrap, topic_prefix=f"t{run}.", app_id=f"t{run}", partitions=4,
                    data_dir=str(data_dir), web_enabled=False, tick_interval_s=0, session_timeout_s=6.0,
                    heartbeat_interval_s=1.0, rebalance_timeout_s=3.0, log_level="info",
                    processing_guarantee=os.environ.get("SENDGATE_PROCESSING_GUARANTEE", "at_least_once"))
    return base.with_(**overrides)


class Workers:
    """Starts worker processes for one test and stops every one of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, self.tmp_path / f"worker-{len(self.started)}.log").start()
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
            print(f"--- {worker.log_path.name} (tail) ---\n{worker.log_tail(3000)}")


def publish(settings: Settings, events: list[dict | bytes], expect_rc: int = 0) -> subprocess.CompletedProcess:
    """Publish JSON lines with `sendgate publish -`, as a user would."""
    lines = b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events) + b"\n"
    result = subprocess.run([sys.executable, "-m", "sendgate.streams.cli", "publish", "-"], input=lines,
                            env={**os.environ, **settings.to_env()}, capture_output=True, timeout=60)
    assert result.returncode == expect_rc, result.stderr.decode()
    return result


def produce_raw(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Write records byte for byte to the events topic, bypassing validation (hostile producers)."""

    async def run() -> None:
        await ensure_topics(settings, [settings.topic("events")])
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(settings.topic("events"), value=value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())


def collect(settings: Settings, topic: str, until: Callable[[list[dict]], bool],
            timeout: float = DEADLINE_S, with_partition: bool = False) -> list[dict]:
    """Read `topic` from the beginning until `until(records)` holds; fail at the deadline."""

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
                        doc = orjson.loads(m.value) if m.value is not None else None
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
