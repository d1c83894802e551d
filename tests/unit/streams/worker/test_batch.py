"""batch.py: the dead-letter record, the send texts a batch is presketched with, where a batch is (for error lines), `awaiting`, where a
suspended task waits, for the slow-batch warning (a stall is never silent), and which batches
`run_batch` decides around a rebalance (on a worker as built, never started).
The agent and the batch protocol against a broker: tests/integration/test_kafka_*.py."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP

from sendgate.models.events import Refusal
from sendgate.streams.config import Settings
from sendgate.streams.worker import batch as worker_batch
from sendgate.streams.worker.app import build_worker
from sendgate.streams.worker.batch import _where, awaiting, dead_letter_record, send_texts
from sendgate.streams.worker.holes import LoggedMessage


async def _innermost(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _innermost(event)


def test_awaiting_names_every_coroutine_of_the_chain_innermost_last():
    async def run() -> str:
        event = asyncio.Event()
        task = asyncio.ensure_future(_outer(event))
        await asyncio.sleep(0)
        shown = awaiting(task)
        event.set()
        await task
        return shown

    lines = asyncio.run(run()).splitlines()
    names = [line.rsplit(" in ", 1)[-1] for line in lines if " in " in line]
    assert names[:3] == ["_outer", "_innermost", "wait"], lines


def test_awaiting_without_a_task():
    assert awaiting(None) == "  (not suspended)"


def test_a_dead_letter_names_the_reason_the_place_and_keeps_the_record_as_text():
    message = LoggedMessage("sendgate.events", 3, 41, b"acme", 1_700_000_000.0)
    doc = orjson.loads(
        dead_letter_record(
            message,
            '{"type": "shout", "text": "héllo"}'.encode(),
            "field 'type' must be one of ...",
            Refusal.UNKNOWN_TYPE,
        )
    )
    assert doc == {
        "error": "field 'type' must be one of ...",
        "code": "unknown_type",
        "topic": "sendgate.events",
        "partition": 3,
        "offset": 41,
        "key": "acme",
        "raw": '{"type": "shout", "text": "héllo"}',
    }


def test_bytes_that_are_not_utf8_are_kept_in_base64_and_say_so():
    raw, key = b"\xff\xfe{not json", b"\xc3\x28"  # invalid UTF-8 in both
    doc = orjson.loads(
        dead_letter_record(LoggedMessage("t", 0, 7, key, 0.0), raw, "not valid UTF-8 JSON", Refusal.NOT_JSON)
    )
    assert base64.b64decode(doc["raw"]) == raw and doc["raw_encoding"] == "base64"
    assert base64.b64decode(doc["key"]) == key and doc["key_encoding"] == "base64"


def test_a_record_without_key_or_value_is_dead_lettered_with_nulls():
    doc = orjson.loads(
        dead_letter_record(LoggedMessage("t", 1, 0, None, 0.0), None, "record has no value", Refusal.NO_VALUE)
    )
    assert doc["key"] is None and doc["raw"] is None
    assert "key_encoding" not in doc and "raw_encoding" not in doc


def test_a_batch_is_named_by_its_span_on_each_partition():
    batch = [
        SimpleNamespace(message=LoggedMessage("events", p, o, None, 0.0))
        for p, o in ((1, 9), (0, 5), (1, 7), (0, 6), (2, 3))
    ]
    assert _where(batch) == "5 event(s) at events[0]@5..6, events[1]@7..9, events[2]@3"
    assert LoggedMessage("events", 2, 3, None, 0.0).tp == TP("events", 2)


class Event:
    """A record of the events topic as the agent takes it from its queue."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.message = LoggedMessage(topic, partition, offset, b"app", 0.0)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """A worker as built (never started: no broker), owning events partition 1, whose
    `process_batch` records each attempt and fails the first with a full disk."""
    worker = build_worker(
        Settings(data_dir=str(tmp_path), group_id="gate-rebalance", web_enabled=False, auth=False), ticker=False
    )
    events = worker.topics.events.get_topic_name()
    monkeypatch.setattr(worker_batch, "assigned", lambda app: {TP(events, 1)})
    worker.attempts = []

    async def process_batch(batch, quiet=()):
        worker.attempts.append([e.message.offset for e in batch])
        if len(worker.attempts) == 1:
            raise OSError(28, "No space left on device")  # the local store's write, after the send
        return []

    worker.process_batch = process_batch
    worker.event = Event(events, 1, 2144)
    return worker


def test_a_batch_taken_while_a_rebalance_recovers_the_tables_is_not_decided(worker):
    """The tables of a new assignment are being recovered: a batch decided now would read a
    half-recovered store (the fault soak decided 11,000 records so, records another worker had
    already decided, and its rows overwrote that worker's). Dropped unacked, its records come
    again from the committed offsets once the recovery is over."""
    worker.faust.rebalancing = True
    asyncio.run(worker.run_batch([worker.event]))
    assert worker.attempts == [] and not worker.event.acked and worker.next_offsets == {}


@pytest.mark.parametrize("recovered", [False, True], ids=["retried-while-recovering", "retried-after"])
def test_a_failing_batch_is_not_decided_again_after_a_rebalance_in_its_backoff(worker, recovered):
    """The fault soak: a batch failed on a full disk; while it waited to be decided again the
    worker lost its session, and got its partitions back from the other worker, which had decided
    their records meanwhile. The retry succeeded (the disk was free again) over a store that had
    not read the other worker's writes, and its rows and commit record landed after them. A batch
    does not outlive a rebalance, whether it is retried during the recovery or after it."""

    async def run() -> None:
        batch = asyncio.ensure_future(worker.run_batch([worker.event]))
        deadline = asyncio.get_running_loop().time() + 10
        while worker.failing_since is None:  # the first attempt failed: the batch waits to be retried
            assert asyncio.get_running_loop().time() < deadline and not batch.done()
            await asyncio.sleep(0)
        worker.faust.rebalancing = True  # its session expired; the group gives it the partition back
        await worker.faust.on_partitions_revoked.send({TP(worker.topics.events.get_topic_name(), 1)})
        worker.faust.rebalancing = not recovered
        await asyncio.wait_for(batch, 10)

    asyncio.run(run())
    assert worker.attempts == [[2144]] and not worker.event.acked and worker.next_offsets == {}
    assert worker.failing_since is None


def test_the_texts_presketched_are_the_sends_texts_and_a_bad_record_is_left_to_the_gate():
    values = [
        orjson.dumps({"type": "send", "text": "Hi Ann, 50% off today"}),
        orjson.dumps({"type": "inbound", "text": "STOP"}),
        orjson.dumps({"type": "send", "text": 42}),
        orjson.dumps(["send"]),
        b"{not json",
        None,  # a tombstone
        orjson.dumps({"type": "send", "text": "Hi Bo, 50% off today"}),
    ]
    batch = [SimpleNamespace(value=v) for v in values]
    assert list(send_texts(batch)) == ["Hi Ann, 50% off today", "Hi Bo, 50% off today"]
