"""The state table's RocksDB databases keep their memory within SENDGATE_STORE_MEMORY_MB each:
Faust's defaults (a 2 GB block cache and three 64 MB write buffers a database) let a worker's
memory grow with its state (the 30-minute soak: RocksDB +151 MB in 30 minutes)."""

from __future__ import annotations

import os

from sendgate.streams.config import Settings
from sendgate.streams.worker.app import build_worker
from sendgate.streams.worker.restore import store_path

MB = 1024 * 1024


def test_a_partition_database_holds_at_most_its_share_of_memory_however_much_is_written(tmp_path):
    settings = Settings(data_dir=str(tmp_path), web_enabled=False, auth=False, store_memory_mb=8)
    worker = build_worker(settings, ticker=False)  # never started: no broker needed
    store = worker.store.table.data
    db = store.rocksdb_options.open(store_path(settings, 0))  # as Faust opens a partition's
    try:
        row = os.urandom(400)
        for i in range(60_000):  # 24 MB of rows: under Faust's defaults all of it stays in a memtable
            db[b"k%08d" % i] = row
        for i in range(0, 60_000, 7):
            assert db[b"k%08d" % i] == row
        memtables = db.property_int_value("rocksdb.cur-size-all-mem-tables")
        cache = db.property_int_value("rocksdb.block-cache-capacity")
    finally:
        db.close()
    assert cache == 4 * MB  # half of the database's 8 MB
    assert memtables <= 2 * 2 * MB + MB  # two write buffers of 2 MB (and a block of slack)


def test_the_bound_is_a_setting_with_a_floor():
    assert Settings.from_env({"SENDGATE_STORE_MEMORY_MB": "64"}).rocksdb_options() == {
        "block_cache_size": 32 * MB,
        "write_buffer_size": 16 * MB,
        "max_write_buffer_number": 2,
    }
    assert Settings().store_memory_mb == 32
    try:
        Settings.from_env({"SENDGATE_STORE_MEMORY_MB": "1"})
    except Exception as e:  # ConfigError: names the variable
        assert "SENDGATE_STORE_MEMORY_MB" in str(e)
    else:
        raise AssertionError("a 1 MB store was accepted")
