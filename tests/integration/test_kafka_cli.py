"""The command line on a real broker: `tail` stops (--exit, --max-messages, --timeout) and filters,
and `deadletter` lists and republishes a dead letter with its key, value and signature, so that
the worker decides it the second time (a record a foreign partitioner put on the wrong partition)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
from aiokafka import AIOKafkaProducer

from harness import T0, collect, decisions, ev, publish, signed

from sendgate.streams.config import Settings


def sendgate(settings: Settings, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", *argv],
        capture_output=True,
        timeout=120,
        env={**os.environ, **settings.to_env()},
    )


def lines(out: subprocess.CompletedProcess) -> list[dict]:
    assert out.returncode == 0, out.stderr.decode()
    return [orjson.loads(line) for line in out.stdout.splitlines()]


def test_tail_stops_at_the_end_after_n_or_when_idle_and_filters(settings, worker):
    publish(
        settings,
        [
            ev("inbound", event_id=f"i{n}", app=app, sender=sender, userkey="u1", network="sms", text="hi", ts=T0)
            for n, (app, sender) in enumerate([("shop", "s1"), ("mall", "s2")])
        ]
        + [
            ev(
                "send",
                request_id=f"r{n}",
                app=app,
                sender=sender,
                userkey="u1",
                network="sms",
                text="hello",
                reply_to=f"i{n}",
                ts=T0 + 1,
            )
            for n, (app, sender) in enumerate([("shop", "s1"), ("mall", "s2")])
        ],
    )
    decisions(settings, 2)
    every = lines(sendgate(settings, "tail", "--from-beginning", "--exit"))
    assert sorted(d["request_id"] for d in every) == ["r0", "r1"]
    assert [
        d["request_id"] for d in lines(sendgate(settings, "tail", "--from-beginning", "--exit", "--request-id", "r1"))
    ] == ["r1"]
    assert [d["app"] for d in lines(sendgate(settings, "tail", "--from-beginning", "--exit", "--sender", "s1"))] == [
        "shop"
    ]
    assert len(lines(sendgate(settings, "tail", "--from-beginning", "--max-messages", "1"))) == 1
    assert len(lines(sendgate(settings, "tail", "--from-beginning", "--timeout", "3"))) == 2  # then idle: it ends
    assert lines(sendgate(settings, "tail", "--exit")) == []  # from the end: nothing, and it ends


def test_a_dead_letter_is_listed_and_republished_as_it_came_and_then_decided(settings, worker):
    publish(
        settings, [ev("inbound", event_id="i1", app="shop", sender="s1", userkey="u1", network="sms", text="hi", ts=T0)]
    )
    home = collect(settings, settings.topic("events"), lambda r: len(r) >= 1, with_partition=True)[0]["partition"]
    stray = orjson.dumps(
        ev(
            "send",
            request_id="r1",
            app="shop",
            sender="s1",
            userkey="u1",
            network="sms",
            text="hello back",
            reply_to="i1",
            ts=T0 + 1,
        )
    )
    elsewhere = (home + 1) % settings.partitions

    async def produce_elsewhere() -> None:  # as a producer with another partitioner would
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic("events"),
                stray,
                key=b"shop",
                partition=elsewhere,
                headers=signed(settings, stray),
                timestamp_ms=T0 + 1,
            )
        finally:
            await producer.stop()

    asyncio.run(produce_elsewhere())
    [dead] = collect(settings, settings.topic("deadletter"), lambda r: len(r) >= 1)
    assert dead["partition"] == elsewhere and f"partition {home}" in dead["error"], dead

    tailed = lines(sendgate(settings, "tail", "--deadletter", "--from-beginning", "--exit", "--app", "shop"))
    assert [d["raw"] for d in tailed] == [stray.decode()]
    listed = lines(sendgate(settings, "deadletter", "list", "--json"))
    assert [(d["key"], d["raw"], d["signed_by"], d["headers"]) for d in listed] == [
        ("shop", stray.decode(), settings.key_id, ["sendgate-key", "sendgate-sig"])
    ]
    place = f"{listed[0]['deadletter_partition']}@{listed[0]['deadletter_offset']}"

    dry = sendgate(settings, "deadletter", "republish", "--at", place, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.decode().startswith(
        f"would republish deadletter[{place.replace('@', ']@')}"
    )
    out = sendgate(settings, "deadletter", "republish", "--at", place)
    assert out.returncode == 0, out.stderr.decode()
    said = out.stdout.decode().strip()
    assert (
        said.startswith(f"republished deadletter[{place.replace('@', ']@')} ")
        and f"key 'shop', signed by {settings.key_id}) -> {settings.topic('events')}[{home}]@" in said
    ), said
    assert "republished 1 of 1 selected dead letter(s)" in out.stderr.decode()

    [decision] = decisions(settings, 1)  # the signature held: decided, not dead-lettered as unauthorized
    assert (decision["request_id"], decision["outcome"], decision["reason"]) == ("r1", "accepted", "reply")
    nothing = sendgate(settings, "deadletter", "republish", "--at", "0@999999")
    assert nothing.returncode == 1 and "no dead letter at 0@999999" in nothing.stderr.decode()
