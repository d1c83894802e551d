"""The integrator's side: publish events, subscribe to decisions and deliveries.

`Publisher` validates with the same code as the worker and keys every event by its app.
`decisions()` and `deliveries()` are async iterators of typed records. The CLI's `publish`
and `tail` are thin shells over these.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendgate.models.decisions import ConsentRecord, Decision, Delivery, GrantRevocation
from sendgate.models.events import decode_event
from sendgate.models.sources import SigningKey

from ..config import Settings
from ..kafka import ensure_topics, partitions_of, start_client


class Publisher:
    """Async publisher of input events to `<prefix>events`, each signed with the key of
    SENDGATE_KEY_ID (or `key`): the worker decides only what a key of the right role says.

    >>> async with Publisher(Settings.from_env()) as pub:
    ...     meta = await pub.publish({"type": "opt_in", "event_id": "e1", "app": "a", "userkey": "u",
    ...                               "source": "web form 2026-12"})
    """

    def __init__(self, settings: Settings | None = None, key: SigningKey | None = None,
                 **producer_options: Any) -> None:
        self.settings = settings or Settings.from_env()
        self.key = key or self.settings.signing_key()  # None: unsigned (a worker with SENDGATE_AUTH=off)
        self.topic = self.settings.topic("events")
        self._max_ahead_ms = self.settings.policy().max_ts_ahead_s * 1000
        # producer_options override these defaults (the API lingers less: it waits for each ack)
        self._producer = AIOKafkaProducer(**{"bootstrap_servers": self.settings.bootstrap, "acks": "all",
                                             "linger_ms": 5, "enable_idempotence": True,
                                             **self.settings.kafka_options(), **producer_options})

    async def __aenter__(self) -> "Publisher":
        try:
            await ensure_topics(self.settings, [self.topic])
            await start_client(self._producer, self.settings)
        except BaseException:
            await self._producer.stop()  # else aiokafka logs "Unclosed AIOKafkaProducer" after the real error
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, event: dict | bytes | str, key: SigningKey | None = None) -> Any:
        """Validate and enqueue one event, signed with `key` (default: the publisher's); returns a
        future of its record metadata.

        Raises `InvalidEvent` (nothing is sent) when the worker would dead-letter it.
        """
        key = key or self.key
        raw = event if isinstance(event, bytes) else event.encode() if isinstance(event, str) else orjson.dumps(event)
        valid = decode_event(raw, int(time.time() * 1000), self._max_ahead_ms)
        # The record's timestamp is the event's time: history published with its own `ts` is an
        # honest backfill (models/clock.py bounds how far `ts` may trail the record's timestamp).
        return await self._producer.send(self.topic, value=raw, key=valid.app.encode(), timestamp_ms=valid.ts,
                                         headers=key.headers(raw) if key else None)

    async def publish(self, event: dict | bytes | str, key: SigningKey | None = None) -> Any:
        """Validate, send and wait for the broker's acknowledgement; returns the record metadata."""
        return await (await self.send(event, key))

    async def flush(self) -> None:
        await self._producer.flush()


async def _records(settings: Settings, topic: str, *, group_id: str | None, from_beginning: bool,
                   keep: Callable[[dict], bool], unique: str | None = None,
                   wait_for_topic_s: float = 30.0) -> AsyncIterator[dict]:
    """The topic's JSON records that `keep` accepts; with `unique` (an id field), a record whose id
    was just seen (at-least-once upstream) is dropped."""
    recent = RecentIds() if unique else None
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group_id,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                enable_auto_commit=group_id is not None, isolation_level="read_committed",
                                **settings.kafka_options())
    await start_client(consumer, settings)
    try:
        if group_id is not None:
            consumer.subscribe([topic])
        else:
            partitions = await partitions_of(settings, topic, wait_for_topic_s)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
        async for message in consumer:
            doc = orjson.loads(message.value)
            if keep(doc) and (recent is None or recent.first_time(doc[unique])):
                yield doc
    finally:
        await consumer.stop()


def _filter(app: str | None, outcome: str | None, field: str = "outcome") -> Callable[[dict], bool]:
    return lambda doc: (app is None or doc.get("app") == app) and (outcome is None or doc.get(field) == outcome)


class RecentIds:
    """The last `size` ids seen: enough to drop the duplicates at-least-once processing repeats
    (they follow their original within the events re-processed after a crash)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, id_: str) -> bool:
        if id_ in self._seen:
            self._seen.move_to_end(id_)
            return False
        self._seen[id_] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


async def decisions(settings: Settings | None = None, *, group_id: str | None = None, from_beginning: bool = False,
                    app: str | None = None, outcome: str | None = None, topic: str | None = None,
                    dedupe: bool = True) -> AsyncIterator[Decision]:
    """Yield decisions as they arrive. Without `group_id` every partition is read and nothing is
    committed; with one, partitions are shared with the group's other members and offsets committed.
    With `dedupe` (the default) a decision whose `decision_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in _records(settings, topic or settings.topic("decisions"), group_id=group_id,
                              from_beginning=from_beginning, keep=_filter(app, outcome),
                              unique="decision_id" if dedupe else None):
        yield Decision.from_dict(doc)


async def deliveries(network: str, settings: Settings | None = None, *, group_id: str | None = None,
                     from_beginning: bool = False, app: str | None = None) -> AsyncIterator[Delivery]:
    """Yield the deliveries of one network as they arrive."""
    settings = settings or Settings.from_env()
    async for doc in _records(settings, settings.topic(f"deliveries.{network}"), group_id=group_id,
                              from_beginning=from_beginning, keep=_filter(app, None)):
        yield Delivery.from_dict(doc)


async def consent_records(settings: Settings | None = None, *, group_id: str | None = None,
                          from_beginning: bool = False, app: str | None = None, kind: str | None = None,
                          dedupe: bool = True) -> AsyncIterator[ConsentRecord]:
    """Yield the consent audit trail (`<prefix>consent`): every opt-out and opt-in with the rule
    and the event that made it, and every ambiguous inbound. With `dedupe`, a record whose
    `record_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in _records(settings, settings.topic("consent"), group_id=group_id, from_beginning=from_beginning,
                              keep=_filter(app, kind, "kind"), unique="record_id" if dedupe else None):
        yield ConsentRecord.from_dict(doc)


async def grant_revocations(settings: Settings | None = None, *, group_id: str | None = None,
                            from_beginning: bool = False, app: str | None = None,
                            dedupe: bool = True) -> AsyncIterator[GrantRevocation]:
    """Yield sendgate's revocations of unrestricted grants (`<prefix>grants`), with the counts that
    caused each; an operator restores a grant with an `app_policy` event. With `dedupe`, a record
    whose `revocation_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in _records(settings, settings.topic("grants"), group_id=group_id, from_beginning=from_beginning,
                              keep=_filter(app, None), unique="revocation_id" if dedupe else None):
        yield GrantRevocation.from_dict(doc)
