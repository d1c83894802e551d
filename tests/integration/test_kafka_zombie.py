"""A worker frozen (SIGSTOP) past its session timeout under load, while the other worker of the
group takes its partitions, then resumed (SIGCONT): a zombie. Whatever it was doing when it froze,
it must cause no conflicting decision and no second delivery (docs/guarantees.md, "Zombies").

Nor may it leave a row that a restore or a rebuild would read as the truth: the state changelog,
as every recovery reads it (checkpoint.py, `CheckpointLog`), holds what a rebuild from the log
computes. Before checkpoint tokens and epochs, a worker frozen inside the send of a batch's commit
records landed them after the new owner's writes, and recovery took them for the truth (seen with
this seed at 15 s: pending, due and cluster rows of one app differed from a rebuild)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from harness import (
    DecisionWatcher,
    committed_state,
    create_events_topic,
    read_topic,
    send_events,
    uninterrupted,
    wait_for_group,
)
from test_kafka_faults import Outcome, app_segments, apps_on_partitions, chunks, merge
from test_kafka_replay import cli

SEED = int(os.environ.get("SENDGATE_FAULT_SEED", "20240611"))


@pytest.mark.parametrize("pause_s", [15, 60])
def test_a_worker_frozen_past_its_session_and_resumed_corrupts_nothing(settings, workers, tmp_path, pause_s):
    rng = random.Random(SEED + pause_s)
    apps = apps_on_partitions(settings.partitions, 2)
    segments = [app_segments(app, blast=40) for app in apps]
    events = merge(rng, [[e for seg in s for e in seg] for s in segments])  # each app's order kept
    expected = uninterrupted(events)
    parts = chunks(rng, events, 10)

    create_events_topic(settings)
    a = workers.start(settings)
    workers.start(settings.with_(data_dir=str(tmp_path / "worker-b")))
    wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 2 and all(m.values()))
    sent = []
    with DecisionWatcher(settings, timeout=180) as watcher:
        # half-way through what the first half of the traffic decides
        frozen = watcher.when(
            len(uninterrupted([e for part in parts[:5] for e in part])) // 2,
            lambda: os.kill(a.process.pid, signal.SIGSTOP),
        )
        for part in parts[:5]:  # load: the freeze lands while both workers decide
            sent += send_events(settings, part)
        assert frozen.wait(120), f"the freeze point was never reached: {watcher.count} of {len(expected)} decisions"
        froze_at = time.monotonic()
        for part in parts[5:8]:  # traffic while A is frozen: B takes A's partitions after the session timeout
            sent += send_events(settings, part)
        time.sleep(max(0.0, froze_at + pause_s - time.monotonic()))  # holds the fault; no result is awaited
        os.kill(a.process.pid, signal.SIGCONT)
        for part in parts[8:]:  # traffic while the zombie wakes, finds itself out of the group and rejoins
            sent += send_events(settings, part)
    out = Outcome(settings, sent, timeout=240)  # waits until the group has consumed everything
    print(f"\npause {pause_s} s; " + out.report(expected, froze_at))
    assert not out.problems, out.problems

    # no conflicting decision: every request's decisions (first copy of each id) are the
    # uninterrupted run's, in its order
    firsts: dict[tuple[str, str], list[dict]] = {}
    seen: set[str] = set()
    for d in out.live:
        if d["decision_id"] not in seen:
            seen.add(d["decision_id"])
            firsts.setdefault((d["app"], d["request_id"]), []).append(d)
    want: dict[tuple[str, str], list[dict]] = {}
    for d in expected:
        want.setdefault((d["app"], d["request_id"]), []).append(d)
    conflicting = {
        k: ([d["decision_id"] for d in firsts.get(k, [])], [d["decision_id"] for d in v])
        for k, v in want.items()
        if firsts.get(k) != v
    }
    assert not conflicting, f"{len(conflicting)} request(s) decided otherwise: {list(conflicting.items())[:5]}"

    # no second delivery: one decision id per delivered request
    delivered: dict[tuple[str, str], set[str]] = {}
    for d in read_topic(settings, settings.topic("deliveries.sms")):
        delivered.setdefault((d["app"], d["request_id"]), set()).add(d["decision_id"])
    assert not [k for k, ids in delivered.items() if len(ids) > 1]

    # no row that a restore or a rebuild reads otherwise than the log says
    workers.stop_all()
    live = committed_state(settings)
    cli(settings, "rebuild")
    rebuilt = committed_state(settings)
    differ = {k for k in live.keys() | rebuilt.keys() if live.get(k) != rebuilt.get(k)}
    shown = [(k, live.get(k, (None, b""))[1][:40], rebuilt.get(k, (None, b""))[1][:40]) for k in sorted(differ)[:5]]
    assert not differ, f"{len(differ)} row(s) differ from a rebuild (key, live, rebuilt), e.g. {shown}"
