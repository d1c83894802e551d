"""Reading the event log directly: the basis of replay and rebuild.

Both run the same `Gate` as the worker, over the same records, in one process with an in-memory
store. They always start from offset 0, so they need no durable state of their own: no consumer
group, no changelog, no local store, and nothing a live worker could notice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .client import partitions_of
from .config import Settings


@dataclass(slots=True)
class LogRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # ms


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The current end (next offset to be written) of every partition of `topic`."""
    partitions = await partitions_of(settings, topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                **settings.kafka_options())
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The offsets a consumer group has committed on `topic` (0 where it has none)."""
    partitions = await partitions_of(settings, topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}
    return {p: committed.get(p, 0) for p in partitions}


async def read_log(settings: Settings, topic: str, until: dict[int, int],
                   progress: Callable[[int, int], None] | None = None,
                   start: dict[int, int] | None = None) -> AsyncIterator[LogRecord]:
    """Every record of `topic` from offset `start[partition]` (default 0) up to (not including)
    `until[partition]`, each partition in order. Partitions interleave as they are fetched, as they
    do in a live worker."""
    start = start or {}
    todo = {p: end for p, end in until.items() if end > start.get(p, 0)}
    if not todo:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=2000, **settings.kafka_options())
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in todo]
        consumer.assign(tps)
        for tp in tps:
            if start.get(tp.partition, 0) > 0:
                consumer.seek(tp, start[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        total, done, last_report = sum(e - start.get(p, 0) for p, e in todo.items()), 0, time.monotonic()
        while todo:
            batch = await consumer.getmany(*[TopicPartition(topic, p) for p in todo], timeout_ms=500)
            for tp, messages in batch.items():
                end = todo.get(tp.partition)
                if end is None:
                    continue
                for m in messages:
                    if m.offset >= end:
                        break
                    done += 1
                    yield LogRecord(m.partition, m.offset, m.key, m.value, m.timestamp)
            for p in list(todo):
                # the position, not the last record seen, so that gaps (markers, compaction) end too
                if await consumer.position(TopicPartition(topic, p)) >= todo[p]:
                    del todo[p]
            if progress and time.monotonic() - last_report >= 1.0:
                progress(done, total)
                last_report = time.monotonic()
        if progress:
            progress(done, total)
    finally:
        await consumer.stop()
