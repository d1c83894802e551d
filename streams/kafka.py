"""Kafka plumbing every room shares: starting a client with a clear error, creating topics,
waiting for partitions, and reading a log directly (offsets, records).

Replay and rebuild read the log from offset 0 with `read_log`, so they need no durable state of
their own: no consumer group, no changelog, no local store, and nothing a live worker could notice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
    for_code,
)

from .config import BrokerUnreachable, ConfigError, KafkaAuthError, Settings


async def start_client(client: Any, settings: Settings) -> None:
    """`client.start()` for a client that is the first to reach the broker. aiokafka reports a
    refused SASL login as a bare "Unable to bootstrap" (the reason only goes to its log), so on
    that error one direct connection finds out whether the credentials were the cause."""
    try:
        await client.start()
    except KafkaConnectionError:
        if settings.security_protocol.startswith("SASL_"):
            for address in settings.bootstrap.split(","):
                host, port = address.strip().rsplit(":", 1)
                try:
                    conn = await create_conn(host, int(port), request_timeout_ms=10_000, **settings.kafka_options())
                except (SaslAuthenticationFailed, UnsupportedSaslMechanismError) as exc:
                    raise KafkaAuthError(
                        f"authentication failed at {host}:{port} for user {settings.sasl_username!r}: "
                        f"{exc.args[0] if exc.args else exc} (check SENDGATE_SASL_MECHANISM, "
                        f"SENDGATE_SASL_USERNAME and SENDGATE_SASL_PASSWORD)"
                    ) from None
                except (OSError, KafkaError, asyncio.TimeoutError):
                    continue  # not a login problem: the original error stands
                conn.close()
        raise BrokerUnreachable(unreachable(settings)) from None


def unreachable(settings: Settings) -> str:
    """The one line a user sees when no broker answers at the configured address."""
    return (
        f"cannot reach Kafka at {settings.bootstrap}: start one with `sendgate broker`, or point "
        f"SENDGATE_BOOTSTRAP (or -b/--bootstrap-server) at a running broker"
    )


async def ensure_topics(
    settings: Settings, names: list[str], partitions: int | None = None, compact: bool = False
) -> None:
    """Create missing topics (the broker does not auto-create), with the configured partition count
    unless `partitions` is given; `compact` for changelogs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await start_client(admin, settings)
    compaction = {"cleanup.policy": "compact"} if compact else {}
    try:
        missing = set(names) - set(await admin.list_topics())
        if missing:
            try:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions or settings.partitions,
                            settings.replication_factor,
                            topic_configs={**compaction, **settings.topic_configs(name)},
                        )
                        for name in sorted(missing)
                    ]
                )
            except TopicAlreadyExistsError:  # another process won the race
                return
            # the response holds an error per topic; one that exists already is another process's win
            refused = [
                f"{name}: {message or for_code(code).__name__}"
                for name, code, *rest in response.topic_errors
                for message in [rest[0] if rest else None]
                if code not in (0, TopicAlreadyExistsError.errno)
            ]
            if refused:
                raise ConfigError(
                    f"the broker at {settings.bootstrap} refused to create {'; '.join(refused)} "
                    f"(SENDGATE_REPLICATION_FACTOR={settings.replication_factor})"
                )
    finally:
        await admin.close()


async def check_events_clock(settings: Settings) -> None:
    """Refuse to run with SENDGATE_EVENTS_TIMESTAMP_TYPE=LogAppendTime over an events topic that
    keeps its producers' timestamps: the worker would trust clocks the operator said not to."""
    if settings.events_timestamp_type != "LogAppendTime":
        return
    topic = settings.topic("events")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await start_client(admin, settings)
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    refused = [for_code(code).__name__ for code, _, _, name, _ in response.resources if name == topic and code]
    if refused:  # e.g. TopicAuthorizationFailedError: no DescribeConfigs ACL (docs/security-and-privacy.md, "Kafka ACLs per role")
        raise ConfigError(
            f"SENDGATE_EVENTS_TIMESTAMP_TYPE=LogAppendTime, but the configs of topic {topic} "
            f"cannot be read at {settings.bootstrap}: {refused[0]}"
        )
    values = {entry[0]: entry[1] for _, _, _, name, entries in response.resources if name == topic for entry in entries}
    actual = values.get("message.timestamp.type")
    if actual != "LogAppendTime":
        raise ConfigError(
            f"SENDGATE_EVENTS_TIMESTAMP_TYPE=LogAppendTime, but topic {topic} has "
            f"message.timestamp.type={actual}: its records keep the producers' timestamps. Set it "
            f"(kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config "
            f"message.timestamp.type=LogAppendTime) or unset the variable"
        )


async def partitions_of(settings: Settings, topic: str, wait_s: float) -> list[int]:
    """The partition ids of `topic`, waiting up to `wait_s` until it exists and every partition has
    a leader (right after creation it has none, and a producer sending then can stall in retries)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await start_client(admin, settings)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            for described in await admin.describe_topics([topic]):
                partitions = described.get("partitions") or []
                if described.get("error_code") == 0 and partitions and all(p["leader"] >= 0 for p in partitions):
                    return [p["partition"] for p in partitions]
            if time.monotonic() > deadline:
                raise LookupError(f"topic {topic} does not exist on {settings.bootstrap}; is a worker running?")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


@dataclass(slots=True)
class LogRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # ms
    headers: tuple = ()  # (name, bytes) pairs, as aiokafka gives them


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The current end (next offset to be written) of every partition of `topic`."""
    partitions = await partitions_of(settings, topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, **settings.kafka_options()
    )
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


async def read_log(
    settings: Settings,
    topic: str,
    until: dict[int, int],
    progress: Callable[[int, int], None] | None = None,
    start: dict[int, int] | None = None,
) -> AsyncIterator[LogRecord]:
    """Every record of `topic` from offset `start[partition]` (default 0) up to (not including)
    `until[partition]`, each partition in order. Partitions interleave as they are fetched, as they
    do in a live worker."""
    start = start or {}
    todo = {p: end for p, end in until.items() if end > start.get(p, 0)}
    if not todo:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
        **settings.kafka_options(),
    )
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
                    yield LogRecord(m.partition, m.offset, m.key, m.value, m.timestamp, m.headers)
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


async def stop_reader(task: asyncio.Task | None, consumer: AIOKafkaConsumer) -> None:
    """Cancel a task that reads from `consumer` in the background, then stop the consumer (in that
    order: a fetch in flight on a stopped consumer raises instead of ending)."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await consumer.stop()
