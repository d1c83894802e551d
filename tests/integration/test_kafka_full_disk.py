"""A worker whose local store's disk is full goes on deciding (issue 27: the fault soak saw a worker's
partitions decide nothing for 93 s around a full disk; every batch failed until it was freed).

The worker's store dir is a 128 MB tmpfs (root only: the test is skipped otherwise), filled with one
file while the worker runs. Contract (streams/worker/checkpoint.py, `Unwritten`; docs/guarantees.md):

- while its store refuses writes, the worker decides on: the rows of each batch, already in the
  changelog, are held in memory over the store, and its log says the store refuses writes;
- once the disk has room again the store takes them, and a worker started again on that store
  decides as one uninterrupted run would: a retried request gets its first decision again, so the
  rows decided while the disk was full reached the store (or its recovery).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness import T0, DecisionWatcher, create_events_topic, ev, send_events, uninterrupted, wait_for_log

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


def sends(first: int, count: int) -> list[dict]:
    """`count` sends to opted-in users, each with its own request id and text, one event-time second apart."""
    one = {"app": APP, "sender": "s1", "network": "sms"}
    return [
        ev("send", request_id=f"r{i}", userkey=f"u{i % USERS}", text=f"Code {i:06d}", ts=T0 + 60_000 + i * 1000, **one)
        for i in range(first, first + count)
    ]


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
    setup = [ev("opt_in", event_id=f"in-{u}", app=APP, userkey=f"u{u}", ts=T0 + u) for u in range(USERS)]
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
