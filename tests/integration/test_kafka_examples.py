"""The examples run as a user runs them: a subprocess against a real broker and a real worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from harness import T0, collect, ev, publish

ROOT = Path(__file__).resolve().parents[2]
DELIVERY_WORKER = ROOT / "examples" / "delivery_worker.py"
RUN_DEADLINE_S = 120.0


def conversation(user: str, n: int) -> list[dict]:
    """The user writes first, the app replies: an accepted reply, hence one sms delivery."""
    return [
        ev(
            "inbound",
            event_id=f"in-{user}",
            app="acme",
            sender="shop",
            userkey=user,
            network="sms",
            text="is my order on its way?",
            ts=T0 + n * 1000,
        ),
        ev(
            "send",
            request_id=f"reply-{user}",
            app="acme",
            sender="shop",
            userkey=user,
            network="sms",
            text="yes, it ships today",
            reply_to=f"in-{user}",
            ts=T0 + n * 1000 + 500,
        ),
    ]


def run_delivery_worker(settings, *args: str) -> list[str]:
    """Run the example to completion (it exits by itself after --max-messages); its stdout lines."""
    cmd = [sys.executable, str(DELIVERY_WORKER), "--network", "sms", "--stub", *args]
    try:
        result = subprocess.run(
            cmd,
            env={**os.environ, **settings.to_env()},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_DEADLINE_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(args)}: no exit within {RUN_DEADLINE_S:.0f} s\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}"
        )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    print(result.stdout)
    return result.stdout.splitlines()


def delivered(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if line.startswith("delivered ")]


def test_delivery_worker_retries_deduplicates_and_commits_only_what_it_delivered(settings, worker):
    group = f"{settings.group_id}-couriers"
    topic = settings.topic("deliveries.sms")

    # u1's delivery, then a copy of it on the same partition (what an upstream redelivery looks
    # like), then u2 and u3: the partition reads u1, u1 again, u2, u3.
    publish(settings, conversation("u1", 1))
    [first] = collect(settings, topic, lambda r: len(r) >= 1, with_partition=True)
    assert first["value"]["request_id"] == "reply-u1"

    async def redeliver() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, value=orjson.dumps(first["value"]), key=first["key"], partition=first["partition"]
            )
        finally:
            await producer.stop()

    asyncio.run(redeliver())
    publish(settings, conversation("u2", 2) + conversation("u3", 3))

    lines = run_delivery_worker(settings, "--group", group, "--fail-first", "2", "--max-messages", "3")
    out = "\n".join(lines)
    assert Counter(delivered(lines)) == {"reply-u1": 1, "reply-u2": 1, "reply-u3": 1}
    for request_id in ("reply-u1", "reply-u2", "reply-u3"):
        assert out.count(request_id) == 1, request_id  # retry and duplicate lines name the record, not the request
    retries = [line for line in lines if line.startswith("retry ")]
    assert len(retries) == 2 and all("HTTP 503" in line for line in retries), retries
    assert "attempts=3" in next(line for line in lines if line.startswith("delivered reply-u1 "))
    assert sum(line.startswith("duplicate ") for line in lines) == 1
    # The retries come before the first success: the record waited, nothing went ahead of it.
    assert lines.index(retries[-1]) < min(i for i, line in enumerate(lines) if line.startswith("delivered "))

    # Same group again: it resumes after its last commit, so only the new delivery goes out.
    publish(settings, conversation("u4", 4))
    lines = run_delivery_worker(settings, "--group", group, "--max-messages", "1")
    assert delivered(lines) == ["reply-u4"]
    assert not any(rid in line for line in lines for rid in ("reply-u1", "reply-u2", "reply-u3"))
    assert not any(line.startswith(("retry ", "duplicate ")) for line in lines)


def sender_view(settings, app: str, sender: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(
        f"http://127.0.0.1:{settings.web_port}/sendgate/senders/{app}/{sender}", timeout=10
    ) as answer:
        return orjson.loads(answer.read())


def test_the_delivery_worker_reports_each_delivery_and_a_refused_one_lowers_the_senders_reputation(settings, worker):
    publish(settings, [e for n, user in enumerate(("v1", "v2", "v3"), 1) for e in conversation(user, n)])
    lines = run_delivery_worker(settings, "--stub-status", "not_delivered", "--max-messages", "3")
    assert sorted(delivered(lines)) == ["reply-v1", "reply-v2", "reply-v3"]
    assert all("status=not_delivered" in line for line in lines if line.startswith("delivered "))
    reports = collect(
        settings, settings.topic("events"), lambda r: sum(e.get("type") == "delivery_status" for e in r) >= 3
    )
    statuses = [e for e in reports if e.get("type") == "delivery_status"]
    assert sorted((e["request_id"], e["status"], e["sender"]) for e in statuses) == [
        (f"reply-{u}", "not_delivered", "shop") for u in ("v1", "v2", "v3")
    ]
    # three conversations (x 1.05 each, capped at 1) then three refusals: 0.9 ** 3 = 0.729 -> 0.75
    deadline = time.monotonic() + 60
    view = sender_view(settings, "acme", "shop")
    while view["reputation"]["signals"]["not_delivered"] < 3:  # the worker decides the statuses meanwhile
        assert time.monotonic() < deadline, view
        view = sender_view(settings, "acme", "shop")
    assert view["reputation"]["score"] == 0.75 and "3 not-delivered result(s)" in view["reputation"]["reasons"]
