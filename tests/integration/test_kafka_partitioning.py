"""Apps on partitions that Java's murmur2 would not pick: producers may use any partitioner.

librdkafka's default partitioner (consistent_random / crc32) is not Java's murmur2, so an app's
events can sit on any partition of `<prefix>events`. The worker must never recompute where an app
lives: the ticker sends an app's ticks to the partition its events came from, the inspection
endpoints find the owner from state, and an app seen on two partitions is detected (the record on
the second one is dead-lettered and the worker logs an error naming the app and both partitions).

Every test writes the app's events with an explicit partition, chosen so that it is NOT the one
murmur2 gives (`sendgate.streams.worker.outbox.partition_for`).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from harness import collect, create_events_topic, ev, read_topic, signed, wait_for_group

from sendgate.models.events import decode_event
from sendgate.streams.local.broker import free_port
from sendgate.streams.kafka import ensure_topics
from sendgate.streams.worker.outbox import partition_for

APP = "shop"
SENDER = "shop-sms"
HOUR = 3_600_000
TEXT = "Hi {}! Our summer sale starts today: 30% off everything with code SUN{} at http://shop.example/s"

# Paced sends come due within seconds: a 1 s pace interval, and one free recipient per cluster
# also for risky senders (the sender has no sender_profile, so it counts as young).
FAST_POLICY = """\
[burst]
pace_interval_s = 1
free_recipients = 1
risky_free_recipients = 1
risky_interval_factor = 1.0
"""


# --- helpers ------------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def produce_at(settings, records: list[tuple[int, dict, int | None]]) -> list[tuple[int, int]]:
    """Write events keyed by their app to explicit partitions of the events topic, in order, as a
    client with another partitioner would: (partition, event, record timestamp ms or None).
    Returns (partition, offset) of each."""
    for _, event, timestamp in records:  # a test bug must not become a dead letter
        decode_event(orjson.dumps(event), timestamp or now_ms(), settings.policy().max_ts_ahead_s * 1000)

    async def run() -> list[tuple[int, int]]:
        await ensure_topics(settings, [settings.topic("events")])
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    settings.topic("events"),
                    key=event["app"].encode(),
                    value=raw,
                    partition=partition,
                    timestamp_ms=timestamp,
                    headers=signed(settings, raw),
                )
                for partition, event, timestamp in records
                for raw in [orjson.dumps(event)]
            ]
            metas = [await f for f in futures]
        finally:
            await producer.stop()
        return [(m.partition, m.offset) for m in metas]

    return asyncio.run(run())


def not_murmur(app: str, partitions: int, shift: int = 1) -> tuple[int, int]:
    """(murmur2's partition for the app, another partition)."""
    murmur = partition_for(app.encode(), partitions)
    return murmur, (murmur + shift) % partitions


def fast_policy(tmp_path: Path) -> str:
    path = tmp_path / "fast-policy.toml"
    path.write_text(FAST_POLICY)
    return str(path)


def audience(app: str, userkeys: list[str], ts: int) -> list[dict]:
    """Inbounds an hour old: conversations, but too old for a later send to count as a reply."""
    return [
        ev(
            "inbound",
            event_id=f"{app}-in-{u}",
            app=app,
            sender=SENDER,
            userkey=u,
            network="sms",
            text=f"question from {u}",
            ts=ts,
        )
        for u in userkeys
    ]


def blast(app: str, userkeys: list[str], ts: int) -> list[dict]:
    return [
        ev(
            "send",
            request_id=f"{app}-b{i}",
            app=app,
            sender=SENDER,
            userkey=u,
            network="sms",
            text=TEXT.format(u, 100 + i),
            ts=ts,
        )
        for i, u in enumerate(userkeys)
    ]


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:  # server not listening yet
        return 0, repr(exc).encode()


def get_until_ok(
    port: int, path: str, timeout: float = 20.0, holds=lambda doc: True
) -> tuple[int, bytes, list[tuple[int, bytes]]]:
    """GET `path` until it answers 200 with a body for which `holds` (the state is written just
    after the decision, so a view may lag it by a checkpoint), or the deadline passes; returns the
    last answer and the distinct answers seen (status, first bytes of the body), for the failure
    message."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[int, bytes]] = []
    while True:
        status, body = http_get(port, path)
        if (status, body[:300]) not in seen:
            seen.append((status, body[:300]))
        if status == 200 and holds(orjson.loads(body)) or time.monotonic() > deadline:
            return status, body, seen
        time.sleep(0.5)  # poll interval


def tick_partitions(settings, app: str) -> dict[int, int]:
    """Partition -> number of tick events of `app` on the events topic."""
    out: dict[int, int] = {}
    for r in read_topic(settings, settings.topic("events"), with_partition=True):
        if r["value"] and r["value"].get("type") == "tick" and r["value"].get("app") == app:
            out[r["partition"]] = out.get(r["partition"], 0) + 1
    return out


def logged_error(line: str) -> str | None:
    """The message of an ERROR (or CRITICAL) line of the worker's log (after its time and pid), else None."""
    for level in ("[ERROR]", "[CRITICAL]"):
        if level in line:
            return line.split(level, 1)[1]
    return None


def line_names(line: str, *words: str) -> bool:
    """Whether `line` contains every word, numbers as whole numbers."""
    return all(re.search(rf"(?<![0-9]){re.escape(w)}(?![0-9])", line) if w.isdigit() else w in line for w in words)


# --- the ticker and the inspection views follow the app's partition -------------------------------


def test_ticker_and_inspection_follow_the_partition_the_app_lives_on(settings, workers, tmp_path):
    """A librdkafka-style producer put every event of "shop" on a partition murmur2 would not pick.
    The worker's own wall-clock ticker must release the paced sends (the test publishes no tick),
    and GET /sendgate/senders/shop/shop-sms must answer from the app's state."""
    port = free_port()
    settings = settings.with_(tick_interval_s=0.5, web_enabled=True, web_port=port, policy_file=fast_policy(tmp_path))
    murmur, p = not_murmur(APP, settings.partitions)
    create_events_topic(settings)
    workers.start(settings)

    users = ["+15550101", "+15550102", "+15550103"]
    then = now_ms() - HOUR
    produce_at(settings, [(p, e, then) for e in audience(APP, users, then)])
    t = now_ms()
    sends = blast(APP, users, t)
    produce_at(settings, [(p, e, None) for e in sends])

    def done(records: list[dict]) -> bool:
        return len([d for d in records if d["outcome"] == "released"]) >= 2

    try:
        got = collect(settings, settings.topic("decisions"), done, timeout=30)
    except AssertionError:
        so_far = [
            (d["request_id"], d["outcome"], d["reason"]) for d in read_topic(settings, settings.topic("decisions"))
        ]
        raise AssertionError(
            f"the delayed sends of {APP!r} (events on partition {p}; murmur2 would say {murmur}) were not released "
            f"within 30 s by the worker's ticker: decisions {so_far}; "
            f"the ticker's ticks per partition: {tick_partitions(settings, APP)}"
        ) from None
    assert [(d["request_id"], d["outcome"], d["reason"]) for d in got if d["outcome"] != "released"] == [
        (f"{APP}-b0", "accepted", "conversation"),
        (f"{APP}-b1", "delayed", "burst_paced"),
        (f"{APP}-b2", "delayed", "burst_paced"),
    ]
    released = [d for d in got if d["outcome"] == "released"]
    assert sorted({d["request_id"] for d in released}) == [f"{APP}-b1", f"{APP}-b2"]
    ticks = tick_partitions(settings, APP)
    assert set(ticks) == {p}, f"ticks of {APP!r} went to partitions {ticks}, its events are on {p}"

    status, body, seen = get_until_ok(port, f"/sendgate/senders/{APP}/{SENDER}")
    assert status == 200, (
        f"GET /sendgate/senders/{APP}/{SENDER} (app on partition {p}, murmur2 says {murmur}) answered {seen}"
    )
    view = orjson.loads(body)
    assert view["app"] == APP and view["sender"] == SENDER and view["conversing_userkeys"] == 3, view
    status, body, seen = get_until_ok(port, f"/sendgate/userkeys/{APP}/{users[0]}?sender={SENDER}")
    assert status == 200, f"GET /sendgate/userkeys/{APP}/{users[0]} answered {seen}"
    assert orjson.loads(body)["conversation"]["exists"] is True


def test_every_worker_answers_for_an_app_on_a_partition_murmur2_would_not_pick(settings, workers, tmp_path):
    """Two workers. The app's events sit on a partition owned by the worker that does NOT own
    murmur2's partition for it: the inspection views on both workers answer 200 (the owner
    answers; the other routes the request to the owner)."""
    ports = [free_port(), free_port()]
    runs = [
        settings.with_(web_enabled=True, web_port=port, data_dir=str(tmp_path / f"store-{i}"))
        for i, port in enumerate(ports)
    ]
    create_events_topic(settings)
    for run in runs:
        workers.start(run)
    members = wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 2 and all(m.values()))
    murmur = partition_for(APP.encode(), settings.partitions)
    [elsewhere] = [parts for parts in members.values() if murmur not in parts]
    p = elsewhere[0]  # owned by the worker that does not own murmur2's partition for the app

    users = ["+15550201", "+15550202"]
    then = now_ms() - HOUR
    produce_at(settings, [(p, e, then) for e in audience(APP, users, then)])
    produce_at(settings, [(p, e, None) for e in blast(APP, users[:1], now_ms())])
    got = collect(settings, settings.topic("decisions"), lambda r: len(r) >= 1, timeout=30)
    assert [(d["request_id"], d["outcome"]) for d in got] == [(f"{APP}-b0", "accepted")]

    answers = {}
    for port in ports:
        for path in (f"/sendgate/senders/{APP}/{SENDER}", f"/sendgate/userkeys/{APP}/{users[1]}?sender={SENDER}"):
            status, body, seen = get_until_ok(
                port, path, timeout=10, holds=lambda doc: doc.get("clusters", [None]) != []
            )
            answers[(port, path)] = (status, body, seen)
    bad = {k: v[2] for k, v in answers.items() if v[0] != 200}
    assert not bad, (
        f"app {APP!r} lives on partition {p} (members {members}; murmur2 says {murmur}); "
        f"answers that were not 200: {bad}"
    )
    for (port, path), (_, body, _) in answers.items():
        doc = orjson.loads(body)
        assert doc["app"] == APP, (port, path, doc)
        if "/senders/" in path:
            assert doc["conversing_userkeys"] == 2 and [c["recipients"] for c in doc["clusters"]] == [1], doc
        else:
            assert doc["conversation"]["exists"] is True, doc


