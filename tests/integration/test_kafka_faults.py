"""Faults on a real broker with real worker processes: SIGKILL mid-stream, a broker restart during
traffic, a rebalance between two workers, and one of two workers killed. Whatever happens, every input record is accounted
for (decided, dead-lettered or applied) and the decisions are those of one uninterrupted run.

Seeded: set SENDGATE_FAULT_SEED to explore other kill points (the default is the one CI runs).
"""

from __future__ import annotations

import os
import random
import time

import orjson
from aiokafka.partitioner import murmur2

from harness import (
    DAY,
    MIN,
    T0,
    DecisionWatcher,
    Invalid,
    account,
    collect,
    create_events_topic,
    duplicates,
    ev,
    ids_by_request,
    make_settings,
    read_topic,
    send_events,
    uninterrupted,
    wait_consumed,
    wait_for_group,
)

from sendgate.models.gate import DUE, PENDING, SCHEDULES, Table
from sendgate.models.pending import ReleaseSchedule
from sendgate.streams.local.broker import LocalKafka
from sendgate.streams.worker.checkpoint import PREFIX, STATE

SEED = int(os.environ.get("SENDGATE_FAULT_SEED", "20240611"))
T = T0 + 3 * 60 * MIN
TEMPLATES = [
    "Hi {}! Flash sale: code {} gives 30% off at http://shop.example/{} until midnight",
    "Dear {}, your loyalty points ({}) expire soon. Redeem them now: http://points.example/{}",
]
PLAIN = [
    "Your parcel {} is at the pickup point until Friday",
    "Thanks for your payment of {} EUR",
    "Your table for {} is booked, see you tonight",
    "Password changed on device {}",
    "Reminder: dentist appointment at {} tomorrow",
]
JUNK = "You WON a free cruise to the Bahamas!! Call 09061234567 now to claim your prize, reply {}"


# --- the scenario ---------------------------------------------------------------------------------


