"""restore.py: a worker's state stores are restored from the changelog in write batches, whole
checkpoints only (streams/worker/checkpoint.py), before Faust reads the tail after the last commit record."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.stores.rocksdb import RocksDBOptions, Store

from sendgate.streams.kafka import ensure_topics
from sendgate.streams.worker.restore import restore_state, store_path
from sendgate.streams.worker.checkpoint import CHECKPOINT_HEADER, STATE, Commit, commit_key


def write_changelog(settings, records: list[tuple]) -> dict[int, list[int]]:
    """Produce (partition, key, value[, checkpoint token]) records to the state changelog; returns
    their offsets."""

    async def run() -> dict[int, list[int]]:
        topic = settings.changelog_topic(STATE)
        await ensure_topics(settings, [topic], compact=True)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        offsets: dict[int, list[int]] = {}
        try:
            for partition, key, value, *token in records:
                headers = [(CHECKPOINT_HEADER, token[0])] if token else None
                meta = await producer.send_and_wait(topic, value, key=key, partition=partition, headers=headers)
                offsets.setdefault(partition, []).append(meta.offset)
        finally:
            await producer.stop()
        return offsets

    return asyncio.run(run())


def stored(settings, partition: int) -> dict[bytes, bytes]:
    db = RocksDBOptions().open(store_path(settings, partition))
    try:
        return dict(db.items())
    finally:
        db.close()


def test_whole_checkpoints_are_restored_with_their_offset_and_the_tail_is_left_to_faust(settings):
    offsets = write_changelog(
        settings,
        [
            (0, b"u:a\x1fu1", b"one"),
            (0, b"u:a\x1fu2", b"two"),
            (0, commit_key(0), b"10"),
            (0, b"u:a\x1fu2", None),
            (0, b"c:a\x1fs\x1fu1", b"conv"),
            (0, commit_key(0), b"12"),
            (0, b"u:a\x1fu3", b"orphan"),  # after the last commit record: an unfinished checkpoint
            (1, b"u:b\x1fu9", b"orphan too"),  # a partition without any commit record
        ],
    )
    applied, read, _ = asyncio.run(restore_state(settings, {}))
    assert (applied, read) == (6, 8)
    rows = stored(settings, 0)
    assert rows.pop(Store.offset_key) == str(offsets[0][5]).encode()  # the last commit record's offset
    assert rows == {b"u:a\x1fu1": b"one", b"c:a\x1fs\x1fu1": b"conv", commit_key(0): b"12"}
    assert stored(settings, 1) == {}  # nothing committed: Faust reads the partition from its start

    # A second start reads only what follows the persisted offsets.
    write_changelog(settings, [(0, b"u:a\x1fu3", b"three"), (0, commit_key(0), b"14")])
    applied, read, _ = asyncio.run(restore_state(settings, {}))
    assert (applied, read) == (3, 4)  # u3's orphan, its rewrite and the commit record; partition 1 again
    assert stored(settings, 0)[b"u:a\x1fu3"] == b"three"


def test_a_store_ahead_of_a_changelog_created_again_is_restored_afresh(settings):
    write_changelog(settings, [(0, b"u:a\x1fu1", b"old"), (0, b"u:a\x1fu2", b"old"), (0, commit_key(0), b"10")])
    asyncio.run(restore_state(settings, {}))
    assert stored(settings, 0)[b"u:a\x1fu2"] == b"old"

    async def delete_changelog() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            topic = settings.changelog_topic(STATE)
            await admin.delete_topics([topic])
            deadline = time.monotonic() + 60
            while topic in await admin.list_topics():
                assert time.monotonic() < deadline, "Kafka did not delete the changelog in 60 s"
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    asyncio.run(delete_changelog())
    write_changelog(settings, [(0, b"u:a\x1fu1", b"new"), (0, commit_key(0), b"3")])  # ends at 2, the store at 3

    applied, read, _ = asyncio.run(restore_state(settings, {}))
    assert (applied, read) == (2, 2)
    rows = stored(settings, 0)
    assert rows.pop(Store.offset_key) == b"1"
    assert rows == {b"u:a\x1fu1": b"new", commit_key(0): b"3"}  # nothing of the old store is left


def test_a_zombie_s_rows_and_late_checkpoint_are_not_restored_and_their_keys_are_rewritten(settings):
    """The fast restore reads the changelog as recovery does (checkpoint.py, `CheckpointLog`): the
    owner's commit record commits only its own rows, and a zombie's late commit record, below the
    owner's epoch, commits nothing; the zombie's keys are handed to the worker to rewrite."""
    owner, zombie = b"A" * 8 + bytes(7) + b"\x01", b"Z" * 8 + bytes(7) + b"\x01"
    write_changelog(
        settings,
        [
            (0, b"u:a\x1fu1", b"owner", owner),
            (0, b"s:a\x1fs1", b"zombie head", zombie),  # landed between the owner's rows and commit
            (0, commit_key(0), Commit(10, owner, 5).to_bytes()),
            (0, b"u:a\x1fu2", b"zombie", zombie),
            (0, commit_key(0), Commit(8, zombie, 4).to_bytes()),  # the zombie's whole late checkpoint
        ],
    )
    orphans: dict[int, set[bytes]] = {}
    applied, read, _ = asyncio.run(restore_state(settings, orphans))
    rows = stored(settings, 0)
    rows.pop(Store.offset_key)
    assert rows == {b"u:a\x1fu1": b"owner", commit_key(0): Commit(10, owner, 5).to_bytes()}
    assert orphans == {0: {b"s:a\x1fs1", b"u:a\x1fu2"}} and (applied, read) == (2, 5)
