"""`sendgate rebuild`: recompute the live worker's tables from the event log alone.

With the workers stopped it drops the changelog topics and local stores of the live app id,
runs the gate over `<prefix>events` up to the group's committed offsets with every output
suppressed, and writes the resulting rows to fresh changelog topics, each row to the partition
of the events that produced it (where Faust would have written it), and then each partition's
commit record (streams/state.py). The group's offsets are left as they were, so the workers
resume where they stopped, recover the tables from the changelogs and emit no decision twice.
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sendgate.models.events import InvalidEvent
from sendgate.models.gate import JUNK, MemoryStore
from sendgate.models.policy import Policy

from .config import ConfigError, Settings
from .log import committed_offsets, read_log
from .progress import Progress
from .state import APPS, HOME, PREFIX, STATE, commit_key


class RowsByPartition(MemoryStore):
    """A MemoryStore that remembers which events partition last wrote each row."""

    def __init__(self) -> None:
        super().__init__()
        self.partition = 0
        self.partition_of: dict[tuple[str, bytes], int] = {}

    def set(self, table: str, key: bytes, value: bytes) -> None:
        super().set(table, key, value)
        self.partition_of[(table, key)] = 0 if table == JUNK else self.partition


async def _recreate_changelogs(settings: Settings) -> None:
    names = {settings.changelog_topic(STATE): settings.partitions}
    names[settings.changelog_topic(JUNK)] = names[settings.changelog_topic(APPS)] = 1
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await admin.start()
    try:
        groups = await admin.describe_consumer_groups([settings.app_id])
        members = [m for g in groups for grp in g.groups for m in grp[5]] if groups else []
        if members:
            raise ConfigError(f"consumer group {settings.app_id} has {len(members)} active member(s): "
                              f"stop every worker before rebuilding")
        existing = set(await admin.list_topics()) & set(names)
        if existing:
            await admin.delete_topics(sorted(existing))
            deadline = time.monotonic() + 60
            while set(await admin.list_topics()) & existing:
                if time.monotonic() > deadline:
                    raise ConfigError(f"Kafka did not delete {sorted(existing)} within 60 s")
                await asyncio.sleep(0.2)
        await admin.create_topics([NewTopic(name, partitions, settings.replication_factor,
                                            topic_configs={"cleanup.policy": "compact"})
                                   for name, partitions in sorted(names.items())])
    finally:
        await admin.close()


async def rebuild(settings: Settings, policy: Policy) -> dict[str, int]:
    """Rebuild every table; returns the number of rows written per table."""
    events_topic = settings.topic("events")
    until = await committed_offsets(settings, settings.app_id, events_topic)
    await _recreate_changelogs(settings)
    shutil.rmtree(Path(settings.data_dir) / settings.app_id, ignore_errors=True)
    gate, store = settings.gate(policy), RowsByPartition()
    homes: dict[str, int] = {}  # app -> the partition its log lives on (the apps table)
    bar = Progress("rebuild", sum(until.values()))
    async for record in read_log(settings, events_topic, until, lambda done, total: bar.update(done)):
        store.partition = record.partition
        try:
            event = gate.decode(record.key, record.value, record.timestamp)
        except InvalidEvent:
            continue  # dead-lettered by the live worker already; it changed no state
        if homes.setdefault(event.app, record.partition) != record.partition:
            continue  # on a second partition of its app: dead-lettered by the live worker too
        gate.handle(event, store, record.timestamp)
    bar.finish()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20,
                                enable_idempotence=True, **settings.kafka_options())
    await producer.start()
    written: dict[str, int] = {}
    try:
        for table, rows in store.tables.items():
            if table == JUNK:
                topic, prefix = settings.changelog_topic(JUNK), b""
            else:
                topic, prefix = settings.changelog_topic(STATE), PREFIX[table]
            for key, value in rows.items():
                await producer.send(topic, key=prefix + key, value=value, partition=store.partition_of[(table, key)])
            written[table] = len(rows)
        for app, partition in homes.items():
            home = str(partition).encode()
            await producer.send(settings.changelog_topic(APPS), key=app.encode(), value=home, partition=0)
            await producer.send(settings.changelog_topic(STATE), key=HOME + app.encode(), value=home,
                                partition=partition)
        written[APPS] = len(homes)
        for partition, end in until.items():  # after every row: the tables hold the log up to here
            if end > 0:
                await producer.send(settings.changelog_topic(STATE), key=commit_key(partition),
                                    value=str(end - 1).encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"rebuild: {sum(until.values())} events up to the committed offsets of group {settings.app_id}; "
          f"rows: {written}", file=sys.stderr)
    return written