def app_segments(app: str, users: int = 30, blast: int = 30, second: int = 20, junk: bool = False) -> list[list]:
    """Four segments of one app's events, every event with an explicit ts:

    0. profile, conversations, a STOP, an opt-in, a grant and its revocation, plain sends, the
       start of a paced blast (and, with `junk`, a junk report and a junk-similar send);
    1. the rest of the blast, a tick that releases its first delayed requests, an opt-out of a
       waiting recipient, a cancel (and one of an unknown request), a reply, an opt-in send;
    2. a tick releasing more, a START that undoes the STOP, a second paced template, a tick;
    3. the final tick (everything due) and probes of the consent state: sends to opted-out users.
    """

    def send(rid: str, user: str, text: str, ts: int, **extra) -> dict:
        return ev(
            "send",
            request_id=f"{app}-{rid}",
            app=app,
            sender="s1",
            userkey=user,
            network="sms",
            text=text,
            ts=ts,
            **extra,
        )

    seg0 = [
        ev("sender_profile", event_id=f"{app}-p", app=app, sender="s1", registered_ts=T - 400 * DAY, ts=T - 120 * MIN)
    ]
    seg0 += [
        ev(
            "inbound",
            event_id=f"{app}-i{i}",
            app=app,
            sender="s1",
            userkey=f"u{i}",
            network="sms",
            text=f"question {i}",
            ts=T - 60 * MIN,
        )
        for i in range(users)
    ]
    seg0 += [
        ev(
            "inbound",
            event_id=f"{app}-stop3",
            app=app,
            sender="s1",
            userkey="u3",
            network="sms",
            text=" stop ",
            ts=T - 50 * MIN,
        ),
        ev("opt_in", event_id=f"{app}-o1", app=app, userkey="fan", source="web", ts=T - 40 * MIN),
        ev("app_policy", event_id=f"{app}-g1", app=app, unrestricted=True, reason="verified", ts=T - 30 * MIN),
        send("cold1", "stranger", "Welcome aboard", T - 29 * MIN),
        ev("app_policy", event_id=f"{app}-g2", app=app, unrestricted=False, reason="abuse", ts=T - 28 * MIN),
        send("cold2", "stranger2", "Welcome aboard", T - 27 * MIN),
        send("stopped", "u3", "We miss you", T - 26 * MIN),
    ]
    seg0 += [
        send(f"plain{k}", f"u{users - 1 - k}", text.format(100 + k), T - 25 * MIN + k * 1000)
        for k, text in enumerate(PLAIN)
    ]
    if junk:  # the junk-similar send comes in segment 3, once the report's share is in the log (the test waits)
        seg0 += [
            ev(
                "junk_report",
                event_id=f"{app}-j1",
                app=app,
                sender="s2",
                userkey="u7",
                text=JUNK.format("YES"),
                ts=T - 20 * MIN,
            )
        ]
    sends = [send(f"b{i:02d}", f"u{i}", TEMPLATES[0].format(f"N{i}", 100 + i, i), T + i * 1000) for i in range(blast)]
    half = blast // 2
    seg0 += sends[:half]
    seg1 = sends[half:] + [
        ev("tick", app=app, ts=T + 4 * MIN),
        ev("opt_out", event_id=f"{app}-o2", app=app, userkey="u20", source="support", ts=T + 5 * MIN),
        ev("cancel", request_id=f"{app}-b21", app=app, ts=T + 5 * MIN),
        ev("cancel", request_id=f"{app}-nope", app=app, ts=T + 5 * MIN),
        ev(
            "inbound",
            event_id=f"{app}-q5",
            app=app,
            sender="s1",
            userkey="u5",
            network="sms",
            text="when?",
            ts=T + 5 * MIN,
        ),
        send("fan1", "fan", "Thanks for subscribing", T + 6 * MIN),
        send("r-u5", "u5", "Re: tomorrow at 10", T + 6 * MIN, reply_to=f"{app}-q5"),
    ]
    t2 = T + 14 * MIN
    seg2 = [
        ev("tick", app=app, ts=T + 12 * MIN),
        ev(
            "inbound",
            event_id=f"{app}-start3",
            app=app,
            sender="s1",
            userkey="u3",
            network="sms",
            text="START",
            ts=T + 13 * MIN,
        ),
        send("again3", "u3", "Welcome back!", T + 13 * MIN),
    ]
    seg2 += [send(f"d{i:02d}", f"u{i}", TEMPLATES[1].format(f"N{i}", 500 + i, i), t2 + i * 1000) for i in range(second)]
    seg2 += [ev("tick", app=app, ts=T + 20 * MIN)]
    seg3 = [
        ev("tick", app=app, ts=T + 90 * MIN),
        ev("opt_out", event_id=f"{app}-o3", app=app, userkey="u7", ts=T + 91 * MIN),
        send("probe-u20", "u20", "Are you still there?", T + 92 * MIN),
        send("probe-u7", "u7", "Are you still there?", T + 92 * MIN),
        send("probe-u3", "u3", "Are you still there?", T + 92 * MIN),
        *([send("cruise", "u8", JUNK.format("Y"), T + 93 * MIN)] if junk else []),
        send("last", "u0", "See you soon", T + 93 * MIN),
    ]
    return [seg0, seg1, seg2, seg3]


def invalid_records(app: str, n: int) -> list[Invalid]:
    """Records the worker must dead-letter: not JSON, keyed by another app, ts far ahead of the record."""
    good = ev("opt_in", event_id=f"{app}-bad{n}", app=app, userkey="nobody", ts=T)
    ahead = {**good, "ts": int(time.time() * 1000) + 3 * 60 * MIN}
    return [
        Invalid(b"\xff not json " + f"{app}-{n}".encode(), key=app.encode(), note="not json"),
        Invalid(orjson.dumps(good), key=b"someone-else", note="mis-keyed"),
        Invalid(orjson.dumps(ahead), key=app.encode(), note="ts ahead"),
    ]


def merge(rng: random.Random, streams: list[list]) -> list:
    """A seeded random interleaving that keeps each stream's order (each app's order)."""
    streams = [list(s) for s in streams if s]
    out = []
    while streams:
        i = rng.randrange(len(streams))
        out.append(streams[i].pop(0))
        if not streams[i]:
            streams.pop(i)
    return out


def chunks(rng: random.Random, items: list, n: int) -> list[list]:
    cuts = sorted(rng.sample(range(1, len(items)), n - 1))
    return [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)])]


