"""Kafka's own authorization: the ACLs of streams/local/acls.py, applied as they are, on a broker
that allows nothing without an ACL (KRaft's StandardAuthorizer, `LocalKafka(authorizer=True)`).

One broker for the module, with one SCRAM user per role: a worker decides a send end to end with
its ACLs alone, and the producer and the subscriber are refused what their role does not need.
Every refusal is checked against a principal that is allowed the same call (the check itself
works), and every client is given the SASL listener only: the PLAINTEXT one is the super user's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from harness import T0, Workers, ev, make_settings, wait_consumed

from sendgate.streams.client import Publisher, decisions, deliveries
from sendgate.streams.config import Settings
from sendgate.streams.kafka import ensure_topics
from sendgate.streams.local import acls
from sendgate.streams.local.broker import LocalKafka
from sendgate.streams.worker.checkpoint import STATE

ADMIN = ("admin", "admin-pw")
USERS = {"worker": "worker-pw", "app": "app-pw", "auditor": "auditor-pw"}
AUDITORS = "auditors"  # the subscriber's own consumer group
DEADLINE_S = 60.0


@dataclass
class Deployment:
    kafka: LocalKafka
    settings: Settings  # topic prefix, group id, store: no login
    worker_log: Path | None = None

    def as_(self, user: str) -> Settings:
        """The deployment's settings, logged in on the SASL listener as `user`."""
        return self.settings.with_(**self.kafka.login(user))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kafka-acls")
    kafka = LocalKafka(data_dir=tmp / "kafka", scram=ADMIN, users=USERS, authorizer=True)
    kafka.start()
    pool = Workers(tmp)
    try:
        # LogAppendTime: the broker stamps the records of producers it does not trust (and the
        # worker checks that the topic does, with one more ACL)
        base = make_settings(kafka.sasl_bootstrap, tmp / "worker", events_timestamp_type="LogAppendTime")
        kafka.add_acls(
            acls.producer(base, "User:app")
            + acls.worker(base, "User:worker")
            + acls.subscriber(base, "User:auditor", AUDITORS)
        )
        deployment = Deployment(kafka, base)
        # creates its topics and changelogs, joins its group
        deployment.worker_log = pool.start(deployment.as_("worker")).log_path
        yield deployment
    finally:
        pool.stop_all()
        kafka.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE_S))


async def read(settings: Settings, topic: str) -> list:
    """Fetch from the beginning of `topic`, as `settings`' principal, outside any group: the
    metadata is refused without Describe, the fetch without Read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, **settings.kafka_options()
    )
    await consumer.start()
    try:
        # aiokafka's own: raises TopicAuthorizationFailedError (an assigned topic the metadata
        # refuses would only be logged, and the fetch wait for ever)
        await consumer._client._wait_on_metadata(topic)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        batch = await consumer.getmany(timeout_ms=500)
        return [m for messages in batch.values() for m in messages]
    finally:
        await consumer.stop()


async def join(settings: Settings, group: str) -> None:
    """Join `group` on the events topic and poll once (the join and the offset fetch are checked)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False, **settings.kafka_options()
    )
    await consumer.start()
    try:
        consumer.subscribe([settings.topic("events")])
        await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()


async def write(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"an authorization probe, not an event", key=b"acme")
    finally:
        await producer.stop()


def test_a_worker_decides_a_send_with_its_acls_alone(deployment):
    """A producer publishes, the worker decides and checkpoints, a subscriber reads the decision
    and the delivery in its own group."""

    async def scenario() -> list:
        async with Publisher(deployment.as_("app")) as pub:  # the producer principal
            await pub.publish(
                ev("inbound", event_id="i1", app="acme", sender="s", userkey="u1", network="sms", text="hi", ts=T0)
            )
            await pub.publish(
                ev(
                    "send",
                    request_id="r1",
                    app="acme",
                    sender="s",
                    userkey="u1",
                    network="sms",
                    text="hello back",
                    reply_to="i1",
                    ts=T0 + 1,
                )
            )
        # the subscriber principal, in its own group (joins, commits)
        async for decision in decisions(deployment.as_("auditor"), group_id=AUDITORS, from_beginning=True, app="acme"):
            return [decision]

    got = run(scenario())
    assert [(d.request_id, d.outcome, d.reason) for d in got] == [("r1", "accepted", "reply")]

    async def delivered() -> list:
        async for delivery in deliveries(
            "sms", deployment.as_("auditor"), group_id=AUDITORS, from_beginning=True, app="acme"
        ):
            return [delivery]

    assert [d.request_id for d in run(delivered())] == ["r1"]
    # The decision is out before the batch's rows reach the changelog; the group commits only
    # after them: a refused changelog write shows here.
    wait_consumed(deployment.as_("worker"), DEADLINE_S)
    # Faust only logs some refusals (a transactional producer it could not start, under exactly_once)
    refused = [
        line
        for line in deployment.worker_log.read_text().splitlines()
        if "AuthorizationFailed" in line or "Authorization failed" in line
    ]
    assert not refused, refused[:5]


# what the worker writes and the producers must not read (the worker reads all of them)
PRIVATE = {
    "events": lambda s: s.topic("events"),
    "state-changelog": lambda s: s.changelog_topic(STATE),
    "decisions": lambda s: s.topic("decisions"),
    "consent": lambda s: s.topic("consent"),
    "grants": lambda s: s.topic("grants"),
    "deadletter": lambda s: s.topic("deadletter"),
    "deliveries": lambda s: s.topic("deliveries.sms"),
}


@pytest.mark.parametrize("name", PRIVATE)
def test_a_producer_reads_no_topic(deployment, name):
    topic = PRIVATE[name](deployment.settings)
    # a topic the worker creates later would be refused all the same: it must exist to be a fair check
    run(ensure_topics(deployment.settings.with_(bootstrap=deployment.kafka.bootstrap), [topic]))
    run(read(deployment.as_("worker"), topic))  # allowed: the read itself works
    with pytest.raises(TopicAuthorizationFailedError):
        run(read(deployment.as_("app"), topic))


def test_a_producer_cannot_join_the_workers_group(deployment):
    run(join(deployment.as_("auditor"), AUDITORS))  # allowed: its own group
    with pytest.raises(GroupAuthorizationFailedError):
        run(join(deployment.as_("app"), deployment.settings.group_id))


def test_a_subscriber_writes_no_event(deployment):
    events = deployment.settings.topic("events")
    run(write(deployment.as_("app"), events))  # allowed: the producer's one right
    with pytest.raises(TopicAuthorizationFailedError):
        run(write(deployment.as_("auditor"), events))
