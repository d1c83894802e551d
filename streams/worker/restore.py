"""Restoring the `state` table's local stores from its changelog, before the worker joins its group.

Why. Faust restores a changelog record by record (a wait_for, debug formatting and offset
bookkeeping each: ~4,000-8,000 rows/s), so a worker on an empty disk took minutes to decide again
at a million userkeys. This reads every partition of the changelog in large fetches and writes
RocksDB write batches, keeping the rule of streams/worker/checkpoint.py: rows are applied only up to a commit
record, each checkpoint in one write batch together with the store's persisted offset (the
commit record's), so Faust itself then reads only what follows the last commit record, where an
unfinished checkpoint's rows are dropped as orphans as before.

Every partition is restored, not only those the worker will be assigned (it does not know them
yet): a later rebalance then finds a warm store and reads only the changelog written since.
Under exactly_once the changelog holds transactional records Faust must filter, so this is skipped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions, Store

from ..config import Settings
from ..kafka import end_offsets, read_log
from .checkpoint import COMMIT, STATE

log = logging.getLogger("sendgate.restore")


def store_path(settings: Settings, partition: int) -> Path:
    """Where Faust keeps the `state` table's store of `partition` (its tabledir, v1)."""
    return Path(settings.data_dir) / settings.group_id / "v1" / "tables" / f"{STATE}-{partition}.db"


async def restore_state(settings: Settings) -> tuple[int, int, float]:
    """Bring every partition's local store up to its changelog's last commit record. Returns
    (rows applied, records read, seconds)."""
    started = time.monotonic()
    topic = settings.changelog_topic(STATE)
    ends = await end_offsets(settings, topic)
    dbs, start = {}, {}
    for partition in ends:
        path = store_path(settings, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = dbs[partition] = RocksDBOptions().open(path)
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
            db = dbs[partition] = RocksDBOptions().open(path)
            start[partition] = 0
    held: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
    applied = read = 0
    try:
        async for record in read_log(settings, topic, ends, start=start):
            read += 1
            rows = held[record.partition]
            rows.append((record.key, record.value))
            if record.key.startswith(COMMIT):
                batch = rocksdict.WriteBatch(raw_mode=True)
                for key, value in rows:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
                batch.put(Store.offset_key, str(record.offset).encode())
                dbs[record.partition].write(batch)
                applied += len(rows)
                rows.clear()
    finally:
        for db in dbs.values():
            db.close()
    return applied, read, time.monotonic() - started
