"""The ticker: wall-clock time enters the log only as tick events (a tick moves its app's event
time on, which releases its due requests); decisions are made from them."""

from __future__ import annotations

import time
from collections.abc import Callable

import faust
import orjson
from faust.types import TopicT

from ..config import Settings
from .checkpoint import CheckpointStore
from .outbox import Headers, partition_for


def add_ticker(
    app: faust.App,
    settings: Settings,
    store: CheckpointStore,
    events: TopicT,
    signed: Callable[[bytes, int], Headers],
) -> None:
    """Every `tick_interval_s`, a tick into the log of each app with a request due by now."""

    @app.timer(interval=settings.tick_interval_s)
    async def tick() -> None:
        # A tick goes to the partition the app's events came from, whatever its producers'
        # partitioner: computing it here from the key could pick another partition.
        now = int(time.time() * 1000)
        for app_key, next_due in list(store.due.items()):
            if next_due <= now:
                app_name = app_key.decode()
                partition = store.home_of(app_name)
                if partition is None:
                    # An app with no home yet (state from before homes were kept): where Java's
                    # partitioner puts it, as ticks always went; its next event records its home.
                    partition = partition_for(app_key, settings.partitions)
                tick = orjson.dumps({"type": "tick", "app": app_name, "ts": now})
                await events.send(key=app_key, value=tick, partition=partition, headers=signed(tick, now))
