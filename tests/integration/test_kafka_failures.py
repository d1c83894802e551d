"""Batches that fail: retried without waiting for new input, a stall that ends the worker, and
internal errors that are not bad input.

The broker is made to refuse the decisions topic's writes by shrinking the topic's
`max.message.bytes` (a decision is a few hundred bytes), which the broker applies at once and
undoes as quickly. Contract:

- a batch whose outputs the broker refuses is retried with backoff (from about 0.5 s up to a few
  seconds) and decided again without waiting for a new record on its partition; the worker logs
  the failure naming the events partition and offset;
- a batch that keeps failing for `stall_exit_s` (SENDGATE_STALL_EXIT_S, default 300) makes the
  worker log an error naming the partition and offset and exit with a non-zero code;
- only records the decoder refuses are dead-lettered; any other exception fails the batch.
"""

from __future__ import annotations

import asyncio
import re
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from harness import T0, collect, ev, log_since, read_topic, send_events, wait_for_log

from sendgate.streams.kafka import ensure_topics
from sendgate.streams.config import Settings

REFUSING = "100"  # bytes: no decision fits
DEFAULT_MAX_MESSAGE_BYTES = "1048588"  # Kafka's default for topics
STALL_EXIT_S = 5
APP = "acme"


# --- helpers ------------------------------------------------------------------------------------


def create_topics(settings: Settings) -> None:
    """The worker's input and outputs, before it starts (so the test can configure them)."""
    asyncio.run(ensure_topics(settings, [settings.topic(n) for n in ("events", "decisions", "deadletter")]))


def set_max_message_bytes(settings: Settings, topic: str, value: str, timeout: float = 30.0) -> None:
    """Set a topic's max.message.bytes and wait until the broker reports the new value."""

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            [response] = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": value})]
            )
            assert all(r[0] == 0 for r in response.resources), f"alter_configs of {topic}: {response}"
            deadline = time.monotonic() + timeout
            while True:
                [described] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})]
                )
                values = {entry[0]: entry[1] for resource in described.resources for entry in resource[4]}
                if values.get("max.message.bytes") == value:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{topic}: max.message.bytes is {values}, not {value}")
                await asyncio.sleep(0.1)  # poll interval
        finally:
            await admin.close()

    asyncio.run(run())


def send(tag: str, ts: int) -> dict:
    """A send to a userkey that opted in at warm-up: accepted (reason opt_in)."""
    return ev(
        "send",
        request_id=f"{APP}-{tag}",
        app=APP,
        sender="s1",
        userkey="fan",
        network="sms",
        text=f"Thanks for joining ({tag})!",
        ts=ts,
    )


def decided(settings: Settings, request_id: str, timeout: float) -> list[dict]:
    """The decisions of `request_id`, waiting up to `timeout` for the first one."""
    records = collect(
        settings, settings.topic("decisions"), lambda r: any(d["request_id"] == request_id for d in r), timeout=timeout
    )
    return [d for d in records if d["request_id"] == request_id]


def warm_up(settings: Settings) -> None:
    """State events and one accepted send, decided: the worker works, the delivery topic exists, the
    userkey "fan" has opted in, and the partition's next batch holds only what the test publishes
    next (at an offset well above 0, so that a log line naming it is unambiguous)."""
    events = [ev("opt_in", event_id=f"{APP}-w{i}", app=APP, userkey=f"w{i}", ts=T0) for i in range(10)]
    events.append(ev("opt_in", event_id=f"{APP}-fan", app=APP, userkey="fan", ts=T0))
    send_events(settings, events + [send("warm", T0 + 1)])
    assert [(d["outcome"], d["reason"]) for d in decided(settings, f"{APP}-warm", 60)] == [("accepted", "opt_in")]


def names_position(line: str, partition: int, offset: int) -> bool:
    """Whether a log line names an events partition and offset: `...[2]@13`, or the word
    partition and both numbers."""
    if re.search(rf"\[{partition}\]@{offset}(?![0-9])", line):
        return True
    numbers = re.findall(r"(?<![0-9])[0-9]+(?![0-9])", line)
    return "partition" in line.lower() and str(partition) in numbers and str(offset) in numbers


