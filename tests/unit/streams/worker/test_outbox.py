"""outbox.py: a batch's outputs grouped into one Kafka record batch per topic partition, in order,
with the last offset written to each (the batches through a real producer and broker: every
tests/integration/test_kafka_*.py)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from sendgate.streams.worker.outbox import Outbox, partition_for

T = 1_700_000_000_000
RANDOM = random.Random(19)  # the same keys every run


class RecordedBatch:
    """aiokafka's own BatchBuilder (so a batch is full when aiokafka says so), remembering what it took."""

    def __init__(self, size: int) -> None:
        self.builder = BatchBuilder(size, 0)
        self.records: list[tuple[bytes | None, bytes | None, int | None]] = []
        self.headers: list = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None, headers=None) -> object:
        meta = self.builder.append(key=key, value=value, timestamp=timestamp, headers=headers)
        if meta is not None:
            self.records.append((key, value, timestamp))
            self.headers.append(headers)
        return meta


class Producer:
    """The part of AIOKafkaProducer an Outbox uses: topic tracking and metadata, create_batch and
    send_batch. A sent batch is appended to an in-memory log per topic partition; `refuse` names
    topics whose batches fail as a broker's refusal would."""

    def __init__(self, partitions: dict[str, int], batch_size: int = 16_384, refuse: tuple[str, ...] = ()) -> None:
        self.partitions, self.batch_size, self.refuse = partitions, batch_size, refuse
        self.tracked: list[str] = []
        self.log: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, int | None]]] = defaultdict(list)
        self.batches: list[tuple[str, int, int]] = []  # (topic, partition, records)
        self.headers: dict[tuple[str, int], list] = defaultdict(list)
        self.client = SimpleNamespace(add_topic=self._add_topic)

    async def _add_topic(self, topic: str) -> None:
        self.tracked.append(topic)

    async def partitions_for(self, topic: str) -> set[int]:
        assert topic in self.tracked, f"{topic} asked for before the producer tracks it"
        return set(range(self.partitions[topic]))

    def create_batch(self) -> RecordedBatch:
        return RecordedBatch(self.batch_size)

    async def send_batch(self, batch: RecordedBatch, topic: str, *, partition: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if topic in self.refuse:
            future.set_exception(KafkaTimeoutError(f"{topic}[{partition}] not acknowledged"))
            return future
        log = self.log[topic, partition]
        future.set_result(SimpleNamespace(offset=len(log)))  # a batch's metadata: its first record's offset
        log.extend(batch.records)
        self.headers[topic, partition].extend(batch.headers)
        self.batches.append((topic, partition, len(batch.records)))
        return future


def send(outbox: Outbox, producer: Producer) -> dict[tuple[str, int], int]:
    return asyncio.run(outbox.send(producer))


def test_keyed_records_go_where_kafkas_default_partitioner_puts_them_and_unkeyed_ones_to_0():
    keys = [b"", b"acme", b"app-17", "ünïcode".encode(), bytes(range(256)), *(RANDOM.randbytes(12) for _ in range(200))]
    for n in (1, 3, 8, 100):
        for key in keys:
            assert partition_for(key, n) == DefaultPartitioner()(key, list(range(n)), []), (key, n)
    assert {partition_for(None, n) for n in (1, 8, 100)} == {0}
    assert len({partition_for(key, 8) for key in keys}) == 8  # keys spread: the modulo is of a positive hash


def test_each_topic_partition_gets_one_batch_in_the_order_added():
    outbox, producer = Outbox(), Producer({"decisions": 4, "changelog": 4})
    apps = [b"acme", b"globex", b"initech", b"umbrella"]
    for i in range(12):
        outbox.add("decisions", apps[i % 4], b"d%d" % i, timestamp_ms=T + i)
    outbox.add("changelog", b"u:row", b"v", partition=3)  # an explicit partition wins over the key
    outbox.add("changelog", b"\x00commit\x1f3", b"11", partition=3)
    last = send(outbox, producer)

    assert producer.tracked == ["decisions", "changelog"]
    for app in apps:
        p = partition_for(app, 4)
        mine = [(k, v, ts) for k, v, ts in producer.log["decisions", p] if k == app]
        assert mine == [(app, b"d%d" % i, T + i) for i in range(12) if apps[i % 4] == app]
    assert producer.log["changelog", 3] == [(b"u:row", b"v", None), (b"\x00commit\x1f3", b"11", None)]
    assert sorted(producer.batches) == sorted({(t, p, len(r)) for (t, p), r in producer.log.items()})
    assert last == {(t, p): len(records) - 1 for (t, p), records in producer.log.items()}


def test_a_full_batch_is_sent_and_the_rest_of_the_partition_follows_in_a_new_one():
    outbox, producer = Outbox(), Producer({"decisions": 1}, batch_size=300)
    values = [bytes([65 + i]) * 100 for i in range(7)]
    for value in values:
        outbox.add("decisions", b"acme", value)
    assert send(outbox, producer) == {("decisions", 0): 6}
    assert len(producer.batches) > 1 and sum(n for _, _, n in producer.batches) == 7
    assert [v for _, v, _ in producer.log["decisions", 0]] == values


def test_offsets_continue_the_partitions_log_and_a_sent_outbox_is_empty():
    outbox, producer = Outbox(), Producer({"decisions": 2})
    producer.log["decisions", 1] = [(None, b"older", None)] * 5  # records other batches wrote before
    outbox.add("decisions", b"k", b"x", partition=1)
    outbox.add("decisions", b"k", b"y", partition=1)
    assert send(outbox, producer) == {("decisions", 1): 6}
    assert send(outbox, producer) == {} and len(producer.batches) == 1


def test_a_refused_batch_fails_the_send_and_clear_drops_what_was_added():
    outbox, producer = Outbox(), Producer({"decisions": 1, "deadletter": 1}, refuse=("deadletter",))
    outbox.add("decisions", b"k", b"x")
    outbox.add("deadletter", b"k", b"bad")
    with pytest.raises(KafkaTimeoutError):
        send(outbox, producer)
    outbox.add("decisions", b"k", b"stale")
    outbox.clear()  # the batch is decided again from its records: nothing of the failed attempt goes out
    assert send(outbox, producer) == {}
    assert producer.log["decisions", 0] == [(b"k", b"x", None)]


def test_headers_go_with_their_record_into_the_batch():
    # the worker signs what it appends to the events topic (models/sources.py): the headers must
    # reach aiokafka's batch with the record they sign, and records without keep none
    producer, outbox = Producer({"events": 1}), Outbox()
    signed = [("sendgate-key", b"local-worker"), ("sendgate-sig", b"ab" * 32)]
    outbox.add("events", b"a", b"tick", 0, 5, signed)
    outbox.add("events", b"a", b"plain", 0, 6)
    send(outbox, producer)
    assert producer.log["events", 0] == [(b"a", b"tick", 5), (b"a", b"plain", 6)]
    assert producer.headers["events", 0] == [signed, None]
