"""The integrator's side: publish events, subscribe to decisions and deliveries.

`Publisher` validates with the same code as the worker and keys every event by its app.
`decisions()` and `deliveries()` are async iterators of typed records. The CLI's `publish`
and `tail` are thin shells over these.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable, get_args

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from sendgate.models.decisions import ConsentRecord, Decision, Delivery, GrantRevocation
from sendgate.models.events import Event, decode_event, encode_event
from sendgate.models.sources import SigningKey

from ..config import Settings
from ..kafka import partitions_of, start_client


EVENT_CLASSES = get_args(Event)  # the typed event records a Publisher sends as they are


class MissingTopic(LookupError):
    """The topic a client needs does not exist: the workers create the topics, clients never do."""


async def require_topic(settings: Settings, topic: str, wait_s: float) -> list[int]:
    """The partitions of `topic`, waiting up to `wait_s` for it; MissingTopic says what to check."""
    try:
        return await partitions_of(settings, topic, wait_s)
    except LookupError:
        raise MissingTopic(
            f"topic {topic} does not exist at {settings.bootstrap}: the workers create it when they "
            f"start (start one first), and clients never do; check SENDGATE_TOPIC_PREFIX="
            f"{settings.topic_prefix!r} for a typo"
        ) from None


class Publisher:
    """Async publisher of input events to `<prefix>events`, each signed with the key of
    SENDGATE_KEY_ID (or `key`): the worker decides only what a key of the right role says.

    It may be built anywhere (no event loop is needed until `async with`); entering it fails with
    `MissingTopic` when the events topic does not exist after `wait_for_topic_s`: a producer never
    creates topics (it would need the CREATE right, and a typo would create a new events topic).

    >>> async with Publisher(Settings.from_env()) as pub:
    ...     meta = await pub.publish(OptIn(event_id="e1", app="a", userkey="u", ts=now_ms, source="web form"))
    """

    def __init__(
        self,
        settings: Settings | None = None,
        key: SigningKey | None = None,
        *,
        wait_for_topic_s: float = 30.0,
        **producer_options: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.key = key or self.settings.signing_key()  # None: unsigned (a worker with SENDGATE_AUTH=off)
        self.topic = self.settings.topic("events")
        self.wait_for_topic_s = wait_for_topic_s
        self._max_ahead_ms = self.settings.policy().max_ts_ahead_s * 1000
        # producer_options override these defaults (the API lingers less: it waits for each ack)
        self._options: dict[str, Any] = {
            "bootstrap_servers": self.settings.bootstrap,
            "acks": "all",
            "linger_ms": 5,
            "enable_idempotence": True,
            **self.settings.kafka_options(),
            **producer_options,
        }
        self._producer: AIOKafkaProducer | None = None  # made in __aenter__: aiokafka needs a running loop

    async def __aenter__(self) -> "Publisher":
        await require_topic(self.settings, self.topic, self.wait_for_topic_s)
        self._producer = AIOKafkaProducer(**self._options)
        try:
            await start_client(self._producer, self.settings)
        except BaseException:
            await self._producer.stop()  # else aiokafka logs "Unclosed AIOKafkaProducer" after the real error
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the Publisher is not open: use it in `async with Publisher(...) as publisher`")
        return self._producer

    def encode(self, event: Event | dict | bytes | str) -> tuple[bytes, Event]:
        """The record value of `event` and the event it holds, validated as the worker will;
        raises `InvalidEvent` for one it would dead-letter."""
        if isinstance(event, (bytes, str, dict)):
            raw = (
                event if isinstance(event, bytes) else event.encode() if isinstance(event, str) else orjson.dumps(event)
            )
        elif type(event) in EVENT_CLASSES:
            raw = encode_event(event)
        else:
            raise TypeError(
                f"an event is an event record of sendgate.models.events, a dict, bytes or str, "
                f"not {type(event).__name__}"
            )
        return raw, decode_event(raw, int(time.time() * 1000), self._max_ahead_ms)

    async def send(
        self, event: Event | dict | bytes | str, key: SigningKey | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """Validate and enqueue one event (an event record such as `Send` or `OptIn`, a dict, or
        its JSON), signed with `key` (default: the publisher's); returns a future of its record
        metadata.

        Raises `InvalidEvent` (nothing is sent) when the worker would dead-letter it.
        """
        key = key or self.key
        raw, valid = self.encode(event)
        # The record's timestamp is the event's time: history published with its own `ts` is an
        # honest backfill (models/clock.py bounds how far `ts` may trail the record's timestamp).
        return await self.producer.send(
            self.topic,
            value=raw,
            key=valid.app.encode(),
            timestamp_ms=valid.ts,
            headers=key.headers(raw) if key else None,
        )

    async def publish(self, event: Event | dict | bytes | str, key: SigningKey | None = None) -> RecordMetadata:
        """Validate, send and wait for the broker's acknowledgement; returns the record metadata."""
        return await (await self.send(event, key))

    async def flush(self) -> None:
        await self.producer.flush()


async def records(
    settings: Settings,
    topic: str,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    keep: Callable[[dict], bool] | None = None,
    unique: str | None = None,
    wait_for_topic_s: float = 30.0,
    to_end: bool = False,
    idle_timeout_s: float | None = None,
) -> AsyncIterator[dict]:
    """The topic's JSON records that `keep` accepts, as they arrive; with `unique` (an id field), a
    record whose id was just seen (at-least-once upstream) is dropped. With `to_end` (no group) it
    ends at the end offsets it found on starting; with `idle_timeout_s` when no record came for
    that long. Fails with `MissingTopic` when the topic does not exist after `wait_for_topic_s`."""
    if to_end and group_id is not None:
        raise ValueError("to_end reads every partition, without a consumer group")
    recent = RecentIds() if unique else None
    partitions = await require_topic(settings, topic, wait_for_topic_s)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
        isolation_level="read_committed",
        **settings.kafka_options(),
    )
    try:
        await start_client(consumer, settings)
        ends: dict[TopicPartition, int] | None = None
        if group_id is not None:
            consumer.subscribe([topic])
        else:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            if to_end:
                ends = await consumer.end_offsets(tps)
        last = time.monotonic()
        while True:
            if ends is not None and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                return
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                for message in messages:
                    if ends is not None and message.offset >= ends[tp]:
                        continue
                    doc = orjson.loads(message.value)
                    if (keep is None or keep(doc)) and (recent is None or recent.first_time(doc[unique])):
                        yield doc
            if batch:
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                return
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