def apps_on_partitions(partitions: int, per_partition: int) -> list[str]:
    """App names that the default partitioner spreads evenly (`per_partition` apps on each)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per_partition for v in chosen.values()):
        name = f"app{i}"
        p = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[p]) < per_partition:
            chosen[p].append(name)
        i += 1
    return [name for p in range(partitions) for name in chosen[p]]


# --- comparing with the uninterrupted run ---------------------------------------------------------


def compare_ids(live: list[dict], expected: list[dict]) -> list[str]:
    """Requests whose set of decision ids differs from the uninterrupted run's, described."""
    got, want = ids_by_request(live), ids_by_request(expected)
    problems = []
    for rid in sorted(set(got) | set(want)):
        g, w = got.get(rid, set()), want.get(rid, set())
        if g != w:
            problems.append(f"{rid}: missing {sorted(w - g)} unexpected {sorted(g - w)}")
    return problems


def divergent(live: list[dict], expected: list[dict]) -> list[str]:
    """Decisions whose id the uninterrupted run has but whose other fields differ (detail aside)."""
    want = {d["decision_id"]: d for d in expected}
    out = []
    for d in live:
        w = want.get(d["decision_id"])
        if w is None:
            continue
        diff = {k: (w.get(k), d.get(k)) for k in set(w) | set(d) if k != "detail" and w.get(k) != d.get(k)}
        if diff:
            out.append(f"{d['decision_id']}: {diff}")
    return sorted(set(out))


def two_different_endings(live: list[dict]) -> list[str]:
    """Delayed requests released or cancelled with more than one distinct decision."""
    endings: dict[tuple[str, str], set[bytes]] = {}
    for d in live:
        if d["outcome"] in ("released", "cancelled"):
            endings.setdefault((d["app"], d["request_id"]), set()).add(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))
    return [f"{rid}: {[orjson.loads(x) for x in docs]}" for rid, docs in endings.items() if len(docs) > 1]


def by_id(decisions: list[dict]) -> dict[str, dict]:
    return {d["decision_id"]: d for d in decisions}


class Outcome:
    """Everything the workers made of the published records, read once they have caught up (or
    once waiting for that has failed: then `problems` says so and the rest is still filled in)."""

    def __init__(self, settings, sent: list, timeout: float = 90.0) -> None:
        self.problems: list[str] = []
        self.lag: dict[int, int] | None = None
        try:
            self.lag = wait_consumed(settings, timeout=timeout)  # lag when the wait began
        except AssertionError as exc:
            self.problems.append(f"[STALLED] {exc}")
        self.records = read_topic(settings, settings.topic("decisions"), with_partition=True)
        self.live = [r["value"] for r in self.records]
        self.dead = read_topic(settings, settings.topic("deadletter"))
        self.counts = None
        try:
            self.counts = account(settings, sent, self.live, self.dead, timeout=5 if self.problems else timeout)
        except AssertionError as exc:
            self.problems.append(f"[ACCOUNTING] {exc}")
        self.duplicates = duplicates(self.live)

    def report(self, expected: list[dict], started: float) -> str:
        extra = sum(self.duplicates.values()) - len(self.duplicates)
        return (
            f"accounting: {self.counts}; expected decisions {len(expected)}; lag when the wait began: "
            f"{self.lag}; run {time.monotonic() - started:.1f} s\n"
            f"duplicates: {len(self.duplicates)} decision ids seen more than once, {extra} extra records"
        )


# --- 1. kill -9 ---------------------------------------------------------------------------------------


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def changelog_rows(settings, table: Table, app: str) -> list[dict]:
    """The state changelog's records of one kind of row whose key belongs to `app`, in order (keys
    without the kind's prefix)."""
    kind = PREFIX[table]
    rows = []
    for r in read_topic(settings, settings.changelog_topic(STATE), with_partition=True):
        if r["key"].startswith(kind):
            r["key"] = r["key"][len(kind) :]
            if r["key"] == app.encode() or r["key"].startswith(app.encode() + b"\x1f"):
                rows.append(r)
    return rows


