"""Ask and wait for the answer: a send published and its decision awaited, without missing it.

A subscriber that starts reading `<prefix>decisions` after it published can miss the decision
(the worker answers in milliseconds). `DecisionBook` is positioned first: on entering it, its
consumer is assigned every partition and its position resolved at the end of each, and only then
does `async with` return; it keeps reading in the background. A request's waiter is registered
before its send is published, so the decision that answers it is the first one read after it.

It reads every partition without a consumer group: several processes (API servers) each hold a
book of their own and need no shared state. What it keeps is bounded: the decisions of the last
`size` requests it saw, oldest forgotten first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from sendgate.models.decisions import Decision
from sendgate.models.sources import SigningKey

from ..config import Settings
from ..kafka import start_client, stop_reader
from . import require_topic

NOT_PENDING = "not_pending"  # the reason of the answer to a cancel of a request that is not pending
Match = Callable[[Decision], bool]


def answers_send(d: Decision) -> bool:
    """The first answer to a send (or the same again, for a retry): not a cancel's refusal."""
    return d.outcome in ("accepted", "delayed", "rejected") and d.reason != NOT_PENDING


def answers_cancel(d: Decision) -> bool:
    return d.outcome == "cancelled" or (d.outcome == "rejected" and d.reason == NOT_PENDING)


class DecisionBook:
    """The decisions of recent requests, read as they arrive; `expect` before publishing."""

    def __init__(self, settings: Settings | None = None, size: int = 50_000, *, wait_for_topic_s: float = 30.0) -> None:
        self.settings = settings or Settings.from_env()
        self.size = size
        self.topic = self.settings.topic("decisions")
        self.since_ms = 0  # when it was positioned: decisions before are not in it
        self._requests: OrderedDict[tuple[str, str], list[Decision]] = OrderedDict()
        self._waiters: dict[tuple[str, str], list[tuple[Match, asyncio.Future]]] = {}
        self.wait_for_topic_s = wait_for_topic_s
        self._consumer: AIOKafkaConsumer | None = None  # made in __aenter__: aiokafka needs a running loop
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "DecisionBook":
        partitions = await require_topic(self.settings, self.topic, self.wait_for_topic_s)  # the workers make it
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
            **self.settings.kafka_options(),
        )
        try:
            await start_client(self._consumer, self.settings)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            self._consumer.assign(tps)
            await self._consumer.seek_to_end(*tps)
            for tp in tps:  # resolved now, not at the first fetch: a decision written after this is read
                await self._consumer.position(tp)
        except BaseException:
            await self._consumer.stop()
            raise
        self.since_ms = int(time.time() * 1000)
        self._task = asyncio.create_task(self._read(), name="decision-book")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await stop_reader(self._task, self._consumer)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _read(self) -> None:
        assert self._consumer is not None  # started in __aenter__, before this task
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for m in messages:
                    self._add(Decision.from_dict(orjson.loads(m.value)))

    def _entry(self, key: tuple[str, str]) -> list[Decision]:
        """The request's decisions, the most recent request last; the oldest beyond `size` forgotten."""
        seen = self._requests.setdefault(key, [])
        self._requests.move_to_end(key)
        while len(self._requests) > self.size:
            self._requests.popitem(last=False)
        return seen

    def _add(self, d: Decision) -> None:
        key = (d.app, d.request_id)
        seen = self._entry(key)
        # a repeat (a retry's first answer again, or at-least-once) is kept once, but still answers a waiter
        if all(x.decision_id != d.decision_id for x in seen):
            seen.append(d)
        for match, future in self._waiters.get(key, ()):
            if not future.done() and match(d):
                future.set_result(d)

    def history(self, app: str, request_id: str) -> list[Decision] | None:
        """Every decision of the request read so far: [] for one asked here and not decided yet,
        None for one this book never saw (or has forgotten)."""
        seen = self._requests.get((app, request_id))
        return None if seen is None else list(seen)

    async def ask(
        self, publish: Callable[[], object], app: str, request_id: str, match: Match, timeout: float
    ) -> Decision | None:
        """Register a waiter for (app, request_id), run `publish` (an awaitable factory), and wait
        up to `timeout` s for a decision that `match`es; None when none came in time."""
        if not self.healthy:
            raise RuntimeError(
                f"the decisions reader of {self.topic} has stopped: "
                f"{self._task.exception() if self._task and self._task.done() else 'not started'}"
            )
        key = (app, request_id)
        self._entry(key)  # asked: known here from now on, decided or not
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append((match, future))
        try:
            await publish()
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiters = self._waiters[key]
            waiters.remove((match, future))
            if not waiters:
                del self._waiters[key]


async def submit(
    send: dict, settings: Settings | None = None, *, key: SigningKey | None = None, timeout: float = 10.0
) -> Decision:
    """Publish one send and return its decision (the SDK's `await submit(send)`); a send without
    `request_id` gets one. TimeoutError when no decision comes within `timeout` s. For many
    sends, keep a `Publisher` and a `DecisionBook` open and call `book.ask` for each."""
    from . import Publisher

    send = {"type": "send", **send}
    send.setdefault("request_id", uuid.uuid4().hex)
    settings = settings or Settings.from_env()
    async with Publisher(settings, key=key) as publisher, DecisionBook(settings, size=16) as book:
        decision = await book.ask(
            lambda: publisher.publish(send), send["app"], send["request_id"], answers_send, timeout
        )
    if decision is None:
        raise TimeoutError(
            f"no decision for request {send['request_id']!r} within {timeout} s: is a worker running "
            f"on {settings.topic('events')}?"
        )
    return decision
