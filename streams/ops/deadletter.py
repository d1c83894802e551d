"""`sendgate deadletter`: list the records the worker parked in `<prefix>deadletter`, and send
chosen ones back to the events topic as they came: the same key, the same value and the same
signing headers (the worker keeps a record's headers on its dead letter), so a fixed producer
partitioner or a key added to the keyring lets them through without anyone re-signing them.

The dead-letter topic is a log: republishing removes nothing from it (`list` still shows the
records), and republishing the same record twice publishes it twice (the worker decides a repeated
`request_id` or `event_id` as it decides any repeat).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from sendgate.models.sources import KEY_HEADER

from ..config import Settings
from ..kafka import LogRecord, end_offsets, read_log, start_client


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # where it is in the dead-letter topic
    offset: int
    error: str
    topic: str | None  # where the record was, and the record itself
    from_partition: int | None
    from_offset: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def where(self) -> str:
        return f"deadletter[{self.partition}]@{self.offset}"

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.from_partition}]@{self.from_offset}"

    @property
    def signed_by(self) -> str | None:
        return next((v.decode("utf-8", "replace") for n, v in self.headers if n == KEY_HEADER), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deadletter_partition": self.partition,
            "deadletter_offset": self.offset,
            "error": self.error,
            "topic": self.topic,
            "partition": self.from_partition,
            "offset": self.from_offset,
            "key": _text(self.key),
            "raw": _text(self.value),
            "signed_by": self.signed_by,
            "headers": [name for name, _ in self.headers],
        }


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _bytes(doc: dict, name: str) -> bytes | None:
    text = doc.get(name)
    if text is None:
        return None
    return base64.b64decode(text) if doc.get(f"{name}_encoding") == "base64" else str(text).encode()


def parse(record: LogRecord) -> DeadLetter:
    """The dead letter a record of the dead-letter topic holds (streams/worker/batch.py writes them)."""
    try:
        doc = orjson.loads(record.value or b"")
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return DeadLetter(
            record.partition,
            record.offset,
            str(doc.get("error", "")),
            doc.get("topic"),
            doc.get("partition"),
            doc.get("offset"),
            _bytes(doc, "key"),
            _bytes(doc, "raw"),
            tuple(record.headers or ()),
        )
    except (ValueError, TypeError) as exc:  # not written by a worker: shown, never republished
        return DeadLetter(
            record.partition,
            record.offset,
            f"not a dead-letter record: {exc}",
            None,
            None,
            None,
            record.key,
            record.value,
            tuple(record.headers or ()),
        )


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every record of the dead-letter topic up to its end offsets now, partition by partition
    (LookupError when the topic does not exist: no worker has run)."""
    topic = settings.topic("deadletter")
    letters = [parse(r) async for r in read_log(settings, topic, await end_offsets(settings, topic))]
    return sorted(letters, key=lambda d: (d.partition, d.offset))


def select(
    letters: list[DeadLetter], at: list[tuple[int, int]] | None = None, error: str | None = None, app: str | None = None
) -> list[DeadLetter]:
    """The dead letters at one of the `at` (partition, offset) places, whose error contains
    `error`, keyed by `app`; a criterion that is None selects all."""
    places = set(at) if at else None
    return [
        d
        for d in letters
        if (places is None or (d.partition, d.offset) in places)
        and (error is None or error in d.error)
        and (app is None or d.key == app.encode())
    ]


def refusal(settings: Settings, letter: DeadLetter) -> str | None:
    """Why a dead letter cannot be republished, or None."""
    if letter.topic != settings.topic("events"):
        return (
            f"it came from {letter.topic}, not {settings.topic('events')}"
            if letter.topic
            else "it is not a dead-letter record"
        )
    if letter.value is None:
        return "it has no value"
    return None


def record_time(value: bytes) -> int | None:
    """The event's own `ts` as the record's timestamp, as `Publisher` sends it (None: the producer's)."""
    try:
        ts = orjson.loads(value).get("ts")
    except (ValueError, AttributeError):
        return None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) and ts > 0 else None


async def republish(settings: Settings, letters: list[DeadLetter]) -> list[RecordMetadata]:
    """Send each dead letter back to its topic (the events topic) with its key, value and headers;
    the partition is the producer's default for the key, as for any producer's record."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, **settings.kafka_options()
    )
    try:
        await start_client(producer, settings)
        sent = []
        for letter in letters:
            assert letter.topic is not None and letter.value is not None  # refusal() said so
            sent.append(
                await producer.send_and_wait(
                    letter.topic,
                    value=letter.value,
                    key=letter.key,
                    headers=list(letter.headers) or None,
                    timestamp_ms=record_time(letter.value),
                )
            )
        return sent
    finally:
        await producer.stop()
