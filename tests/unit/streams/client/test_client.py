"""client: what the Publisher sends and refuses (before any broker), the subscribers' filters and
`RecentIds`, the window that drops the repeats of at-least-once processing (publishing and
subscribing against a broker: tests/integration/test_kafka_client.py)."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from sendgate.models.events import InvalidEvent
from sendgate.streams.client import Publisher, RecentIds, _filter
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
        await publisher._producer.stop()  # the real producer never starts: no broker
        publisher._producer = producer = Producer()
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
    results, sent = publish_each(Settings(topic_prefix="t1.", policy_file=str(policy)), [
        backfill, as_text.encode(),
        {"type": "opt_in", "event_id": "e3", "app": "acme"},  # no userkey
        {**backfill, "event_id": "e4", "ts": now + 3_600_000},  # an hour ahead: beyond the policy's 60 s
    ])
    assert results[:2] == ["a future of its metadata"] * 2
    assert "missing required field 'userkey'" in str(results[2]) and "the limit is 60 s" in str(results[3])
    assert [(r["topic"], r["key"]) for r in sent] == [("t1.events", b"acme"), ("t1.events", b"globex")]
    assert sent[0]["timestamp_ms"] == backfill["ts"]
    assert orjson.loads(sent[0]["value"]) == backfill and sent[1]["value"] == as_text.encode()  # sent as given
    assert abs(sent[1]["timestamp_ms"] - now) < 60_000  # without a ts the event's time is now


def test_subscribers_filter_on_app_and_outcome_or_kind():
    docs = [{"app": "acme", "outcome": "accepted", "kind": "opt_out"}, {"app": "acme", "outcome": "delayed"},
            {"app": "globex", "outcome": "accepted"}]
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
