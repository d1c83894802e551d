"""`sendgate demo`: a local broker, a worker and a small realistic scenario, end to end."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sendgate.models.sources import NETWORK, OPERATOR, Keyring

from .broker import LocalKafka
from ..client import Publisher, decisions
from ..config import Settings
from .keyring import LOCAL_KEYS, app_key_id, write_local_keyring
from .process import WorkerProcess

DEMO_TIMEOUT_S = 120.0
APP, SENDER = "demo-shop", "shop"


def scenario(now: int) -> tuple[list[dict], int]:
    """The events, and how many decisions they lead to (sends plus releases)."""
    minute = 60_000
    customers = [f"customer-{i:02d}" for i in range(14)]
    events: list[dict] = [
        {
            "type": "sender_profile",
            "event_id": "p1",
            "app": APP,
            "sender": SENDER,
            "registered_ts": now - 365 * 24 * 60 * minute,
            "ts": now - 180 * minute,
        },
        {
            "type": "opt_in",
            "event_id": "o1",
            "app": APP,
            "userkey": "carol",
            "source": "web-form",
            "ts": now - 120 * minute,
        },
    ]
    events += [
        {
            "type": "inbound",
            "event_id": f"q{i}",
            "app": APP,
            "sender": SENDER,
            "userkey": c,
            "network": "imessage",
            "text": f"Is order #{1000 + i} on its way?",
            "ts": now - 120 * minute,
        }
        for i, c in enumerate(customers)
    ]
    events += [
        # dave's STOP is older than the one confirmation allowed after it (opt_out_confirmation_s)
        {
            "type": "inbound",
            "event_id": "i-dave",
            "app": APP,
            "sender": SENDER,
            "userkey": "dave",
            "network": "sms",
            "text": " stop ",
            "ts": now - 15 * minute,
        },
        {
            "type": "inbound",
            "event_id": "i-alice",
            "app": APP,
            "sender": SENDER,
            "userkey": "alice",
            "network": "sms",
            "text": "Hi, do you have the blue one in size M?",
            "ts": now - 10 * minute,
        },
        {
            "type": "send",
            "request_id": "reply-alice",
            "app": APP,
            "sender": SENDER,
            "userkey": "alice",
            "network": "sms",
            "text": "Yes, size M is in stock!",
            "reply_to": "i-alice",
            "ts": now - 9 * minute,
        },
        {
            "type": "send",
            "request_id": "cold-bob",
            "app": APP,
            "sender": SENDER,
            "userkey": "bob",
            "network": "sms",
            "text": "Hello Bob, check out our new range",
            "ts": now - 8 * minute,
        },
        {
            "type": "send",
            "request_id": "news-carol",
            "app": APP,
            "sender": SENDER,
            "userkey": "carol",
            "network": "sms",
            "text": "Your monthly newsletter is here",
            "ts": now - 8 * minute,
        },
        {
            "type": "send",
            "request_id": "after-stop-dave",
            "app": APP,
            "sender": SENDER,
            "userkey": "dave",
            "network": "sms",
            "text": "We miss you, Dave",
            "ts": now - 8 * minute,
        },
    ]
    # A marketing blast to 14 customers: 10 go out, 4 are paced a minute apart. Their slots are
    # already past, so the worker's ticker releases them within a second or two.
    events += [
        {
            "type": "send",
            "request_id": f"blast-{i:02d}",
            "app": APP,
            "sender": SENDER,
            "userkey": c,
            "network": "imessage",
            "text": f"Hi {c}, 20% off everything today only! Code SAVE{i * 7}",
            "ts": now - 6 * minute,
        }
        for i, c in enumerate(customers)
    ]
    sends = sum(1 for e in events if e["type"] == "send")
    return events, sends + 4


def _line(d) -> str:
    when = f" deliver_at +{(d.deliver_at - d.ts) // 1000}s" if d.outcome == "delayed" else ""
    return f"{d.outcome:<9} {d.reason:<15} {d.request_id:<16} {d.userkey:<12}{when}  {d.detail}"


async def _run(settings: Settings, keyring: Keyring) -> int:
    events, expected = scenario(int(time.time() * 1000))
    # each event signed by the source that may say it (docs/security-and-privacy.md, Sources): what users wrote by the
    # network's connector, the sender's age by the operator, the rest by the app itself
    by_type = {"inbound": LOCAL_KEYS[NETWORK], "sender_profile": LOCAL_KEYS[OPERATOR]}
    async with Publisher(settings, wait_for_topic_s=120) as publisher:  # the worker is creating the topics
        for event in events:
            await publisher.send(event, keyring.keys[by_type.get(event["type"], app_key_id(APP))])
        await publisher.flush()
    print(f"published {len(events)} events; waiting for {expected} decisions\n", flush=True)
    seen = 0

    async def read() -> None:
        nonlocal seen
        async for decision in decisions(settings, from_beginning=True, app=APP):
            print(_line(decision), flush=True)
            seen += 1
            if seen == expected:
                return

    try:
        await asyncio.wait_for(read(), DEMO_TIMEOUT_S)
    except asyncio.TimeoutError:
        print(
            f"\nsendgate demo: only {seen} of {expected} decisions arrived in {DEMO_TIMEOUT_S:.0f} s", file=sys.stderr
        )
        return 1
    print(f"\n{seen} decisions: the whole path works. Next: `sendgate tail` against your own worker.")
    return 0


def run_demo() -> int:
    base = Settings.from_env()
    own_broker = "SENDGATE_BOOTSTRAP" not in os.environ
    workdir = Path(tempfile.mkdtemp(prefix="sendgate-demo-"))
    kafka = LocalKafka(data_dir=workdir / "kafka") if own_broker else None
    worker = None
    try:
        if kafka:
            print("starting a local Kafka broker (first run downloads its jars) ...", flush=True)
            kafka.start()
        run_id = uuid.uuid4().hex[:8]
        # Own topics and group: the demo never writes into a real deployment's topics.
        settings = base.with_(
            bootstrap=kafka.bootstrap if kafka else base.bootstrap,
            topic_prefix=f"sendgate-demo-{run_id}.",
            group_id=f"sendgate-demo-{run_id}",
            partitions=2,
            data_dir=str(workdir / "worker"),
            web_enabled=False,
            tick_interval_s=1.0,
            session_timeout_s=6.0,
            heartbeat_interval_s=1.0,
            rebalance_timeout_s=3.0,
            keyring_file=str(workdir / "keyring.toml"),
            auth=True,
        )
        keyring = write_local_keyring(settings.keyring_file, apps=[APP])
        print(f"starting a worker on {settings.bootstrap} (topics {settings.topic_prefix}*) ...", flush=True)
        worker = WorkerProcess(settings, workdir / "worker.log").start()
        code = asyncio.run(_run(settings, keyring))
        if code and worker.log_tail():
            print(f"worker log (tail):\n{worker.log_tail()}", file=sys.stderr)
        return code
    finally:
        if worker:
            worker.stop()
        if kafka:
            kafka.stop()
        shutil.rmtree(workdir, ignore_errors=True)
