"""The same over Kafka: `await submit(send)` returns the send's decision, and a `DecisionBook`
is positioned when it returns, so a decision published right after is not missed."""

from __future__ import annotations

import asyncio
import threading

from sendgate.streams.client import Publisher
from sendgate.streams.client.book import DecisionBook, answers_send, submit


def test_submit_returns_the_decision_and_a_book_misses_none(settings, worker):
    cold = {"app": "shop", "sender": "s", "userkey": "u1", "network": "sms", "text": "hello"}
    decision = asyncio.run(submit(dict(cold, request_id="r1"), settings, timeout=60))
    assert (decision.request_id, decision.outcome, decision.reason) == ("r1", "rejected", "no_conversation")

    async def many() -> list:
        async with Publisher(settings) as pub, DecisionBook(settings, size=2) as book:
            sends = [{"type": "send", **cold, "request_id": f"m{i}", "userkey": f"u{i}"} for i in range(5)]
            answers = await asyncio.gather(
                *(book.ask(lambda s=s: pub.publish(s), "shop", s["request_id"], answers_send, 60) for s in sends)
            )
            # bounded: only the last two requests are kept
            return answers, [book.history("shop", f"m{i}") is not None for i in range(5)]

    answers, kept = asyncio.run(many())
    assert [(d.request_id, d.outcome) for d in answers] == [(f"m{i}", "rejected") for i in range(5)]
    assert sum(kept) == 2


def test_a_book_is_positioned_when_it_returns(settings):
    """A decision written the moment the book is entered is read: positions are resolved before
    `async with` returns, not at the first fetch (which would start after it, at the end). The
    record is written from another thread while this event loop is blocked, so the book's reader
    cannot run before it is written."""
    from aiokafka import AIOKafkaProducer

    from sendgate.models.decisions import Decision
    from sendgate.streams.kafka import ensure_topics

    decision = Decision("r1", "shop", "s", "u1", "sms", "accepted", "reply", "a reply", 1)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic("decisions"), decision.to_json(), key=b"shop")
        finally:
            await producer.stop()

    async def write_now() -> None:
        writer = threading.Thread(target=lambda: asyncio.run(produce()))
        writer.start()
        writer.join()  # blocks the loop: nothing of the book runs meanwhile

    async def run() -> Decision | None:
        await ensure_topics(settings, [settings.topic("decisions")])  # as a worker does: clients create none
        async with DecisionBook(settings) as book:
            return await book.ask(write_now, "shop", "r1", answers_send, 10)

    assert asyncio.run(run()) == decision
