"""client: what the Publisher sends and refuses (before any broker), the subscribers' filters and
`RecentIds`, the window that drops the repeats of at-least-once processing (publishing and
subscribing against a broker: tests/integration/test_kafka_client.py)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

import typing

from aiokafka.structs import RecordMetadata

from sendgate.models.events import InvalidEvent, OptIn, Send, encode_event
from sendgate.streams import client
from sendgate.streams.client import MissingTopic, Publisher, RecentIds, _filter
from sendgate.streams.client.book import DecisionBook
from sendgate.streams.config import Settings


class Producer:
    """The part of AIOKafkaProducer a Publisher uses once started: `send` (recorded) and `stop`."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send(self, topic: str, **record: object) -> str:
        self.sent.append({"topic": topic, **record})
        return "a future of its metadata"

    async def stop(self) -> None:
        pass


def publish_each(settings: Settings, events: list) -> tuple[list, list[dict]]:
    """Send each event through a Publisher; returns (what `send` returned or raised, what was sent)."""

    async def run() -> tuple[list, list[dict]]:
        publisher = Publisher(settings)
        publisher._producer = producer = Producer()  # as if entered: no broker
        results = []
        for event in events:
            try:
                results.append(await publisher.send(event))
            except InvalidEvent as exc:
                results.append(exc)
        return results, producer.sent

    return asyncio.run(run())


def test_an_event_is_keyed_by_its_app_and_stamped_with_its_own_time_and_a_bad_one_is_not_sent(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("max_ts_ahead_s = 60\n")
    now = int(time.time() * 1000)
    backfill = {"type": "opt_in", "event_id": "e1", "app": "acme", "userkey": "u1", "ts": now - 86_400_000}
    as_text = '{"type": "opt_out", "event_id": "e2", "app": "globex", "userkey": "u2"}'
    results, sent = publish_each(
        Settings(topic_prefix="t1.", policy_file=str(policy)),
        [
            backfill,
            as_text.encode(),
            {"type": "opt_in", "event_id": "e3", "app": "acme"},  # no userkey
            {**backfill, "event_id": "e4", "ts": now + 3_600_000},  # an hour ahead: beyond the policy's 60 s
        ],
    )
    assert results[:2] == ["a future of its metadata"] * 2
    assert "missing required field 'userkey'" in str(results[2]) and "the limit is 60 s" in str(results[3])
    assert [(r["topic"], r["key"]) for r in sent] == [("t1.events", b"acme"), ("t1.events", b"globex")]
    assert sent[0]["timestamp_ms"] == backfill["ts"]
    assert orjson.loads(sent[0]["value"]) == backfill and sent[1]["value"] == as_text.encode()  # sent as given
    assert abs(sent[1]["timestamp_ms"] - now) < 60_000  # without a ts the event's time is now


def test_subscribers_filter_on_app_and_outcome_or_kind():
    docs = [
        {"app": "acme", "outcome": "accepted", "kind": "opt_out"},
        {"app": "acme", "outcome": "delayed"},
        {"app": "globex", "outcome": "accepted"},
    ]
    assert [d for d in docs if _filter(None, None)(d)] == docs
    assert [d for d in docs if _filter("acme", None)(d)] == docs[:2]
    assert [d for d in docs if _filter(None, "accepted")(d)] == [docs[0], docs[2]]
    assert [d for d in docs if _filter("acme", "opt_out", "kind")(d)] == [docs[0]]


def test_recent_ids_remember_exactly_their_size_and_a_repeat_keeps_an_id_longest():
    recent = RecentIds(size=3)
    assert [recent.first_time(i) for i in "abc"] == [True] * 3
    assert recent.first_time("a") is False  # a repeat: and now the most recent
    assert recent.first_time("d") is True  # the fourth: forgets the oldest, b
    assert [recent.first_time(i) for i in "acd"] == [False] * 3
    assert recent.first_time("b") is True
    assert RecentIds().size == 100_000  # the window of decisions() and of examples/delivery_worker.py


@pytest.mark.parametrize("size", [1, 100_000])
def test_recent_ids_are_bounded(size):
    recent = RecentIds(size)
    for i in range(size + 1):
        assert recent.first_time(f"id-{i}")
    assert recent.first_time(f"id-{size}") is False and recent.first_time("id-0") is True


def test_publisher_and_decision_book_are_built_without_an_event_loop():
    publisher, book = Publisher(Settings()), DecisionBook(Settings())  # no running loop here
    assert publisher.topic == "sendgate.events" and book.topic == "sendgate.decisions"
    with pytest.raises(RuntimeError, match="not open: use it in `async with"):
        asyncio.run(publisher.flush())


def test_a_publisher_sends_typed_event_records_as_their_canonical_json():
    now = int(time.time() * 1000)
    opt_in = OptIn(event_id="e1", app="acme", userkey="u1", ts=now, source="web form")
    send = Send(
        request_id="r1",
        app="acme",
        sender="s",
        userkey="u1",
        network="sms",
        text="hi",
        ts=now,
        reply_to=None,
        valid_for_s=None,
    )
    results, sent = publish_each(Settings(), [opt_in, send])
    assert [r["value"] for r in sent] == [encode_event(opt_in), encode_event(send)]
    assert [r["key"] for r in sent] == [b"acme", b"acme"] and sent[0]["timestamp_ms"] == now
    with pytest.raises(TypeError, match="an event is an event record of sendgate.models.events"):
        Publisher(Settings()).encode(object())


def test_the_client_returns_typed_values():
    assert typing.get_type_hints(Publisher.publish)["return"] is RecordMetadata
    assert typing.get_type_hints(Publisher.send)["return"] == asyncio.Future[RecordMetadata]


@pytest.mark.parametrize("enter", [lambda s: Publisher(s), lambda s: DecisionBook(s)], ids=["publisher", "book"])
def test_a_missing_topic_is_an_error_and_no_client_creates_one(enter, monkeypatch):
    """The topic is looked up (the admin's describe) and never created: no producer needs CREATE."""
    asked = []

    async def no_such_topic(settings, topic, wait_s):
        asked.append(topic)
        raise LookupError(topic)

    async def create(*args, **kwargs):
        raise AssertionError("a client created a topic")

    monkeypatch.setattr(client, "partitions_of", no_such_topic)
    monkeypatch.setattr("sendgate.streams.kafka.ensure_topics", create)

    async def run() -> None:
        async with enter(Settings(topic_prefix="sendgtae.")):
            pass

    with pytest.raises(
        MissingTopic,
        match=r"^topic sendgtae\.(events|decisions) does not exist at 127.0.0.1:9092: "
        r"the workers create it .*check SENDGATE_TOPIC_PREFIX='sendgtae.'",
    ):
        asyncio.run(run())
    assert len(asked) == 1