def message_of(line: str) -> str:
    """A worker log line without its time and pid prefix (`[2024-06-11 10:00:00,123] [4242] [LEVEL] ...`)."""
    match = re.match(r"\[[^\]]*\] \[[0-9]+\] (.*)", line)
    return match.group(1) if match else line


# How the worker's log shows a failed batch: a warning or an error, or words saying so.
FAILURE = re.compile(r"\[WARNING\]|\[ERROR\]|\[CRITICAL\]|fail|refus|too ?large|retry", re.IGNORECASE)


def wait_exit(worker, timeout: float) -> float | None:
    """Poll until the worker process has exited; the monotonic time it was seen gone, or None."""
    deadline = time.monotonic() + timeout
    while worker.running:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)  # poll interval
    return time.monotonic()


# --- a refused batch is retried by itself -------------------------------------------------------------


def send_while_decisions_are_refused(settings, workers, rid: str):
    """A warm worker, the decisions topic refusing every batch, then one send: (worker, where its log
    stood before the send, the send's record metadata, its topic[partition]@offset)."""
    create_topics(settings)
    worker = workers.start(settings)
    warm_up(settings)
    set_max_message_bytes(settings, settings.topic("decisions"), REFUSING)
    start = worker.log_path.stat().st_size
    [sent] = send_events(settings, [send(rid, T0 + 2)])
    return worker, start, sent, f"{settings.topic('events')}[{sent.partition}]@{sent.offset}"


def test_a_refused_batch_is_decided_again_without_a_new_record(settings, workers):
    worker, start, sent, where = send_while_decisions_are_refused(settings, workers, "refused")
    wait_for_log(worker, start, FAILURE, timeout=30)  # the broker refused the batch's decision
    set_max_message_bytes(settings, settings.topic("decisions"), DEFAULT_MAX_MESSAGE_BYTES)
    restored = time.monotonic()
    # Nothing else is published: the worker must decide the batch again by itself.
    problems = []
    try:
        got = decided(settings, f"{APP}-refused", timeout=30)
    except AssertionError:
        seen = [d["decision_id"] for d in read_topic(settings, settings.topic("decisions"))]
        problems.append(
            f"the refused send ({where}) was not decided within 30 s of the broker accepting writes "
            f"again, with no new record published; decisions: {seen}"
        )
    else:
        print(f"decided {time.monotonic() - restored:.1f} s after the broker accepted writes again")
        assert [(d["outcome"], d["reason"]) for d in got][:1] == [("accepted", "opt_in")], got
    # The failure is logged (as a warning or an error) naming where the batch is stuck.
    logged = [
        message_of(line)
        for line in log_since(worker, start).splitlines()
        if any(level in line for level in ("[WARNING]", "[ERROR]", "[CRITICAL]"))
    ]
    if not any(names_position(line, sent.partition, sent.offset) for line in logged):
        problems.append(
            f"no warning or error in the worker log names the events partition {sent.partition} and "
            f"offset {sent.offset} (e.g. {where}); they were: {[line[:160] for line in logged[:4]]}"
        )
    assert not problems, "\n".join(problems)


# --- a batch that keeps failing ends the worker ----------------------------------------------------------


def test_a_batch_failing_for_stall_exit_s_ends_the_worker_with_an_error(settings, workers):
    settings = settings.with_(stall_exit_s=STALL_EXIT_S)
    worker, start, sent, where = send_while_decisions_are_refused(settings, workers, "stalled")
    published = time.monotonic()
    gone = wait_exit(worker, timeout=STALL_EXIT_S + 35)
    if gone is None:
        raise AssertionError(
            f"the worker still runs {time.monotonic() - published:.0f} s after its batch ({where}) "
            f"began to fail, with stall_exit_s={STALL_EXIT_S}; log:\n"
            f"{log_since(worker, start)[-1500:]}"
        )
    returncode = worker.process.returncode
    text = log_since(worker, start)
    assert returncode != 0, f"the stalled worker exited with {returncode}:\n{text[-2000:]}"
    assert gone - published >= STALL_EXIT_S - 0.5, (
        f"the worker exited {gone - published:.1f} s after the record was published, before stall_exit_s="
        f"{STALL_EXIT_S}:\n{text[-2000:]}"
    )
    errors = [message_of(line) for line in text.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line]
    assert any(names_position(line, sent.partition, sent.offset) for line in errors), (
        f"no ERROR line names the stalled batch's partition {sent.partition} and offset {sent.offset} ({where}): "
        f"{[line[:200] for line in errors[-5:]]}"
    )
    assert not decided_now(settings, f"{APP}-stalled")
    # the setting: default 300 s, and SENDGATE_STALL_EXIT_S
    assert Settings().stall_exit_s == 300
    assert Settings.from_env({"SENDGATE_STALL_EXIT_S": "7"}).stall_exit_s == 7
    assert Settings.from_env(settings.to_env()).stall_exit_s == STALL_EXIT_S


