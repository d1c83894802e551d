"""batch.py: the dead-letter record, where a batch is (for error lines), and `awaiting`, where a
suspended task waits, for the slow-batch warning (a stall is never silent).
The agent and the batch protocol against a broker: tests/integration/test_kafka_*.py."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

import orjson
from faust.types import TP

from sendgate.models.events import Refusal
from sendgate.streams.worker.batch import _where, awaiting, dead_letter_record
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
