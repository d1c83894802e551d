"""Settings a cluster needs: the replication factor reaches every topic sendgate creates."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from harness import T0, ev
from sendgate.streams.kafka import ensure_topics
from sendgate.streams.config import Settings


def replicas(settings: Settings, topic: str) -> list[int]:
    async def run() -> list[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            return [len(p["replicas"]) for p in described["partitions"]]
        finally:
            await admin.close()

    return asyncio.run(run())


def run_cli(settings: Settings, *args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", *args],
        input=stdin,
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        timeout=timeout,
    )


def test_a_replication_factor_the_cluster_cannot_hold_is_refused_by_name(settings):
    # One broker cannot hold 2 replicas: if the setting reached topic creation, the broker says so.
    s = settings.with_(replication_factor=2)
    line = orjson.dumps(ev("opt_in", event_id="o1", app="acme", userkey="u1", ts=T0)) + b"\n"
    published = run_cli(s, "publish", "-", stdin=line)  # a client creates no topic: it names the missing one
    assert published.returncode == 2 and b"does not exist" in published.stderr, published.stderr.decode()
    worker = run_cli(s, "worker")  # the worker creates its topics before it joins the group
    assert worker.returncode == 2, worker.stderr.decode()[-2000:]
    assert b"SENDGATE_REPLICATION_FACTOR=2" in worker.stderr


def test_the_worker_creates_its_new_topics_with_the_configured_replication_factor(settings, workers):
    workers.start(settings)  # the apps changelog must exist before the group forms
    for topic in (
        settings.topic("events"),
        settings.topic("decisions"),
        settings.changelog_topic("state"),
        settings.changelog_topic("apps"),
    ):
        assert set(replicas(settings, topic)) == {settings.replication_factor}, topic


def test_a_worker_told_to_trust_append_time_refuses_an_events_topic_with_producer_time(settings):
    asyncio.run(ensure_topics(settings, [settings.topic("events")]))  # created as CreateTime
    worker = run_cli(settings.with_(events_timestamp_type="LogAppendTime"), "worker")
    assert worker.returncode == 2, worker.stderr.decode()[-2000:]
    assert b"message.timestamp.type=CreateTime" in worker.stderr and b"kafka-configs.sh --alter" in worker.stderr
