"""The Faust application wired: the gate agent, its timers and hooks, and the ticker.

`build_worker` wires the pure `Gate` (sendgate.models.gate) to Kafka. It holds no rule of its own:
the batch is in batch.py, the holes Faust leaves in holes.py, the topics and tables in
topology.py, the ticker in ticker.py, and the process around it in lifecycle.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import TP, StreamT

from sendgate.models.sources import WORKER, KeyringError

from ..config import ConfigError, Settings
from .batch import SLOW_BATCH_S, GateWorker
from .checkpoint import STORE_RETRY_S
from .faust_internals import (
    channel_queue,
    commit_at,
    dispatch_inline,
    keep_fetched_changelog,
    keep_paused_on_buffer_drop,
    keep_recovery_end,
    member_alive_at,
)
from .holes import QUIET_CHECK_S, Holes, QuietHoles
from .operations import register_operations
from .ticker import add_ticker
from .topology import Topics, checkpoint_store, faust_app
from .web import OperatorDoor, register_views

log = logging.getLogger("sendgate.worker")


def build_worker(settings: Settings, *, ticker: bool = True) -> GateWorker:
    policy = settings.policy()
    gate = settings.gate(policy)  # refuses to start without a keyring unless SENDGATE_AUTH=off
    if gate.keyring is None:
        log.warning(
            "SENDGATE_AUTH=off: records are not verified; any producer that can write to %s may say "
            "anything for any app (docs/security-and-privacy.md, Sources)",
            settings.topic("events"),
        )
    else:
        try:  # the key the worker signs its ticks and revocations with
            gate.keyring.signing_key(WORKER, int(time.time() * 1000))
        except KeyringError as exc:
            raise ConfigError(
                f"SENDGATE_KEYRING: {exc}; the worker signs its ticks and grant revocations with a key of role worker"
            ) from None
    app = faust_app(settings)
    topics = Topics.of(app, settings)
    store = checkpoint_store(app, settings)
    worker = GateWorker(settings, app, gate, store, topics, Holes(settings, app, store, topics.events))
    worker.alive_at = member_alive_at(app)
    store.table.on_recover(worker.on_recover)
    keep_recovery_end(app)  # a recovery that caught up before Faust waited for it would never end
    keep_fetched_changelog(app)  # else the end of a recovery drops the standby records fetched meanwhile
    keep_paused_on_buffer_drop(app)  # else a drained queue lets events in while the tables recover

    @app.on_partitions_revoked.connect
    async def _forget_decided_offsets(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # after Faust's last commit of the revoked partitions (with these offsets); kept until the
        # next recovery, a partition that comes back could have its group offset moved backwards
        worker.revocations += 1
        for tp in revoked:
            worker.next_offsets.pop(tp, None)

    @store.table.on_recover
    async def _count_rebalance() -> None:
        worker.metrics.rebalances.inc()

    if settings.web_enabled:
        door = OperatorDoor(settings.operator_token, settings.web_bind)
        register_views(app, worker.gate, store, door)
        register_operations(app, worker, door)

    @app.agent(topics.events, name="gate")
    async def gate_agent(stream: StreamT) -> None:
        # The agent takes its batches from the channel's queue itself instead of iterating the
        # stream: a batch is whatever has arrived (up to batch_max), taken at once, with no timer.
        # Faust's per-event stream path cost more than the gate (bench/run --profile), and
        # take_events waits its `within` even when nothing more is coming.
        queue = channel_queue(stream)
        dispatch_inline(app)
        commit_at(app, worker.next_offsets)
        worker.agent_task = asyncio.current_task()
        await topics.declare()
        worker.holes.queue = queue
        worker.agent_running = True
        while not worker.stalled:
            items = [await queue.get()]
            while len(items) < settings.batch_max and not queue.empty():
                items.append(queue.get_nowait())
            quiet = tuple(tp for item in items if isinstance(item, QuietHoles) for tp in item.partitions)
            await worker.run_batch(
                [item for item in items if not isinstance(item, QuietHoles)] if quiet else items, quiet
            )

    @app.timer(interval=SLOW_BATCH_S / 3)
    async def watch_batches() -> None:
        worker.report_slow_batch()

    @app.timer(interval=STORE_RETRY_S)
    async def retry_store() -> None:
        store.table.retry_unwritten()
        await store.table.resume_standbys()

    @app.timer(interval=QUIET_CHECK_S)
    async def watch_quiet_partitions() -> None:
        worker.holes.check_quiet_partitions(worker.agent_running and worker.deciding_since is None)

    if ticker and settings.tick_interval_s > 0:
        add_ticker(app, settings, store, topics.events, worker.signed)

    return worker