def explain(
    settings,
    lost: dict[tuple[str, str], set[str]],
    changed: dict[tuple[str, str], set[str]],
    live: list[dict],
    expected: list[dict],
    kills: list[dict],
) -> str:
    """What was lost or changed, with the offsets and times of the records that show how."""
    from sendgate.models.pending import MINUTE_MS

    lines = [f"kills (wall clock): {[(k['round'], _clock(k['killed_at_ms'])) for k in kills if 'killed_at_ms' in k]}"]
    want = ids_by_request(expected)
    slot = {(d["app"], d["request_id"]): d["deliver_at"] for d in expected if d["outcome"] == "delayed"}

    def decisions_of(rid: str) -> list[str]:
        return [
            f"    decision  p{r['partition']}@{r['offset']} {_clock(r['timestamp'])} {r['value']['decision_id']}"
            f" deliver_at={r['value'].get('deliver_at')}"
            for r in live
            if r["value"]["request_id"] == rid
        ]

    def row(table: str, r: dict, text: str) -> str:
        return f"    {table:9s} p{r['partition']}@{r['offset']} {_clock(r['timestamp'])} {text}"

    if lost:
        lines.append(f"[LOST] {sum(map(len, lost.values()))} decision(s) of the uninterrupted run were never emitted:")
    for (app, rid), ids in sorted(lost.items()):
        lines.append(f"  {rid}: missing {sorted(ids)}")
        lines += decisions_of(rid)
        if (app, rid) not in slot:
            continue
        minute = slot[(app, rid)] // MINUTE_MS
        pending = [
            row("pending", r, "row" if r["raw"] else "tombstone")
            for r in changelog_rows(settings, PENDING, app)
            if r["key"].endswith(b"\x1f" + rid.encode())
        ]
        lines += pending or [f"    pending   no changelog record for {rid}"]
        due_key = f"{app}\x1f{minute}".encode()
        due = [
            row("due", r, (r["raw"] or b"tombstone").decode()[:100])
            for r in changelog_rows(settings, DUE, app)
            if r["key"] == due_key
        ]
        lines += due or [f"    due       no changelog record for minute {minute}"]
        schedules = changelog_rows(settings, SCHEDULES, app)
        listing = [
            f"p{r['partition']}@{r['offset']}"
            for r in schedules
            if r["raw"] and minute in ReleaseSchedule.from_bytes(r["raw"]).minutes
        ]
        lines.append(
            f"    schedules rows listing minute {minute}: {listing or 'none ever'} (of {len(schedules)} rows of {app})"
        )
    if changed:
        lines.append(f"[CHANGED] {sum(map(len, changed.values()))} decision id(s) the uninterrupted run does not make:")
    for (app, rid), ids in sorted(changed.items()):
        lines.append(f"  {rid}: unexpected {sorted(ids)}; the uninterrupted run: {sorted(want.get((app, rid), []))}")
        lines += decisions_of(rid)
    return "\n".join(lines)