def decided_now(settings: Settings, request_id: str) -> list[dict]:
    return [d for d in read_topic(settings, settings.topic("decisions")) if d["request_id"] == request_id]


# --- an internal error is not bad input -------------------------------------------------------------------


def write_corrupt_clock_rows(settings: Settings, apps: tuple[str, ...]) -> None:
    """A clock row of each app that its reader cannot decode (a bug, or a row of another format),
    committed in the state changelog partition the app's events go to (Java's partitioner), before
    the worker starts: the worker recovers it and reads it at the app's first event."""
    from test_kafka_restore import write_changelog

    from sendgate.models.gate import CLOCKS, key
    from sendgate.streams.worker.checkpoint import PREFIX, commit_key
    from sendgate.streams.worker.outbox import partition_for

    rows = []
    for app in apps:
        partition = partition_for(app.encode(), settings.partitions)
        rows += [(partition, PREFIX[CLOCKS] + key(app), b"not json"), (partition, commit_key(partition), b"-1")]
    write_changelog(settings, rows)


def test_an_internal_error_fails_the_batch_and_never_dead_letters_valid_records(settings, workers):
    """Today every record is dead-lettered as "internal error: ..." when the gate raises (here: a clock
    row it cannot read). Contract: only records the decoder refuses are dead-lettered; the batch
    fails, is retried, and after stall_exit_s the worker exits non-zero. A corrupt row must never
    turn valid records into dead letters."""
    settings = settings.with_(stall_exit_s=STALL_EXIT_S)
    create_topics(settings)
    write_corrupt_clock_rows(settings, ("acme", "bolt", "cargo"))
    try:
        worker = workers.start(settings)
    except RuntimeError:  # it exited before it was ready: refusing a table it cannot read decides nothing
        worker = workers.started[-1]
    t = T0 + 60_000
    valid = []
    for app in ("acme", "bolt", "cargo"):
        valid += [
            ev(
                "inbound",
                event_id=f"{app}-i1",
                app=app,
                sender="s1",
                userkey="u1",
                network="sms",
                text="Is my order shipped?",
                ts=t,
            ),
            ev(
                "send",
                request_id=f"{app}-r1",
                app=app,
                sender="s1",
                userkey="u1",
                network="sms",
                text="Yes, it left today.",
                reply_to=f"{app}-i1",
                ts=t + 1000,
            ),
        ]
    sent = send_events(settings, valid)
    published = time.monotonic()
    positions = {(s.partition, s.offset) for s in sent}

    def dead_letters_of_valid() -> list[dict]:
        return [
            d for d in read_topic(settings, settings.topic("deadletter")) if (d["partition"], d["offset"]) in positions
        ]

    # Poll until the worker has exited, or a valid record has been dead-lettered (today's bug).
    deadline = published + STALL_EXIT_S + 35
    dead = dead_letters_of_valid()
    while not dead and worker.running and time.monotonic() < deadline:
        time.sleep(0.5)  # poll interval
        dead = dead_letters_of_valid()
    dead = dead or dead_letters_of_valid()  # the worker may have exited just after writing some
    assert not dead, (
        f"{len(dead)} of {len(sent)} valid record(s) were dead-lettered because of a corrupt row: "
        f"{[(d['partition'], d['offset'], d['error'][:120]) for d in dead[:3]]}"
    )
    assert not worker.running, (
        f"the worker still runs {time.monotonic() - published:.0f} s after its batch began "
        f"to fail, with stall_exit_s={STALL_EXIT_S}:\n{worker.log_tail(1500)}"
    )
    assert worker.process.returncode != 0, worker.log_tail(2000)
