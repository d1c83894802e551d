"""Restoring the `state` table's local stores from its changelog, before the worker joins its group.

Why. Faust restores a changelog record by record (a wait_for, debug formatting and offset
bookkeeping each: ~4,000-8,000 rows/s), so a worker on an empty disk took minutes to decide again
at a million userkeys. This reads every partition of the changelog in large fetches and writes
RocksDB write batches, keeping the rule of streams/worker/checkpoint.py (`CheckpointLog`): a commit
record applies its own checkpoint's rows, each checkpoint in one write batch together with the
store's persisted offset (the commit record's), so Faust itself then reads only what follows the
last commit record, where an unfinished checkpoint's rows are dropped as orphans as before.

Every partition is restored, not only those the worker will be assigned (it does not know them
yet): a later rebalance then finds a warm store and reads only the changelog written since.
Under exactly_once the changelog holds transactional records Faust must filter, so this is skipped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions, Store

from ..config import Settings
from ..kafka import end_offsets, read_log
from .checkpoint import STATE, CheckpointLog, Commit, checkpoint_token, commit_key

log = logging.getLogger("sendgate.restore")


def _epoch(db: rocksdict.Rdict, partition: int) -> int:
    """The epoch of the store's last commit record, from which its changelog is read on."""
    raw = db.get(commit_key(partition))
    return Commit.from_bytes(raw).epoch if raw is not None else 0


def store_path(settings: Settings, partition: int) -> Path:
    """Where Faust keeps the `state` table's store of `partition` (its tabledir, v1)."""
    return Path(settings.data_dir) / settings.group_id / "v1" / "tables" / f"{STATE}-{partition}.db"


async def restore_state(settings: Settings, orphans: dict[int, set[bytes]]) -> tuple[int, int, float]:
    """Bring every partition's local store up to its changelog's last commit record. Returns
    (rows applied, records read, seconds); adds to `orphans` (`StateTable.orphans`) the keys of
    rows no commit record committed that are followed by one that did (a zombie's), which the
    partition's next checkpoint rewrites."""
    started = time.monotonic()
    topic = settings.changelog_topic(STATE)
    ends = await end_offsets(settings, topic)
    dbs, start = {}, {}
    for partition in ends:
        path = store_path(settings, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = dbs[partition] = RocksDBOptions(**settings.rocksdb_options()).open(path)
        persisted = db.get(Store.offset_key)
        start[partition] = int(persisted) + 1 if persisted is not None else 0
        if start[partition] > ends[partition]:
            # Ahead of its changelog: the topic was deleted and created again since this store
            # was written (never by sendgate), so the store is another log's. Start it afresh.
            log.warning(
                "the local store of %s[%d] has rows up to offset %d, but the changelog ends at %d: "
                "it was written from an older copy of the topic; it is removed and restored",
                topic,
                partition,
                start[partition] - 1,
                ends[partition],
            )
            db.close()
            rocksdict.Rdict.destroy(str(path))
            db = dbs[partition] = RocksDBOptions(**settings.rocksdb_options()).open(path)
            start[partition] = 0
    logs = {p: CheckpointLog(_epoch(db, p)) for p, db in dbs.items()}
    applied = read = 0
    try:
        async for record in read_log(settings, topic, ends, start=start):
            read += 1
            p = record.partition
            rows, dropped = logs[p].read(
                (record.key, record.value), record.key, record.value, checkpoint_token(record.headers)
            )
            if dropped:
                orphans.setdefault(p, set()).update(key for key, _ in dropped)
            if rows:
                batch = rocksdict.WriteBatch(raw_mode=True)
                for key, value in rows:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
                batch.put(Store.offset_key, str(record.offset).encode())
                dbs[p].write(batch)
                applied += len(rows)
    finally:
        for db in dbs.values():
            db.close()
    return applied, read, time.monotonic() - started
