"""A restart that always decides again: a worker is stopped and started again many times in a row,
each time in one of three ways, and every new process decides within DECIDE_S of its start.

The ways: a graceful stop (SIGTERM), a crash (kill -9), and a graceful stop after which the worker
starts on an empty store (a fresh data dir: a new machine). Each round a send is published while
the worker is down and another right after the new process starts (before it has joined its group
and recovered its tables: the window where Faust drops fetched records, faust-streaming #596);
the round is over when both are decided.

Found by the bench's smoke run: a worker restarted on an empty store after a graceful stop once
decided nothing for 300 s. A worker without its local stores reads the global tables'
changelogs at start; when Faust's changelog reader caught up before the recovery task waited for
it, the end of the recovery was signalled and cleared unseen, and the worker waited in "Restoring
state from changelog topics" for ever (streams/worker/faust_internals.py, keep_recovery_end).
"""

from __future__ import annotations

import statistics
import time

from harness import MIN, T0, DecisionWatcher, create_events_topic, ev, send_events

from sendgate.streams.local.process import WorkerProcess

RESTARTS = 51  # 17 of each way
DECIDE_S = 30.0  # the new process's start to its round's decisions
WAYS = ("graceful", "kill -9", "empty store")


def test_every_restart_decides_again_within_30_s(settings, tmp_path):
    create_events_topic(settings)
    round_ = 0

    def send(tag: str) -> str:
        request_id = f"r{round_}-{tag}"
        send_events(
            settings,
            [
                ev(
                    "send",
                    request_id=request_id,
                    app=f"app{round_ % 5}",
                    sender="s1",
                    userkey=f"u{round_}",
                    network="sms",
                    text="Your code is 1234",
                    ts=T0 + round_ * MIN,
                )
            ],
        )
        return request_id

    current = settings  # the store the next worker starts on
    worker = WorkerProcess(current, tmp_path / "worker-first.log").start().wait_ready()
    took: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        with DecisionWatcher(settings, timeout=60) as watcher:
            want = {send("first")}
            watcher.wait_until(lambda r: want <= {d["request_id"] for d in r})
            for round_ in range(1, RESTARTS + 1):
                way = WAYS[(round_ - 1) % len(WAYS)]
                if way == "kill -9":
                    worker.kill()
                else:
                    assert worker.stop() == 0, worker.log_tail()
                want = {send("while-down")}
                if way == "empty store":
                    current = settings.with_(data_dir=str(tmp_path / f"store-{round_}"))
                started = time.monotonic()
                worker = WorkerProcess(current, tmp_path / f"worker-{round_:02d}.log").start()
                want.add(send("after-start"))
                try:
                    watcher.wait_until(lambda r: want <= {d["request_id"] for d in r}, timeout=DECIDE_S)
                except AssertionError:
                    raise AssertionError(
                        f"restart {round_} ({way}): {sorted(want - {d['request_id'] for d in watcher.snapshot()})} "
                        f"not decided {DECIDE_S:.0f} s after the start; restarts so far: "
                        f"{ {w: [round(t, 1) for t in ts] for w, ts in took.items()} }\n"
                        f"--- {worker.log_path.name} ---\n{worker.log_tail(12000)}"
                    ) from None
                took[way].append(time.monotonic() - started)
    finally:
        worker.stop()
    every = [t for ts in took.values() for t in ts]
    print(
        f"\n{len(every)} restarts; start to decided s: max {max(every):.1f}, median {statistics.median(every):.1f}; "
        + "; ".join(f"{way}: max {max(ts):.1f}, median {statistics.median(ts):.1f}" for way, ts in took.items())
    )
    assert len(every) == RESTARTS
