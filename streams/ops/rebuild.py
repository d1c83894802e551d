"""`sendgate rebuild`: recompute the live worker's tables from the event log alone.

With the workers stopped it runs the gate over `<prefix>events` up to the group's committed
offsets with every output suppressed, keeping the rows it computes in a RocksDB store of its own
(a scratch directory, removed after), not in memory. It then writes them over the existing
changelogs, where the old rows stay valid until it is done:

1. every computed row, to the partition of the events that produced it (where the worker writes it);
2. a tombstone for every row of the old changelogs the new tables do not hold (in that partition);
3. last, each partition's commit record (streams/worker/checkpoint.py).

Recovery applies rows only up to a commit record, so until (3) the old state is what every worker
recovers: a rebuild that dies half-way changed nothing (its rows are orphans, dropped and rewritten
by the next checkpoint; run it again). The changelogs are never deleted, so their offsets only
grow: a worker anywhere, whatever local store it kept, reads the rebuilt rows and tombstones after
its persisted offset and holds exactly the new tables. The group's offsets are left as they were,
so the workers resume where they stopped and emit no decision twice.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import rocksdict
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sendgate.models.events import InvalidEvent
from sendgate.models.gate import MemoryStore, Table
from sendgate.models.policy import Policy

from ..kafka import partitions_of
from ..config import ConfigError, Settings
from ..identity import check_userkey_secret, write_fingerprint
from ..kafka import committed_offsets, end_offsets, read_log
from ..progress import Progress
from ..worker.checkpoint import APPS, COMMIT, HOME, KIND, PREFIX, STATE, commit_key


class SpooledRows(MemoryStore):
    """The gate's Store for a rebuild: rows in a RocksDB store on disk, each with the events
    partition that last wrote it (the changelog partition it belongs to), keyed as in the
    changelog: by its kind's prefix. (Each partition's junk index, bounded by the policy, is also
    kept decoded in memory, as in MemoryStore.)"""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.rows = {STATE: _open(path / STATE)}
        self.removed = _open(path / "removed")  # the old rows `_old_rows_to_remove` has tombstoned

    @staticmethod
    def _where(table: Table, key: bytes) -> tuple[str, bytes]:
        return STATE, PREFIX[table] + key

    def get(self, table: Table, key: bytes) -> bytes | None:
        changelog, row = self._where(table, key)
        value = self.rows[changelog].get(row)
        return None if value is None else value[2:]

    def set(self, table: Table, key: bytes, value: bytes) -> None:
        changelog, row = self._where(table, key)
        self.put(changelog, row, self.partition, value)

    def put(self, changelog: str, row: bytes, partition: int, value: bytes) -> None:
        self.rows[changelog][row] = partition.to_bytes(2, "big") + value

    def delete(self, table: Table, key: bytes) -> None:
        changelog, row = self._where(table, key)
        self.rows[changelog].delete(row)

    def partition_of(self, changelog: str, row: bytes) -> int | None:
        """The changelog partition `row` belongs to, or None if the new tables do not hold it."""
        value = self.rows[changelog].get(row)
        return None if value is None else int.from_bytes(value[:2], "big")

    def items(self, changelog: str):
        for row, value in self.rows[changelog].items():
            yield row, int.from_bytes(value[:2], "big"), value[2:]

    def close(self) -> None:
        for db in (*self.rows.values(), self.removed):
            db.close()


def _open(path: Path) -> rocksdict.Rdict:
    return rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))


async def _check_stopped_and_declare(settings: Settings, partitions: dict[str, int]) -> None:
    """Refuse while any worker is in the group; create a changelog that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await admin.start()
    try:
        groups = await admin.describe_consumer_groups([settings.group_id])
        members = [m for g in groups for grp in g.groups for m in grp[5]] if groups else []
        if members:
            raise ConfigError(
                f"consumer group {settings.group_id} has {len(members)} active member(s): "
                f"stop every worker before rebuilding"
            )
        missing = set(partitions) - set(await admin.list_topics())
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name, partitions[name], settings.replication_factor, topic_configs={"cleanup.policy": "compact"}
                    )
                    for name in sorted(missing)
                ]
            )
    finally:
        await admin.close()
    for name in sorted(missing):  # a new topic has no leader for a moment; its end offsets are read next
        await partitions_of(settings, name, 30)