async def decisions(
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    app: str | None = None,
    outcome: str | None = None,
    topic: str | None = None,
    dedupe: bool = True,
) -> AsyncIterator[Decision]:
    """Yield decisions as they arrive. Without `group_id` every partition is read and nothing is
    committed; with one, partitions are shared with the group's other members and offsets committed.
    With `dedupe` (the default) a decision whose `decision_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in records(
        settings,
        topic or settings.topic("decisions"),
        group_id=group_id,
        from_beginning=from_beginning,
        keep=_filter(app, outcome),
        unique="decision_id" if dedupe else None,
    ):
        yield Decision.from_dict(doc)


async def deliveries(
    network: str,
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    app: str | None = None,
) -> AsyncIterator[Delivery]:
    """Yield the deliveries of one network as they arrive."""
    settings = settings or Settings.from_env()
    async for doc in records(
        settings,
        settings.topic(f"deliveries.{network}"),
        group_id=group_id,
        from_beginning=from_beginning,
        keep=_filter(app, None),
    ):
        yield Delivery.from_dict(doc)


async def consent_records(
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    app: str | None = None,
    kind: str | None = None,
    dedupe: bool = True,
) -> AsyncIterator[ConsentRecord]:
    """Yield the consent audit trail (`<prefix>consent`): every opt-out and opt-in with the rule
    and the event that made it, and every ambiguous inbound. With `dedupe`, a record whose
    `record_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in records(
        settings,
        settings.topic("consent"),
        group_id=group_id,
        from_beginning=from_beginning,
        keep=_filter(app, kind, "kind"),
        unique="record_id" if dedupe else None,
    ):
        yield ConsentRecord.from_dict(doc)


async def grant_revocations(
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    app: str | None = None,
    dedupe: bool = True,
) -> AsyncIterator[GrantRevocation]:
    """Yield sendgate's revocations of unrestricted grants (`<prefix>grants`), with the counts that
    caused each; an operator restores a grant with an `app_policy` event. With `dedupe`, a record
    whose `revocation_id` was just seen is dropped."""
    settings = settings or Settings.from_env()
    async for doc in records(
        settings,
        settings.topic("grants"),
        group_id=group_id,
        from_beginning=from_beginning,
        keep=_filter(app, None),
        unique="revocation_id" if dedupe else None,
    ):
        yield GrantRevocation.from_dict(doc)
