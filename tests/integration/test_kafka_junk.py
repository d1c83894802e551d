"""The junk index across workers and partitions: reports made at the same time on different
workers all count, and replay matches each send against the index live did.

The junk index is the only state shared by all apps. A worker that decides a junk_report appends
it as a `junk_shared` event to every partition of the events log; each partition's index counts
it where that partition's log shows it (so no two workers write one row, and the index a send
sees is a function of its own partition's log).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from harness import DecisionWatcher, collect, create_events_topic, ev, signed, wait_for_group

from sendgate.models.events import decode_event
from sendgate.streams.kafka import ensure_topics

REPORTERS = 6  # junk_reject_reporters in the test policy (default 3)
JUNK = "WINNER!! You have been selected for a 1000 GBP cash prize. Call 09061701461 now to claim it, T&C apply"
POLICY = f"""\
[burst]
junk_reject_reporters = {REPORTERS}
"""
DEADLINE_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


def produce_at(settings, records: list[tuple[int, dict]]) -> list[tuple[int, int]]:
    """Write events keyed by their app to explicit partitions, in order, with one producer and
    without waiting between them (all in flight at once). Returns (partition, offset) of each."""
    for _, event in records:  # a test bug must not become a dead letter
        decode_event(orjson.dumps(event), now_ms(), settings.policy().max_ts_ahead_s * 1000)

    async def run() -> list[tuple[int, int]]:
        await ensure_topics(settings, [settings.topic("events")])
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    settings.topic("events"),
                    key=event["app"].encode(),
                    value=raw,
                    partition=partition,
                    headers=signed(settings, raw),
                )
                for partition, event in records
                for raw in [orjson.dumps(event)]
            ]
            metas = [await f for f in futures]
        finally:
            await producer.stop()
        return [(m.partition, m.offset) for m in metas]

    return asyncio.run(run())


def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "junk-policy.toml"
    path.write_text(POLICY)
    return str(path)


def test_concurrent_junk_reports_on_two_workers_all_count(settings, workers, tmp_path):
    settings = settings.with_(policy_file=policy_file(tmp_path))
    create_events_topic(settings)
    for i in range(2):
        workers.start(settings.with_(data_dir=str(tmp_path / f"store-{i}")))
    members = wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 2 and all(m.values()))
    owned = list(members.values())

    # 8 apps, two on each partition (explicit partitions: both workers hold some apps).
    apps = {f"jk{i}": i // 2 for i in range(2 * settings.partitions)}
    by_worker = [[app for app, part in apps.items() if part in parts] for parts in owned]
    assert all(len(a) >= REPORTERS // 2 for a in by_worker), (members, apps)
    # Six distinct reporters (app, userkey), half of them on each worker's partitions.
    reporters = [app for group in by_worker for app in group[: REPORTERS // 2]]
    t = now_ms()
    reports = [
        (
            apps[app],
            ev(
                "junk_report", event_id=f"{app}-j{k}", app=app, sender=f"{app}-s", userkey=f"victim{k}", text=JUNK, ts=t
            ),
        )
        for k, app in enumerate(reporters)
    ]
    produce_at(settings, reports)

    # Probe with the reported text every couple of seconds, alternately in an app of each worker,
    # until a probe on each worker is rejected as junk (all six reporters counted there).
    probe_apps = [group[-1] for group in by_worker]
    rejected: dict[int, dict] = {}
    probes: list[tuple[int, dict]] = []
    deadline = time.monotonic() + DEADLINE_S
    with DecisionWatcher(settings) as watcher:
        n = 0
        while len(rejected) < len(probe_apps):
            worker_index = n % len(probe_apps)
            if worker_index in rejected:
                n += 1
                continue
            if time.monotonic() > deadline:
                seen = [(w, d["app"], d["outcome"], d["reason"], d["detail"]) for w, d in probes[-4:]]
                raise AssertionError(
                    f"no probe of the reported text was rejected as junk_similar on worker(s) "
                    f"{sorted(set(range(len(probe_apps))) - set(rejected))} within {DEADLINE_S:.0f} s, after "
                    f"{REPORTERS} reports from distinct (app, userkey) pairs over both workers' partitions "
                    f"{owned}; {len(probes)} probe(s), the last: {seen}"
                )
            app = probe_apps[worker_index]
            rid = f"probe{n}"
            ts = now_ms()
            produce_at(
                settings,
                [
                    (apps[app], ev("opt_in", event_id=f"{rid}-o", app=app, userkey=rid, ts=ts)),
                    (
                        apps[app],
                        ev(
                            "send",
                            request_id=rid,
                            app=app,
                            sender="probe-sender",
                            userkey=rid,
                            network="sms",
                            text=JUNK,
                            ts=ts,
                        ),
                    ),
                ],
            )
            [decision] = [
                d
                for d in watcher.wait_until(lambda r: any(d["request_id"] == rid for d in r), timeout=30)
                if d["request_id"] == rid
            ][:1]
            probes.append((worker_index, decision))
            if (decision["outcome"], decision["reason"]) == ("rejected", "junk_similar"):
                rejected[worker_index] = decision
                continue
            # not yet: the reports may still be on their way to the index; probe again shortly
            time.sleep(2.0)  # the probing interval, not a wait for a result (the loop re-checks)
            n += 1
    for decision in rejected.values():
        assert f"{REPORTERS} recipients reported" in decision["detail"], decision


def test_replay_matches_each_send_against_the_junk_index_its_own_partition_showed_live(settings, workers, tmp_path):
    """Reports of one app (partition 1) and a blast of another (partition 0) under load: a send is
    matched against the reports its own partition's log holds before it, so replay, which reads the
    two partitions in whatever order they are fetched, decides every send as live did."""
    from test_kafka_replay import cli

    create_events_topic(settings)
    workers.start(settings)
    wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 1 and all(m.values()))
    t = now_ms() - 60_000
    blaster, reporter, n = "blaster", "reporter", 240
    consent = [(0, ev("opt_in", event_id=f"o{i}", app=blaster, userkey=f"u{i}", source="web", ts=t)) for i in range(n)]
    blast = [
        (
            0,
            ev(
                "send",
                request_id=f"b{i}",
                app=blaster,
                sender="s",
                userkey=f"u{i}",
                network="sms",
                text=JUNK.replace("1000", str(1000 + i)),
                ts=t + 1 + i,
            ),
        )
        for i in range(n)
    ]
    reports = [
        (1, ev("junk_report", event_id=f"j{k}", app=reporter, sender="r", userkey=f"victim{k}", text=JUNK, ts=t))
        for k in range(3)
    ]
    # the reports in flight with the first half of the blast; the second half once partition 0 shows them
    produce_at(settings, consent + blast[: n // 2] + reports)
    collect(settings, settings.topic("events"), lambda r: sum(x["type"] == "junk_shared" for x in r) >= 2 * 3)
    produce_at(settings, blast[n // 2 :])
    live = collect(
        settings,
        settings.topic("decisions"),
        lambda r: {d["request_id"] for d in r} >= {b["request_id"] for _, b in blast},
    )
    reasons = {d["reason"] for d in live if d["request_id"] in {f"b{i}" for i in range(n // 2, n)}}
    assert reasons == {"junk_similar"}, reasons  # the second half came after the reports in partition 0's log
    for run in range(2):  # the issue saw 2 runs of 3 differ
        changed = str(tmp_path / f"junk{run}-changed.jsonl")
        result = cli(settings, "replay", "--name", f"junk{run}", "--compare", "--changed-out", changed)
        assert f"requests: {n} live, {n} replayed, 0 changed" in result.stdout, result.stdout
