"""kafka.py: what needs no broker (reading a log from a broker: tests/integration/test_kafka_replay.py
and test_kafka_restore.py; the line a user sees when no broker answers: test_cli.py)."""

from __future__ import annotations

import asyncio

from sendgate.streams.config import Settings
from sendgate.streams.kafka import read_log
from sendgate.streams.local.broker import free_port


def test_reading_a_log_that_holds_nothing_past_the_start_needs_no_broker():
    nobody = Settings(bootstrap=f"127.0.0.1:{free_port()}")  # a consumer would fail to connect there

    async def read() -> list:
        return [r async for r in read_log(nobody, "sendgate.events", {0: 5, 1: 0, 2: 3}, start={0: 5, 2: 9})]

    assert asyncio.run(read()) == []