def test_an_app_seen_on_a_second_partition_is_dead_lettered_and_logged(settings, worker):
    """ "shop" lives on partition p (its state is there); one more event of it arrives on q: a
    producer with another partitioner, or a partition count changed under a keyed topic. Deciding
    it over q's (empty) state would silently break the app's total order: it is dead-lettered with
    an error naming the app and both partitions, and the worker logs an error naming them."""
    murmur, p = not_murmur(APP, settings.partitions)
    q = murmur  # e.g. a Java client with the default partitioner
    t = now_ms()
    produce_at(
        settings,
        [
            (p, ev("opt_in", event_id="o1", app=APP, userkey="fan", ts=t), None),
            (
                p,
                ev(
                    "send",
                    request_id="r1",
                    app=APP,
                    sender=SENDER,
                    userkey="fan",
                    network="sms",
                    text="Welcome to the club",
                    ts=t,
                ),
                None,
            ),
        ],
    )
    first = collect(settings, settings.topic("decisions"), lambda r: len(r) >= 1, timeout=30)
    assert [(d["request_id"], d["outcome"], d["reason"]) for d in first] == [("r1", "accepted", "opt_in")]

    [(_, stray_offset)] = produce_at(
        settings,
        [
            (
                q,
                ev(
                    "send",
                    request_id="r2",
                    app=APP,
                    sender=SENDER,
                    userkey="fan",
                    network="sms",
                    text="Second message",
                    ts=t + 1,
                ),
                None,
            )
        ],
    )
    # A marker of another app after it on q: once its decision is out, the stray record was handled
    # (its dead letter, if any, went out in the same batch or an earlier one).
    marker = produce_at(
        settings,
        [
            (q, ev("opt_in", event_id="m1", app="marker-app", userkey="m", ts=t), None),
            (
                q,
                ev(
                    "send",
                    request_id="m-r1",
                    app="marker-app",
                    sender="m",
                    userkey="m",
                    network="sms",
                    text="marker",
                    ts=t,
                ),
                None,
            ),
        ],
    )
    assert [part for part, _ in marker] == [q, q]
    got = collect(
        settings, settings.topic("decisions"), lambda r: any(d["request_id"] == "m-r1" for d in r), timeout=30
    )
    dead = [
        d
        for d in read_topic(settings, settings.topic("deadletter"))
        if d["partition"] == q and d["offset"] == stray_offset
    ]
    decided = [(d["request_id"], d["outcome"], d["reason"]) for d in got if d["request_id"] == "r2"]
    assert dead, (
        f"the event of {APP!r} on partition {q} (offset {stray_offset}), while {APP!r} lives on {p}, "
        f"was not dead-lettered; its decisions: {decided}"
    )
    assert not decided, f"the stray event was dead-lettered and also decided: {decided}"
    error = dead[0]["error"]
    assert line_names(error, APP, str(p), str(q)), f"dead letter error does not name {APP!r}, {p} and {q}: {error!r}"
    log = worker.log_path.read_text(errors="replace").splitlines()
    errors = [message for message in map(logged_error, log) if message is not None]
    assert any(line_names(message, APP, str(p), str(q)) for message in errors), (
        f"no ERROR line in the worker log names {APP!r} and partitions {p} and {q}; ERROR lines: {errors[-5:]}"
    )
