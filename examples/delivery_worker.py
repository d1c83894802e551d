"""Deliver what sendgate lets through: the pattern to copy for one network's delivery worker.

Consumes `<prefix>deliveries.<network>` in a consumer group, POSTs each delivery as JSON to an
HTTP delivery API, and commits a record's offset only once the API answered 2xx. Failures are
retried with exponential backoff (0.1 s doubling to 5 s) for as long as it takes: a record is
never skipped, so a partition waits behind a failing delivery instead of losing it.

    python examples/delivery_worker.py --network sms --stub --fail-first 2

Upstream is at-least-once (the gate and this worker may both see a record again after a crash
or a rebalance), so each delivery carries its stable `decision_id`: this process skips ids it
has already delivered, and sends the id as `Idempotency-Key` so that the API can drop the
repeats that no single process can see (a crash between the 2xx and the commit).

After the API answers, it tells the gate how the delivery went: a `delivery_status` event
(delivered, failed or not_delivered: the answer's `status` field, else delivered) on
`<prefix>events`, which moves the sender's reputation.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import signal
import socket
import sys

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from sendgate.models.decisions import Delivery
from sendgate.models.events import DELIVERY_STATUSES
from sendgate.streams.client import Publisher, RecentIds
from sendgate.streams.kafka import partitions_of
from sendgate.streams.config import Settings

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.1, 5.0
REMEMBER_IDS = 100_000  # dedup memory: duplicates arrive close to the original, so a bounded window is enough


async def start_stub_api(fail_first: int, status: str) -> tuple[web.AppRunner, str]:
    """A stand-in for the network's delivery API: 503 for the first `fail_first` requests, then
    202 with `status` (delivered, or what a platform reports for a text it refused)."""
    calls = itertools.count(1)

    async def deliver(request: web.Request) -> web.Response:
        doc = await request.json()
        if next(calls) <= fail_first:
            return web.json_response({"error": "temporarily unavailable (stub)"}, status=503)
        return web.json_response({"id": doc["decision_id"], "status": status}, status=202)

    app = web.Application()
    app.router.add_post("/deliveries", deliver)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Port 0: the OS picks a free port, so several copies (and test runs) never clash.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/deliveries"


def status_id(delivery: Delivery) -> str:
    """The delivery_status event's id: one per delivery, short whatever the decision_id's length
    (ids are at most 256 characters, a decision_id can be longer)."""
    return "status-" + hashlib.blake2b(delivery.decision_id.encode(), digest_size=16).hexdigest()


async def post_until_accepted(http: aiohttp.ClientSession, url: str, delivery: Delivery, where: str) -> tuple[int, str]:
    """POST `delivery` until the API answers 2xx; returns the number of attempts and the delivery
    status the answer reports (its JSON `status`, when it is one the gate knows; else delivered)."""
    body = delivery.to_json()
    headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.decision_id}
    delay, attempt = BACKOFF_FIRST_S, 0
    while True:
        attempt += 1
        try:
            async with http.post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    try:
                        reported = (await response.json(content_type=None) or {}).get("status")
                    except (ValueError, AttributeError):  # an answer that is not a JSON object
                        reported = None
                    return attempt, reported if reported in DELIVERY_STATUSES else "delivered"
                error = f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = f"{type(exc).__name__} {exc}".strip()
        # Every failure is retried, 4xx included: skipping would lose the message. A production
        # worker would park permanent failures (e.g. 400) in a dead-letter topic and commit.
        print(f"retry     {where}: attempt {attempt} failed ({error}); next in {delay:g} s", flush=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


async def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    topic = settings.topic(f"deliveries.{args.network}")
    group = args.group or f"{settings.group_id}-delivery-{args.network}"
    stub = None
    if args.stub:
        stub, url = await start_stub_api(args.fail_first, args.stub_status)
        print(f"stub API  {url} (fails the first {args.fail_first} request(s))", flush=True)
    else:
        url = args.api_url

    # The gate creates the topic on its first delivery for this network, and the broker does not
    # auto-create topics: a consumer subscribed before that would idle until its next metadata
    # refresh (5 min), so wait for the topic to exist first.
    await partitions_of(settings, topic, args.wait_topic)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap,
        group_id=group,
        enable_auto_commit=False,  # we commit each record ourselves, after its 2xx
        auto_offset_reset="earliest",  # a new group delivers what was let through before it started
        isolation_level="read_committed",  # never deliver a record of an aborted gate transaction
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        **settings.kafka_options(),
    )  # TLS / SASL from SENDGATE_SECURITY_PROTOCOL and friends
    # the SDK's window of recent ids (what `decisions()` drops repeats with)
    delivered_ids, delivered = RecentIds(REMEMBER_IDS), 0
    await consumer.start()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            Publisher(settings) as gate_events,
        ):
            # One record at a time: a partition's deliveries go out in the gate's order (one app's
            # sends stay in sequence) and "committed" always means "everything before it was delivered".
            async for message in consumer:
                # The gate writes only valid records; a garbled one stops this worker rather than
                # being skipped silently.
                delivery = Delivery.from_dict(orjson.loads(message.value))
                where = f"{args.network} p{message.partition}@{message.offset}"
                # Recorded as it is first seen, before it is delivered: a delivery that does not succeed
                # ends this process (it is retried until it does), and the memory goes with it.
                if not delivered_ids.first_time(delivery.decision_id):
                    line = f"duplicate {where}: already delivered by this process, not sent again"
                else:
                    attempts, status = await post_until_accepted(http, url, delivery, where)
                    # before the commit: a crash in between reports the status again, never loses it
                    await gate_events.publish(
                        {
                            "type": "delivery_status",
                            "event_id": status_id(delivery),
                            "app": delivery.app,
                            "sender": delivery.sender,
                            "userkey": delivery.userkey,
                            "request_id": delivery.request_id,
                            "status": status,
                        }
                    )
                    delivered += 1
                    line = (
                        f"delivered {delivery.request_id} app={delivery.app} sender={delivery.sender} "
                        f"to={delivery.userkey} attempts={attempts} status={status} ({where})"
                    )
                try:
                    # offset + 1: the committed offset is the next record to read.
                    await consumer.commit({TopicPartition(message.topic, message.partition): message.offset + 1})
                except CommitFailedError:
                    # The group rebalanced while we were delivering (e.g. retries outlasted
                    # max_poll_interval_ms). The partition's owner resumes from the last commit;
                    # if that is us, `delivered_ids` stops a second POST and the commit follows.
                    line += " [commit failed: group rebalanced; the record will be read again]"
                print(line, flush=True)
                if args.max_messages and delivered >= args.max_messages:
                    break
    finally:
        await consumer.stop()  # leaves the group at once, so a successor takes over without waiting
        if stub:
            await stub.cleanup()
    return 0


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM (docker stop, systemd, kill) cancels the task like Ctrl-C does, so that `finally`
    # leaves the group cleanly. Nothing uncommitted is lost: it is read again on restart.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    return await run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", required=True, help="consume <prefix>deliveries.<network>")
    parser.add_argument("--group", help="consumer group (default <SENDGATE_GROUP_ID>-delivery-<network>)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stub", action="store_true", help="start a stub delivery API on 127.0.0.1")
    target.add_argument("--api-url", help="POST deliveries to this URL instead")
    parser.add_argument(
        "--fail-first",
        type=int,
        default=0,
        metavar="N",
        help="the stub answers 503 to its first N requests (shows the retries)",
    )
    parser.add_argument(
        "--stub-status",
        choices=DELIVERY_STATUSES,
        default="delivered",
        help="the delivery status the stub reports (default delivered)",
    )
    parser.add_argument(
        "--max-messages", type=int, default=0, metavar="M", help="exit after M deliveries (0: run until stopped)"
    )
    parser.add_argument(
        "--wait-topic",
        type=float,
        default=120.0,
        metavar="S",
        help="how long to wait for the gate to create the topic (default 120 s)",
    )
    args = parser.parse_args(argv)
    if args.fail_first and not args.stub:
        parser.error("--fail-first needs --stub")
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    except LookupError as exc:  # the topic never appeared
        print(f"delivery_worker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
