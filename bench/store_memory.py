"""RocksDB's memory, write and read costs: Faust's default options against sendgate's bounded ones
(`Settings.rocksdb_options()`, SENDGATE_STORE_MEMORY_MB), side by side in one process.

Eight partition databases, as a worker holds; 2,000,000 rows of ~110 bytes (conversation-like keys)
written in batches of 500, as checkpoints write them; then 200,000 reads of random keys. Memory is
what RocksDB reports for its memtables, table readers and block cache (`sendgate_store_memory_bytes`
sums the same). The two option sets run alternately, `--rounds` times each.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from sendgate.streams.config import Settings

from ._common import cli, md_table, median, out_path, write_report

NAME = "store_memory"
PROPS = ("rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem", "rocksdb.block-cache-usage")
PARTITIONS = 8


def run(options: dict, rows: int, reads: int) -> tuple[float, float, float]:
    """(rows written a second, µs a random read, RocksDB's memory in MB at the end)."""
    where = Path(tempfile.mkdtemp(prefix="sendgate-store-memory-"))
    dbs = [RocksDBOptions(**options).open(where / f"state-{p}.db") for p in range(PARTITIONS)]
    try:
        started = time.perf_counter()
        for first in range(0, rows, 500):
            batches: dict[int, rocksdict.WriteBatch] = {}
            for i in range(first, min(rows, first + 500)):
                batch = batches.get(i % PARTITIONS) or batches.setdefault(
                    i % PARTITIONS, rocksdict.WriteBatch(raw_mode=True)
                )
                batch.put(b"c:app%d\x1fu%09d" % (i % 100, i), os.urandom(100))
            for p, batch in batches.items():
                dbs[p].write(batch)
        written = rows / (time.perf_counter() - started)
        rng = random.Random(1)
        started = time.perf_counter()
        for _ in range(reads):
            i = rng.randrange(rows)
            assert dbs[i % PARTITIONS].get(b"c:app%d\x1fu%09d" % (i % 100, i)) is not None
        read_us = 1e6 * (time.perf_counter() - started) / reads
        memory = sum(db.property_int_value(p) or 0 for db in dbs for p in PROPS) / 2**20
        return written, read_us, memory
    finally:
        for db in dbs:
            db.close()
        shutil.rmtree(where)


def main() -> None:
    ap = cli(__doc__, "200,000 rows and 20,000 reads, one round", NAME)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows, reads, rounds = (200_000, 20_000, 1) if args.quick else (2_000_000, 200_000, args.rounds)
    variants = {
        "Faust's defaults (2 GB cache, 3 x 64 MB write buffers)": {},
        f"sendgate's, SENDGATE_STORE_MEMORY_MB={Settings().store_memory_mb}": Settings().rocksdb_options(),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, options in variants.items():
            results[name].append(run(options, rows, reads))
            print(name, results[name][-1], flush=True)
    table = md_table(
        ("options", "rows written a second (median)", "µs a random read (median)", "RocksDB memory at the end, MB"),
        (
            (
                name,
                f"{median([r[0] for r in runs]):,.0f}",
                f"{median([r[1] for r in runs]):.1f}",
                f"{max(r[2] for r in runs):.1f}",
            )
            for name, runs in results.items()
        ),
    )
    write_report(
        out_path(args.out, args.quick, NAME),
        "sendgate: RocksDB's memory, write and read costs",
        "python -m bench.store_memory",
        [f"{PARTITIONS} partition databases, {rows:,} rows of ~110 B, {reads:,} random reads, {rounds} round(s)"],
        ["## Side by side\n\n" + table],
    )


if __name__ == "__main__":
    main()