async def rebuild(settings: Settings, policy: Policy, new_userkey_secret: bool = False) -> dict[str, int]:
    """Rebuild every table; returns the number of rows written per table, and of old rows removed
    ("removed"). `new_userkey_secret`: the state is rebuilt under this SENDGATE_USERKEY_SECRET,
    whatever secret built it (the way to change the secret); otherwise the two must agree."""
    if not new_userkey_secret:
        await check_userkey_secret(settings, "rebuild")
    events_topic = settings.topic("events")
    changelogs = {STATE: settings.changelog_topic(STATE), APPS: settings.changelog_topic(APPS)}
    await _check_stopped_and_declare(settings, {changelogs[STATE]: settings.partitions, changelogs[APPS]: 1})
    until = await committed_offsets(settings, settings.group_id, events_topic)
    old_ends = {name: await end_offsets(settings, topic) for name, topic in changelogs.items()}
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="sendgate-rebuild-", dir=settings.data_dir))
    store = SpooledRows(scratch)
    try:
        homes = await _decide(settings, policy, store, events_topic, until)
        written = await _write(settings, store, homes, changelogs, old_ends, until)
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if new_userkey_secret:
        await write_fingerprint(settings)
    print(
        f"rebuild: {sum(until.values())} events up to the committed offsets of group {settings.group_id}; "
        f"rows: {written}",
        file=sys.stderr,
    )
    return written


async def _decide(
    settings: Settings, policy: Policy, store: SpooledRows, events_topic: str, until: dict[int, int]
) -> dict[str, int]:
    """Run the gate over the log into `store`; returns the apps' homes (app -> events partition)."""
    gate = settings.gate(policy)
    homes: dict[str, int] = {}
    bar = Progress("rebuild", sum(until.values()))
    async for record in read_log(settings, events_topic, until, lambda done, total: bar.update(done)):
        store.partition = record.partition
        try:
            event = gate.admit(
                record.key, record.value, record.timestamp, record.partition, homes.setdefault, record.headers, store
            )
        except InvalidEvent:
            continue  # dead-lettered by the live worker already; it changed no state
        gate.handle(event, store, record.timestamp)
    bar.finish()
    for app, partition in homes.items():  # a state row too: the home travels in the app's checkpoint
        store.put(STATE, HOME + app.encode(), partition, str(partition).encode())
    return homes


async def _write(
    settings: Settings,
    store: SpooledRows,
    homes: dict[str, int],
    changelogs: dict[str, str],
    old_ends: dict[str, dict[int, int]],
    until: dict[int, int],
) -> dict[str, int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=20,
        enable_idempotence=True,
        **settings.kafka_options(),
    )
    await producer.start()
    written: dict[str, int] = {}
    touched = {p for p, end in until.items() if end > 0}  # state partitions that get a commit record
    try:
        for row, partition, value in store.items(STATE):
            await producer.send(changelogs[STATE], key=row, value=value, partition=partition)
            kind = KIND.get(row[:2], "homes")
            written[kind] = written.get(kind, 0) + 1
        for app, partition in homes.items():
            await producer.send(changelogs[APPS], key=app.encode(), value=str(partition).encode(), partition=0)
        written[APPS] = len(homes)
        removed = 0
        async for topic, partition, key in _old_rows_to_remove(settings, store, homes, changelogs, old_ends):
            await producer.send(topic, key=key, value=None, partition=partition)
            if topic == changelogs[STATE]:
                touched.add(partition)
            removed += 1
        written["removed"] = removed
        await producer.flush()  # every row and tombstone is written before any commit record
        for partition in sorted(touched):  # last: the tables now hold the log up to here
            await producer.send(
                changelogs[STATE],
                key=commit_key(partition),
                value=str(until.get(partition, 0) - 1).encode(),
                partition=partition,
            )
        await producer.flush()
    finally:
        await producer.stop()
    return written


async def _old_rows_to_remove(
    settings: Settings,
    store: SpooledRows,
    homes: dict[str, int],
    changelogs: dict[str, str],
    old_ends: dict[str, dict[int, int]],
):
    """(topic, partition, key) of each row of the old changelogs that the new tables do not hold
    in that partition, once each. Reads the old changelogs as a stream."""
    for name, topic in changelogs.items():
        async for record in read_log(settings, topic, old_ends[name]):
            key = record.key
            if key is None or (name == STATE and key.startswith(COMMIT)):
                continue
            if name == APPS:
                keep = key.decode(errors="replace") in homes
            else:
                keep = store.partition_of(name, key) == record.partition
            mark = name.encode() + b"\x00" + record.partition.to_bytes(2, "big") + key
            if keep or mark in store.removed:
                continue
            store.removed[mark] = b""
            yield topic, record.partition, key
