"""The worker process from start to exit: the crash protocol's start-up half, then Faust's worker.

Before Faust starts: what can be checked without Kafka (the policy, the keyring, the web
addresses), then the topics every consumer must see in its first metadata. A worker killed
mid-write can leave a local store ahead of its changelog (Faust's table path writes the store
first), and Faust would replay the changelog over it into a state that never existed: a marker
file, present while a worker runs on the store, tells the next start that the last stop was not
clean, and the local stores that cannot be trusted are removed (`after_unclean_stop`). The exit
code says whether a batch kept failing (`STALL_EXIT_CODE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust

from ..config import Settings
from ..identity import check_userkey_secret
from ..kafka import check_events_clock, ensure_topics, partitions_of
from .app import build_worker
from .batch import STALL_EXIT_CODE
from .checkpoint import APPS, STATE, after_unclean_stop
from .restore import restore_state


class Worker(faust.Worker):  # the name shows in its log lines ("[^Worker]: Ready")
    """No terminal spinner: for it Faust sets the root logger to DEBUG whatever the log level,
    and every debug call of Faust and aiokafka then builds a LogRecord (profiled: 11 % of the
    worker's busy time)."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def run_worker(settings: Settings) -> int:
    """Run a worker until it stops; returns its exit code (0, or STALL_EXIT_CODE)."""
    # what can be checked without Kafka is checked first: a bad policy or keyring, or a web address
    # other workers cannot use, is reported at once and not after the broker answered
    settings.check_web_addresses()
    settings.gate()  # loads and checks the policy and the keyring
    with _quiet("aiokafka"):  # it logs every refused connection; the command says what is wrong in one line
        asyncio.run(topics_ready(settings))
    gate_worker = build_worker(settings)
    print(
        f"sendgate worker: {settings.topic('events')} ({settings.partitions} partitions) on {settings.bootstrap}, "
        f"group id {settings.group_id}, store {settings.store}, policy {settings.policy_file or 'defaults'}",
        flush=True,
    )
    # The `state` table's store is kept after an unclean stop (it holds only what the broker
    # acknowledged: streams/worker/checkpoint.py), the others recover from their changelogs.
    marker = Path(settings.data_dir) / f"{settings.group_id}.running"
    if marker.exists():
        keep = settings.processing_guarantee == "at_least_once"
        removed = after_unclean_stop(Path(settings.data_dir) / settings.group_id, keep)
        print(
            "sendgate worker: the last worker on this store did not stop cleanly; "
            + ("the state table's local store is kept, " if keep else "")
            + f"{len(removed)} other local store(s) removed: they recover from their changelogs",
            flush=True,
        )
    if (
        settings.fast_restore
        and settings.store.startswith("rocksdb")
        and settings.processing_guarantee == "at_least_once"
    ):
        orphans = gate_worker.store.table.orphans  # keys a zombie wrote: rewritten at the next checkpoint
        applied, read, seconds = asyncio.run(restore_state(settings, orphans))  # streams/worker/restore.py
        print(
            f"sendgate worker: local state store up to its changelog's last commit records: {applied:,} row(s) "
            f"applied of {read:,} read in {seconds:.1f} s",
            flush=True,
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    worker = Worker(gate_worker.faust, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):
            marker.unlink(missing_ok=True)  # a clean stop, also after a stall: the store is whole
            if gate_worker.stalled:
                raise SystemExit(STALL_EXIT_CODE) from None
        raise
    marker.unlink(missing_ok=True)
    return STALL_EXIT_CODE if gate_worker.stalled else 0


async def topics_ready(settings: Settings) -> None:
    """The topics the worker subscribes to, created and led. The consumer's first metadata must list
    every one: a topic that Faust creates while the group forms is left out of the assignment until
    the next metadata refresh (5 minutes), so the worker would idle, or wait that long to recover a table."""
    events = settings.topic("events")
    changelogs = [settings.changelog_topic(STATE)]
    singles = [settings.changelog_topic(APPS)]
    await ensure_topics(settings, [events])
    await check_events_clock(settings)
    await check_userkey_secret(settings, "worker")
    await ensure_topics(settings, changelogs, compact=True)
    await ensure_topics(settings, singles, partitions=1, compact=True)
    await ensure_topics(settings, [f"{settings.group_id}-__assignor-__leader"], partitions=1)
    for topic in [events, *changelogs, *singles]:
        await partitions_of(settings, topic, 60)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """The logger says nothing below CRITICAL meanwhile."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)
