"""The output records of one batch, produced as one Kafka record batch per topic partition.

Producing record by record through Faust (`Topic.send`) cost more of the worker's time than
deciding (profiled with `bench/run --profile`): sensors, a future per record, the partitioner
and the accumulator for every decision. A batch of events already waits for all its outputs
before its state is written (streams/worker/checkpoint.py), so its outputs can as well go out together:
aiokafka's `create_batch`/`send_batch`, one future per topic partition.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka.partitioner import murmur2

Headers = list[tuple[str, bytes]] | None  # aiokafka's batch builder takes a list (or None: no headers)


def partition_for(key: bytes | None, partitions: int) -> int:
    """As aiokafka's (and Kafka's) default partitioner for keyed records; unkeyed ones to 0."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0


class Outbox:
    def __init__(self) -> None:
        # topic -> (key, value, partition: None to route by key, timestamp: None for the producer's, headers)
        self._records: dict[str, list[tuple[bytes | None, bytes | None, int | None, int | None, Headers]]] = (
            defaultdict(list)
        )

    def clear(self) -> None:
        self._records.clear()

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers = None,
    ) -> None:
        self._records[topic].append((key, value, partition, timestamp_ms, headers))

    async def send(self, producer: Any) -> dict[tuple[str, int], int]:
        """Produce everything with `producer` (an AIOKafkaProducer) and wait until the broker has
        acknowledged all of it; raises if it refused any of it (the batch is then decided again).
        Returns the offset of the last record written to each (topic, partition)."""
        sent = []  # (topic, partition, future of a batch, records in it)
        records, self._records = self._records, defaultdict(list)
        for topic, items in records.items():
            # aiokafka refreshes only the topics its client tracks (once it tracks any), and
            # partitions_for/send_batch track a topic only when it is missing from the cache: a
            # batch for a topic known only from an earlier full refresh is stranded (leader None,
            # the sender refreshing forever without it) when another cache miss narrows the refresh.
            await producer.client.add_topic(topic)
            partitions = len(await producer.partitions_for(topic))
            by_partition: dict[int, list[tuple[bytes | None, bytes | None, int | None, Headers]]] = defaultdict(list)
            for (
                key,
                value,
                partition,
                timestamp,
                headers,
            ) in items:  # in order within a partition: an app's records stay ordered
                by_partition[partition_for(key, partitions) if partition is None else partition].append(
                    (key, value, timestamp, headers)
                )
            for partition, pending in by_partition.items():
                batch, n = producer.create_batch(), 0
                for key, value, timestamp, headers in pending:
                    if batch.append(key=key, value=value, timestamp=timestamp, headers=headers) is None:  # full
                        sent.append((topic, partition, await producer.send_batch(batch, topic, partition=partition), n))
                        batch, n = producer.create_batch(), 0
                        # an empty batch takes any record
                        batch.append(key=key, value=value, timestamp=timestamp, headers=headers)
                    n += 1
                sent.append((topic, partition, await producer.send_batch(batch, topic, partition=partition), n))
        written = await asyncio.gather(*(future for _, _, future, _ in sent))
        # a batch's metadata holds the offset of its first record; batches of a partition go out in order
        return {(topic, partition): meta.offset + n - 1 for (topic, partition, _, n), meta in zip(sent, written)}