def test_sigkill_mid_stream_loses_nothing(settings, workers):
    """Three SIGKILLs at seeded random points while a worker works through a mixed stream of four
    apps, a new worker with the same settings (same store, same group) after each.

    Asserted (docs/guarantees.md): every record accounted for; per request, exactly the decision
    ids of an uninterrupted run, none missing ([LOST]) and none different ([CHANGED]); no delayed
    request released twice with different decisions; consent intact. Repeats of the same decision
    (same decision_id, same fields) are allowed and counted.
    """
    rng = random.Random(SEED)
    started = time.monotonic()
    apps = ["acme", "bolt", "cargo", "dune"]
    per_app = [app_segments(app, junk=(app == "acme")) for app in apps]
    segments = []
    for k in range(4):
        merged = merge(rng, [s[k] for s in per_app])
        for bad in invalid_records(apps[k], k):  # dead letters mixed in
            merged.insert(rng.randrange(len(merged) + 1), bad)
        segments.append(merged)
    everything = [e for seg in segments for e in seg]
    expected = uninterrupted(everything)
    upto = [len(uninterrupted([e for seg in segments[: k + 1] for e in seg])) for k in range(4)]
    new_per_segment = [b - a for a, b in zip([0, *upto], upto)]

    sent = []
    create_events_topic(settings)
    worker = workers.start(settings)
    kills: list[dict] = []
    restarted = []
    with DecisionWatcher(settings, timeout=120) as watcher:
        for k, segment in enumerate(segments):
            killed = None
            if k < 3:
                at = watcher.count + rng.randint(1, max(1, new_per_segment[k] * 4 // 5))  # surely reached
                kill = {"round": k + 1, "after_decisions": at, "segment_events": len(segment)}
                kills.append(kill)

                def crash(victim=worker, kill=kill) -> None:
                    victim.kill()
                    kill["killed_at_ms"] = int(time.time() * 1000)
                    kill["events_sent_at_kill"] = len(sent)

                killed = watcher.when(at, crash)
            if k == 3:  # the junk report's share must precede the junk-similar send in the log
                collect(
                    settings,
                    settings.topic("events"),
                    lambda r: any(b'"type":"junk_shared"' in (x or b"") for x in r),
                    json=False,
                )
            for chunk in chunks(rng, segment, 3):
                sent += send_events(settings, chunk)
            if killed is not None:
                assert killed.wait(120), f"round {k + 1}: {watcher.count} decisions, kill point {at} never reached"
                worker = workers.start(settings)  # same settings: same group, same local store
                restarted.append(worker)
    out = Outcome(settings, sent)
    records, live = out.records, out.live
    print(f"\nseed {SEED}; kills: {kills}")
    print(out.report(expected, started))
    print("same id, other fields (detail aside):", *divergent(live, expected)[:40], sep="\n  ")

    # Nothing lost, nothing invented: per request, the decision ids of one uninterrupted run.
    got, want = ids_by_request(live), ids_by_request(expected)
    lost = {rid: want[rid] - got.get(rid, set()) for rid in want if want[rid] - got.get(rid, set())}
    changed = {rid: got[rid] - want.get(rid, set()) for rid in got if got[rid] - want.get(rid, set())}
    # No delayed request released (or cancelled) twice with different decisions.
    twice = two_different_endings(live)
    print(
        f"re-decided differently: {sum(map(len, changed.values()))} decision id(s) of {len(changed)} request(s); "
        f"released twice with different slots: {len(twice)}"
    )
    assert not (out.problems or lost or changed or twice), "\n".join(
        out.problems + [explain(settings, lost, changed, records, expected, kills)] + twice
    )
    assert not divergent(live, expected), "\n".join(divergent(live, expected))
    if settings.processing_guarantee == "at_least_once":  # each restart started on the killed worker's state
        for w in restarted:
            assert "the state table's local store is kept" in w.log_path.read_text(errors="replace"), w.log_tail()
    # Consent state survived the crashes: opted out before the last restart, and after it.
    got_ids = by_id(live)
    for app in apps:
        assert f"{app}:{app}-probe-u20:rejected:opted_out" in got_ids  # opt-out of segment 1, crashes since
        assert f"{app}:{app}-probe-u7:rejected:opted_out" in got_ids  # opt-out of the last segment
        assert f"{app}:{app}-probe-u3:accepted:conversation" in got_ids  # STOP then START
        assert (
            f"{app}:{app}-b20:cancelled:opted_out" in got_ids
            and f"{app}:{app}-b21:cancelled:cancelled_by_app" in got_ids
        )
    assert len(kills) == 3 and out.counts.records == len(everything)


# --- 2. broker restart ------------------------------------------------------------------------------


def test_worker_reconnects_after_a_broker_restart_and_catches_up(tmp_path, workers):
    """A dedicated broker is stopped (SIGTERM) while the worker is deciding the first part of the
    stream, and started again (same data dir, same port); then the rest is published."""
    rng = random.Random(SEED + 1)
    started = time.monotonic()
    kafka = LocalKafka(data_dir=tmp_path / "kafka")
    kafka.start()
    try:
        settings = make_settings(kafka.bootstrap, tmp_path / "worker")
        apps = ["acme", "bolt", "cargo"]
        per_app = [app_segments(app, users=20, blast=24, second=12) for app in apps]
        part1 = merge(rng, [s[0] + s[1] for s in per_app]) + invalid_records("acme", 1)
        part2 = merge(rng, [s[2] + s[3] for s in per_app]) + invalid_records("bolt", 2)
        expected = uninterrupted(part1 + part2)
        n1 = len(uninterrupted(part1))
        create_events_topic(settings)
        worker = workers.start(settings)
        sent = []
        stop: dict = {}

        def stop_broker() -> None:  # runs in the watcher's thread, as soon as half of part 1 is decided
            stop["seen"], stop["began"] = len(watcher.records), time.monotonic()
            kafka.stop()
            stop["took"] = time.monotonic() - stop["began"]

        with DecisionWatcher(settings, timeout=120) as watcher:
            stopped = watcher.when(n1 // 2, stop_broker)
            sent += send_events(settings, part1)
            assert stopped.wait(120), f"{watcher.count} decisions, broker never stopped"
        assert worker.running, "worker exited when the broker stopped:\n" + worker.log_tail()
        kafka.start()  # same data dir, same port
        print(
            f"\nbroker stopped after {stop['seen']}/{n1} decisions of part 1; the stop took {stop['took']:.1f} s, "
            f"the broker was back {time.monotonic() - stop['began']:.1f} s after the stop began"
        )
        assert worker.running, "worker exited while the broker was down:\n" + worker.log_tail()
        sent += send_events(settings, part2)
        out = Outcome(settings, sent, timeout=150)
        print(out.report(expected, started))
        print("same id, other fields (detail aside):", *divergent(out.live, expected), sep="\n  ")
        problems = (
            out.problems
            + compare_ids(out.live, expected)
            + [f"[RELEASED TWICE, DIFFERENTLY] {t}" for t in two_different_endings(out.live)]
        )
        assert worker.running, "worker exited:\n" + worker.log_tail()
        assert not problems, "decisions differ from the uninterrupted run:\n" + "\n".join(problems)
    finally:
        workers.stop_all()  # before the broker goes away, so that the workers can stop cleanly
        workers.started.clear()
        kafka.close()


# --- 3. two workers, a rebalance --------------------------------------------------------------------


def test_rebalance_between_two_workers_keeps_per_app_order_and_state(settings, workers, tmp_path):
    """Worker A alone, then B joins (own store), then A stops gracefully: 8 apps on 4 partitions.

    Records are published while the partitions move, on purpose: that is when a worker is between
    generations and recovering tables, and records must be neither dropped nor decided twice.
    """
    rng = random.Random(SEED + 2)
    started = time.monotonic()
    apps = apps_on_partitions(settings.partitions, 2)
    per_app = [app_segments(app) for app in apps]
    parts = [
        merge(rng, [s[0] for s in per_app]),
        merge(rng, [s[1] + s[2] for s in per_app]) + invalid_records(apps[0], 2),
        merge(rng, [s[3] for s in per_app]) + invalid_records(apps[5], 3),
    ]
    expected = uninterrupted([e for p in parts for e in p])
    n = [len(uninterrupted([e for p in parts[: k + 1] for e in p])) for k in range(3)]

    create_events_topic(settings)
    a = workers.start(settings)
    sent = send_events(settings, parts[0])
    with DecisionWatcher(settings, timeout=120) as watcher:
        watcher.wait_until(lambda r: len(r) >= n[0])
        workers.start(settings.with_(data_dir=str(tmp_path / "worker-b")))
        first, *rest = chunks(rng, parts[1], 4)
        sent += send_events(settings, first)  # traffic while B joins and the partitions move
        shared = wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 2 and all(m.values()))
        for chunk in rest:
            sent += send_events(settings, chunk)
        watcher.wait_until(lambda r: len({d["decision_id"] for d in r}) >= n[1], timeout=150)
        assert a.stop() == 0, a.log_tail()  # graceful: A commits and hands its partitions over
        first, *rest = chunks(rng, parts[2], 3)
        sent += send_events(settings, first)  # traffic while B takes A's partitions
        alone = wait_for_group(settings, lambda state, m: state == "Stable" and list(m.values()) == [[0, 1, 2, 3]])
        for chunk in rest:
            sent += send_events(settings, chunk)
    out = Outcome(settings, sent)
    print(f"\napps {apps}; events partitions with A and B: {shared}; B alone: {alone}")
    print(out.report(expected, started))
    print("same id, other fields (detail aside):", *divergent(out.live, expected), sep="\n  ")

    # Per app, the decisions in log order (an app's decisions share one partition), first copy of
    # each decision id only, are the uninterrupted run's, field by field.
    problems = list(out.problems)
    live_ids = {d["decision_id"] for d in out.live}
    missing = [d["decision_id"] for d in expected if d["decision_id"] not in live_ids]
    if missing:
        problems.append(f"[LOST] {len(missing)} decision(s) never emitted: {missing[:20]}")
    for app in apps:
        partitions = {r["partition"] for r in out.records if r["value"]["app"] == app}
        assert len(partitions) == 1, f"{app}: decisions on partitions {partitions}"
        seen, sequence = set(), []
        for d in out.live:
            if d["app"] == app and d["decision_id"] not in seen:
                seen.add(d["decision_id"])
                sequence.append(d)
        want = [d for d in expected if d["app"] == app]
        got_ids, want_ids = [d["decision_id"] for d in sequence], [d["decision_id"] for d in want]
        if got_ids != want_ids:
            first = next(
                (i for i, (g, w) in enumerate(zip(got_ids, want_ids)) if g != w), min(len(got_ids), len(want_ids))
            )
            problems.append(
                f"{app}: sequence differs at {first}: live {got_ids[first : first + 4]} "
                f"expected {want_ids[first : first + 4]} ({len(got_ids)} vs {len(want_ids)} decisions)"
            )
        elif sequence != want:
            problems += [f"{app}: {g['decision_id']} differs: {g} != {w}" for g, w in zip(sequence, want) if g != w][:3]
    assert not problems, "per-app decisions differ from the uninterrupted run:\n" + "\n".join(problems)
    # State followed the partitions: consent and pending requests decided after the moves.
    got = by_id(out.live)
    for app in apps:
        assert (
            f"{app}:{app}-probe-u20:rejected:opted_out" in got and f"{app}:{app}-probe-u3:accepted:conversation" in got
        )
        assert f"{app}:{app}-b20:cancelled:opted_out" in got and f"{app}:{app}-b21:cancelled:cancelled_by_app" in got
        released_last = [
            d for d in expected if d["app"] == app and d["outcome"] == "released" and d["ts"] == T + 90 * MIN
        ]
        assert released_last and all(d["decision_id"] in got for d in released_last)


# --- 4. one of two workers killed -----------------------------------------------------------------


def test_the_survivor_decides_what_reached_the_killed_workers_partitions(settings, workers, tmp_path):
    """Two workers, B killed (kill -9) with a 30 s session timeout; then every app gets traffic.

    Found by the bench's fail-over round (4 of 12 rounds, at 10 s and 30 s; this test's setting
    reproduced it each time): the survivor took the dead worker's partitions, decided part of what
    had been published to them meanwhile, and then nothing for minutes although it reported ready
    and the lag stayed (Faust never delivered those records, and no later record came to show the
    gap). Before the fix: 120 of the probe's decisions, then the deadline."""
    settings = settings.with_(session_timeout_s=30.0, heartbeat_interval_s=3.0)
    apps = apps_on_partitions(settings.partitions, 2)
    create_events_topic(settings)
    workers.start(settings)
    b = workers.start(settings.with_(data_dir=str(tmp_path / "worker-b")))
    wait_for_group(settings, lambda state, m: state == "Stable" and len(m) == 2 and all(m.values()))

    def conversation(app: str, i: int, at: int) -> list[dict]:
        user = f"{app}-u{i}-{at}"
        return [
            ev(
                "inbound",
                event_id=f"in-{user}",
                app=app,
                sender="s1",
                userkey=user,
                network="sms",
                text="hello",
                ts=T + at,
            ),
            ev(
                "send",
                request_id=f"r-{user}",
                app=app,
                sender="s1",
                userkey=user,
                network="sms",
                text=f"Re: order {i}",
                ts=T + at + 1000,
            ),
        ]

    warmup = [e for app in apps for i in range(5) for e in conversation(app, i, 0)]
    with DecisionWatcher(settings, timeout=120) as watcher:
        send_events(settings, warmup)
        watcher.wait_until(lambda r: len(r) >= len(warmup) // 2)
        b.kill()
        killed = time.monotonic()
        probe = [e for app in apps for i in range(20) for e in conversation(app, i, MIN)]
        send_events(settings, probe)
        want = {e["request_id"] for e in probe if e["type"] == "send"}
        watcher.wait_until(lambda r: want <= {d["request_id"] for d in r}, timeout=90)
        took = time.monotonic() - killed
    print(f"\nkill to the last probe decision: {took:.1f} s")
    assert took < 60, f"the survivor took {took:.0f} s to decide the killed worker's apps"
