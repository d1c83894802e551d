"""Producing events with chosen record timestamps (CreateTime) and partitions, and reading topic
configs: for tests of event time, where the record's own timestamp is part of the input."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from harness import signed
from sendgate.streams.kafka import ensure_topics, partitions_of
from sendgate.streams.config import Settings


@dataclass(frozen=True)
class Rec:
    """One record for the events topic: the event and, optionally, its record timestamp (epoch ms,
    None = the producer's default, the wall clock at send time) and partition (None = by key)."""

    event: dict
    timestamp_ms: int | None = None
    partition: int | None = None


@dataclass(frozen=True)
class Produced:
    event: dict
    partition: int
    offset: int
    timestamp: int  # as the broker acknowledged it: the append time on a LogAppendTime topic
    timestamp_type: int  # 0 CreateTime, 1 LogAppendTime


def produce(settings: Settings, records: list[Rec | dict], create_topic: bool = True) -> list[Produced]:
    """Write events to `<prefix>events` in order, keyed by their app, with one idempotent producer
    (acks=all), each with its own record timestamp when given. Events are validated with the
    worker's decoder first (against the timestamp they are given), so that a test bug does not
    become a dead letter. `create_topic=False` leaves creating the topic to a worker."""
    from sendgate.models.events import decode_event

    max_ahead_ms = settings.policy().max_ts_ahead_s * 1000
    prepared: list[tuple[dict, bytes, Rec]] = []
    for r in records:
        rec = r if isinstance(r, Rec) else Rec(r)
        raw = orjson.dumps(rec.event)
        decode_event(raw, rec.timestamp_ms if rec.timestamp_ms is not None else int(time.time() * 1000), max_ahead_ms)
        prepared.append((rec.event, raw, rec))

    async def run() -> list[Produced]:
        topic = settings.topic("events")
        if create_topic:
            await ensure_topics(settings, [topic])
        await partitions_of(settings, topic, 60.0)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic,
                    value=raw,
                    key=event["app"].encode(),
                    partition=rec.partition,
                    timestamp_ms=rec.timestamp_ms,
                    headers=signed(settings, raw),
                )
                for event, raw, rec in prepared
            ]
            metas = [await f for f in futures]
        finally:
            await producer.stop()
        return [
            Produced(event, m.partition, m.offset, m.timestamp, m.timestamp_type)
            for (event, _, _), m in zip(prepared, metas)
        ]

    return asyncio.run(run())


def create_topic(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    """Create `topic` with the configured partition count and these topic configs."""

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, settings.partitions, 1, topic_configs=configs)])
        finally:
            await admin.close()
        await partitions_of(settings, topic, 60.0)

    asyncio.run(run())


def topic_configs(settings: Settings, topic: str, wait_s: float = 60.0) -> dict[str, str]:
    """The configs of `topic` as the broker describes them (name -> value), once it exists."""

    async def run() -> dict[str, str]:
        await partitions_of(settings, topic, wait_s)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        out: dict[str, str] = {}
        for response in responses:
            for error_code, error_message, _type, name, entries in response.resources:
                assert error_code == 0, f"describe_configs {name}: error {error_code} {error_message}"
                if name == topic:
                    out.update({entry[0]: entry[1] for entry in entries})
        return out

    return asyncio.run(run())


def wait_wall_clock_past(ts_ms: int) -> None:
    """Let the wall clock pass `ts_ms`: for tests where the time records are appended at is the
    input (LogAppendTime). A wait for time itself, not for a result."""
    while time.time() * 1000 <= ts_ms:
        time.sleep(min(0.1, max(0.001, (ts_ms - time.time() * 1000) / 1000)))
