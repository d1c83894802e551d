"""A worker whose local store's disk is full goes on deciding (issue 27: the fault soak saw a worker's
partitions decide nothing for 93 s around a full disk; every batch failed until it was freed).

The worker's store dir is a 128 MB tmpfs (root only: the test is skipped otherwise), filled with one
file while the worker runs. Contract (streams/worker/checkpoint.py, `Unwritten`; docs/guarantees.md):

- while its store refuses writes, the worker decides on: the rows of each batch, already in the
  changelog, are held in memory over the store, and its log says the store refuses writes;
- once the disk has room again the store takes them, and a worker started again on that store
  decides as one uninterrupted run would: a retried request gets its first decision again, so the
  rows decided while the disk was full reached the store (or its recovery);
- its standby copies of the other worker's partitions, stopped while the store refused writes, read
  their records again as soon as it takes writes, not at the next rebalance: a failover to it then
  reads seconds of changelog, not minutes (the 30-minute soak: 331,249 records, 92 s without a decision).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import (
    DEADLINE_S,
    T0,
    DecisionWatcher,
    create_events_topic,
    ev,
    send_events,
    uninterrupted,
    wait_for_group,
    wait_for_log,
)

APP = "fulldisk"
USERS = 20


def fill(directory: Path) -> Path:
    """One file taking every free byte of `directory`'s filesystem: most of it at once (fallocate;
    the worker may write meanwhile), the last MB a page at a time until the filesystem refuses."""
    path = directory / "fill.bin"
    with open(path, "wb", buffering=0) as fh:
        st = os.statvfs(directory)
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - (1 << 20))
        fh.seek(0, os.SEEK_END)
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
    assert os.statvfs(directory).f_bavail == 0
    return path


def sends(first: int, count: int, app: str = APP) -> list[dict]:
    """`count` sends to opted-in users, each with its own request id and text, one event-time second apart."""
    one = {"app": app, "sender": "s1", "network": "sms"}
    return [
        ev("send", request_id=f"r{i}", userkey=f"u{i % USERS}", text=f"Code {i:06d}", ts=T0 + 60_000 + i * 1000, **one)
        for i in range(first, first + count)
    ]


def opt_ins(app: str = APP) -> list[dict]:
    return [ev("opt_in", event_id=f"in-{u}", app=app, userkey=f"u{u}", ts=T0 + u) for u in range(USERS)]


def standbys_behind(worker) -> dict[str, float]:
    """sendgate_standby_records_behind of a worker, by partition."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.web_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        s.labels["partition"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "sendgate_standby_records_behind"
        for s in family.samples
    }


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "store"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_worker_whose_store_disk_is_full_decides_on_and_its_store_gets_the_rows_after(settings, workers, tmpfs):
    settings = settings.with_(data_dir=str(tmpfs), partitions=2)
    create_events_topic(settings)
    worker = workers.start(settings)
    setup = opt_ins()
    before, full, after = sends(0, 50), sends(50, 200), sends(250, 50)
    with DecisionWatcher(settings) as watcher:
        send_events(settings, setup + before)
        watcher.wait_until(lambda d: len(d) >= len(before))
        filler = fill(tmpfs)
        for chunk in (full[i : i + 50] for i in range(0, len(full), 50)):
            # each chunk a batch of its own at least. The old worker sent the first one's decisions,
            # failed to write its rows, and decided it again and again until the disk had room.
            send_events(settings, chunk)
            ids = {e["request_id"] for e in chunk}
            watcher.wait_until(lambda d: ids <= {x["request_id"] for x in d}, timeout=60)
        wait_for_log(worker, 0, re.compile("the local store refused a write"))
        filler.unlink()
        wait_for_log(worker, 0, re.compile("the local store took the [0-9]+ row"))  # tried again every second
        send_events(settings, after)
        watcher.wait_until(lambda d: len(d) >= len(before) + len(full) + len(after))
        assert worker.stop() == 0
        workers.start(settings)  # on the same store
        retried = full[::10]  # decided while the disk was full: their first decision again
        send_events(settings, retried)
        live = watcher.wait_until(lambda d: len(d) >= len(before) + len(full) + len(after) + len(retried))
    expected = uninterrupted(setup + before + full + after + retried)
    assert [(d["decision_id"], d["outcome"]) for d in live] == [(d["decision_id"], d["outcome"]) for d in expected]


def test_standby_copies_stopped_by_a_full_disk_catch_up_once_it_has_room(settings, workers, tmpfs, tmp_path):
    """Worker B's store is on the tmpfs; two apps live on each partition, so B holds a standby copy
    of A's partition, and both are written. While B's disk is full that copy stops; once B's store takes
    writes again it reads the records it missed at once (the old worker waited for the next
    rebalance), and after A is killed B decides A's partition as one uninterrupted run would."""
    settings = settings.with_(partitions=2)
    create_events_topic(settings)
    a = workers.start(settings.with_(data_dir=str(tmp_path / "store-a")))
    b = workers.start(settings.with_(data_dir=str(tmpfs)))
    wait_for_group(settings, lambda state, members: state == "Stable" and sorted(map(len, members.values())) == [1, 1])
    apps = [f"{APP}-{n}" for n in (0, 2, 1, 4)]  # keyed by app: partitions 0, 0, 1, 1 (murmur2, as Java's)
    setup = [e for app in apps for e in opt_ins(app)]
    before = [e for app in apps for e in sends(0, 10, app)]
    full: list[dict] = []
    with DecisionWatcher(settings) as watcher:
        send_events(settings, setup + before)
        watcher.wait_until(lambda d: len(d) >= len(before))
        filler = fill(tmpfs)
        stops = re.compile("the standby copy stops")
        while not stops.search(b.log_tail(1 << 20)):  # RocksDB fills the log space it preallocated first
            assert len(full) < 4000, "B's standby copy never stopped"
            chunk = [e for app in apps for e in sends(10 + len(full) // 4, 10, app)]
            send_events(settings, chunk)
            full += chunk
            ids = {(e["app"], e["request_id"]) for e in chunk}
            watcher.wait_until(lambda d: ids <= {(x["app"], x["request_id"]) for x in d}, timeout=60)
        filler.unlink()
        wait_for_log(b, 0, re.compile("the local store took the [0-9]+ row"))
        after = [e for app in apps for e in sends(10 + len(full) // 4, 10, app)]
        send_events(settings, after)
        watcher.wait_until(lambda d: len(d) >= len(before) + len(full) + len(after))
        deadline = time.monotonic() + DEADLINE_S
        while any(standbys_behind(b).values()):
            assert time.monotonic() < deadline, f"B's standby copy never caught up: {standbys_behind(b)}"
            time.sleep(0.5)  # poll interval
        a.kill()  # B takes A's partition over from its standby copy
        retried = full[::7]
        send_events(settings, retried)
        live = watcher.wait_until(lambda d: len(d) >= len(before) + len(full) + len(after) + len(retried))
    expected = uninterrupted(setup + before + full + after + retried)
    key = lambda d: (d["app"], d["request_id"], d["decision_id"], d["outcome"])  # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, expected))
