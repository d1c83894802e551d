"""Bytes per stored row, and the memory of a MemoryStore holding many userkeys (100k, 300k, 1M).

Rows are read back from a MemoryStore after feeding events through `Gate.handle`, so the sizes are
exactly what the worker writes to its tables (value bytes; the key is listed separately). Each RSS
run happens in a fresh child process (`--rss-child`), so one run's heap does not count in another's.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
import uuid

from sendgate.models import events as ev
from sendgate.models.burst import SenderState
from sendgate.models.gate import (
    CLUSTERS,
    CONVERSATIONS,
    DUE,
    JUNK,
    PENDING,
    SCHEDULES,
    SENDERS,
    SKETCHES,
    USERKEYS,
    Gate,
    MemoryStore,
    key,
)
from sendgate.models.pending import DueBucket, ReleaseSchedule
from sendgate.models.policy import Policy

from ._common import (
    DAY,
    MINUTE,
    SECOND,
    T0,
    cli,
    distinct_texts,
    fmt,
    labelled,
    load_corpus,
    md_table,
    out_path,
    proc_kb,
    write_report,
)

NAME = "state_size"
APP, SENDER = "app-0042", "sender-0007"
USER = "+447700900123"


def uid(rng: random.Random) -> str:
    """A realistic event id: a UUID (36 characters), seeded."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def row_sizes(corpus: list[tuple[str, str]]) -> tuple[list[list], list[list]]:
    rng = random.Random(5)
    policy = Policy()
    rows: list[list] = []

    def add(name: str, table: str, k: bytes, store: MemoryStore, note: str = "") -> int:
        raw = store.get(table, k)
        assert raw is not None, name
        rows.append([name, table, len(raw), len(k), note])
        return len(raw)

    def profiled() -> tuple[Gate, MemoryStore]:
        gate, store = Gate(), MemoryStore()
        gate.handle(ev.SenderProfile(uid(rng), APP, SENDER, T0 - 400 * DAY, T0), store)
        return gate, store

    def inbound(gate: Gate, store: MemoryStore, r: int, ts: int, text: str = "hi") -> None:
        gate.handle(ev.Inbound(uid(rng), APP, SENDER, f"+4477009{r:05d}", "sms", text, ts), store)

    # Userkey: opted in by keyword, opted out by an opt_out event
    gate, store = Gate(), MemoryStore()
    gate.handle(ev.Inbound(uid(rng), APP, SENDER, USER, "sms", "START", T0), store)
    add("Userkey (opted in by keyword START)", USERKEYS, key(APP, USER), store, "how = \"keyword START to sender '…'\"")
    gate.handle(ev.OptOut(uid(rng), APP, "+447700900124", "web-form", T0), store)
    add("Userkey (opt_out event, source web-form)", USERKEYS, key(APP, "+447700900124"), store)

    # Conversation with 1 and 8 recent inbounds (UUID event ids)
    gate, store = Gate(), MemoryStore()
    for i in range(8):
        gate.handle(ev.Inbound(uid(rng), APP, SENDER, USER, "sms", "hello", T0 + i * MINUTE), store)
        if i in (0, 7):
            add(
                f"Conversation, {i + 1} recent inbound(s)",
                CONVERSATIONS,
                key(APP, SENDER, USER),
                store,
                "36-char UUID event ids",
            )

    # SenderState with 0, 1, 8, 32 clusters: one-off texts (1 recipient each) and templates that
    # already hold their 10 free recipients
    texts = distinct_texts(labelled(corpus, "ham"), 32)
    slopes = []
    for per_cluster in (1, policy.free_recipients):
        sizes = {}
        for k in (0, 1, 8, 32):
            gate, store = profiled()
            ts = T0 + SECOND
            for r in range(max(per_cluster, 3)):  # recipients (and >= 3 conversing users)
                inbound(gate, store, r, ts)
            ts += 20 * MINUTE  # past the reply window: sends reach the burst step
            for j in range(k):
                for r in range(per_cluster):
                    out = gate.handle(
                        ev.Send(uid(rng), APP, SENDER, f"+4477009{r:05d}", "sms", texts[j], None, ts), store
                    )
                    assert out[0].outcome == "accepted", out[0].detail
                    ts += SECOND
            st = SenderState.from_rows(
                store.get(SENDERS, key(APP, SENDER)),
                lambda cid: store.get(CLUSTERS, key(APP, SENDER, cid)),
                lambda cid: store.get(SKETCHES, key(APP, SENDER, cid)),
                policy.num_perm,
            )
            assert len(st.clusters) == k
            name = f"SenderState, {k} clusters x {per_cluster} recipient(s)"
            head = add(f"{name}: head row", SENDERS, key(APP, SENDER), store)
            for table in (CLUSTERS, SKETCHES):
                for cluster in st.clusters[-1:]:
                    add(f"{name}: one {table} row", table, key(APP, SENDER, cluster.cluster_id), store)
            sizes[k] = head + sum(
                len(store.get(table, key(APP, SENDER, c.cluster_id)))
                for table in (CLUSTERS, SKETCHES)
                for c in st.clusters
            )
        slopes.append(
            [
                f"{per_cluster} recipient(s) per cluster",
                fmt((sizes[32] - sizes[1]) / 31, 1),
                fmt((sizes[8] - sizes[1]) / 7, 1),
                sizes[0],
            ]
        )

    # PendingRequest with a 160-char text, and the schedule rows a delay writes
    gate, store = profiled()
    text160 = (
        "Hi Anna, your parcel 48213 is out for delivery today. Track it at https://track.example.com/p/48213 "
        "or reply HELP for help. Reply STOP to opt out of these messages."
    ).ljust(160, "!")[:160]
    ts = T0 + 30 * MINUTE
    for r in range(policy.free_recipients + 1):  # the users write first: an app's clock never moves back
        inbound(gate, store, r, T0)
    for r in range(policy.free_recipients + 1):
        req = uid(rng)
        out = gate.handle(ev.Send(req, APP, SENDER, f"+4477009{r:05d}", "sms", text160, None, ts + r * SECOND), store)
    assert out[0].outcome == "delayed", out[0].detail
    add("PendingRequest, 160-char text", PENDING, key(APP, req), store, "UUID request id, E.164 userkey")
    add("ReleaseSchedule, 1 minute listed", SCHEDULES, key(APP), store)
    minute = out[0].deliver_at // MINUTE
    add("DueBucket, 1 entry", DUE, key(APP, str(minute)), store)
    full = ReleaseSchedule()
    for m in range(policy.max_delay_s // 60 + 1):
        full.add(T0 + m * MINUTE + 1234)
    rows.append(
        [
            "ReleaseSchedule, 361 minutes listed (the bound)",
            SCHEDULES,
            len(full.to_bytes()),
            len(key(APP)),
            "built directly: what the rule bounds it to",
        ]
    )
    bucket = DueBucket([[T0 + i * 1000, uid(rng)] for i in range(60)])
    rows.append(
        [
            "DueBucket, 60 entries (one per second)",
            DUE,
            len(bucket.to_bytes()),
            len(key(APP, str(minute))),
            "built directly",
        ]
    )

    # JunkTemplate with 1 and 3 reporters
    gate, store = Gate(), MemoryStore()
    for r in range(3):
        eid = uid(rng)
        gate.handle_in_one_log(ev.JunkReport(eid, APP, SENDER, f"+4477009{r:05d}", text160, uid(rng), T0 + r), store)
        if r == 0:
            first = key(str(store.partition), f"{APP}\x1f{eid}")
        if r in (0, 2):
            add(f"JunkTemplate, {r + 1} reporter(s)", JUNK, first, store)
    return rows, slopes


class TrimStore(MemoryStore):
    """MemoryStore that keeps an exact-size copy of each value. orjson >= 3.12 returns bytes whose
    allocation is at least ~4 KB whatever their length (the buffer is not shrunk), so a dict of
    orjson outputs holds ~4 KB per row; this variant shows what the rows themselves cost."""

    def set(self, table: str, key: bytes, value: bytes) -> None:
        self.tables[table][key] = bytes(memoryview(value))


def rss_child(n: int, mode: str, store_kind: str) -> dict:
    """Feed `n` userkeys through Gate.handle (one inbound each, 100 apps x 10 senders) and report
    RSS growth. mode 'start': the inbound is the keyword START, which writes a Userkey row and a
    Conversation row; mode 'plain': an ordinary inbound, which writes only the Conversation row
    (Userkey rows exist only for userkeys whose consent changed)."""
    gate, store = Gate(), (TrimStore() if store_kind == "trim" else MemoryStore())
    text = "START" if mode == "start" else "hello, is this still available?"
    # warm up allocator and code paths on another app, then measure from a collected heap
    for i in range(1000):
        gate.handle(ev.Inbound(f"w{i}", "warm", "s", f"w{i}", "sms", text, T0), store)
    gc.collect()
    before = proc_kb("VmRSS")
    t0 = time.perf_counter()
    for i in range(n):
        user = f"+44{7_000_000_000 + i:010d}"  # E.164-like: 13 characters
        gate.handle(
            ev.Inbound(
                f"in-{i:010d}", f"app-{i % 100:03d}", f"sender-{(i // 100) % 10:02d}", user, "sms", text, T0 + i
            ),
            store,
        )
    elapsed = time.perf_counter() - t0
    gc.collect()
    payload = sum(
        len(k) + len(v)
        for name in (USERKEYS, CONVERSATIONS)
        for k, v in store.tables[name].items()
        if not k.startswith(b"warm")
    )
    return {
        "n": n,
        "mode": mode,
        "store": store_kind,
        "rss_before_kb": before,
        "rss_after_kb": proc_kb("VmRSS"),
        "seconds": elapsed,
        "userkey_rows": len(store.tables[USERKEYS]) - (1000 if mode == "start" else 0),
        "conversation_rows": len(store.tables[CONVERSATIONS]) - 1000,
        "payload_bytes": payload,
    }


def rss_row(n: int, mode: str, store_kind: str, note: str = "") -> tuple[list, dict]:
    """An RSS run in a fresh process, and its table row."""
    cmd = [sys.executable, "-m", "bench.state_size", "--rss-child", str(n), "--mode", mode, "--store", store_kind]
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    grown = (r["rss_after_kb"] - r["rss_before_kb"]) * 1024
    return [
        f"{r['n']:,}",
        r["mode"],
        r["store"],
        f"{r['userkey_rows']:,}",
        f"{r['conversation_rows']:,}",
        fmt(r["rss_after_kb"] / 1024, 1),
        fmt(grown / 2**20, 1),
        fmt(grown / r["n"]),
        fmt(r["payload_bytes"] / r["n"]),
        fmt(r["seconds"], 1),
        note,
    ], r


def main() -> None:
    ap = cli(__doc__, "RSS at 10k and 30k userkeys only", NAME)
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="start", choices=("start", "plain"), help=argparse.SUPPRESS)
    ap.add_argument("--store", default="memory", choices=("memory", "trim"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=180.0,
        help="skip the 1M run if 300k predicts it would take longer (default 180)",
    )
    args = ap.parse_args()
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, args.mode, args.store)))
        return
    started = time.perf_counter()
    rows, slopes = row_sizes(load_corpus())
    sections = [
        "## Bytes per stored row (value as written by Gate.handle; key listed separately)\n\n"
        + md_table(["row", "table", "value bytes", "key bytes", "note"], rows),
        "SenderState growth per cluster, all its rows (num_perm 128: a 512-byte sketch row and a cluster "
        "row per cluster, plus the cluster's id in the head):\n\n"
        + md_table(["clusters hold", "bytes/cluster (1->32)", "bytes/cluster (1->8)", "bytes at 0 clusters"], slopes),
    ]
    print("\n\n".join(sections), flush=True)

    sizes = (10_000, 30_000) if args.quick else (100_000, 300_000, 1_000_000)
    rss_rows = []
    for store_kind in ("memory", "trim"):
        prev = None
        for n in sizes:
            if n == sizes[-1] and prev:
                predicted_s = prev["seconds"] * n / prev["n"]
                per = ((prev["rss_after_kb"] - prev["rss_before_kb"]) * 1024) / prev["n"]
                available = proc_kb("MemAvailable", "/proc/meminfo")
                why = (
                    f"{prev['n']:,} took {prev['seconds']:.0f} s, so {n:,} would exceed {args.budget_s:.0f} s"
                    if predicted_s > args.budget_s
                    else f"predicted {per * n / 2**30:.1f} GiB is more than half of MemAvailable "
                    f"({available / 2**20:.1f} GiB) on this shared machine"
                    if per * n > 0.5 * available * 1024
                    else None
                )
                if why:
                    rss_rows.append(
                        [
                            f"{n:,}",
                            "start",
                            store_kind,
                            "",
                            "",
                            "",
                            fmt(per * n / 2**20, 1) + " (extrapolated)",
                            fmt(per),
                            "",
                            fmt(predicted_s) + " (predicted)",
                            f"not run: {why}; linear extrapolation from {prev['n']:,}",
                        ]
                    )
                    continue
            print(f"RSS run: {n:,} userkeys, {store_kind} store ...", flush=True)
            row, prev = rss_row(n, "start", store_kind)
            rss_rows.append(row)
    print(f"RSS run: {sizes[0]:,} userkeys, plain inbound ...", flush=True)
    rss_rows.append(rss_row(sizes[0], "plain", "memory", "Conversation rows only")[0])
    sections.append(
        "## Memory of a MemoryStore holding N userkeys (fresh process per run)\n\n"
        "Each userkey sends one inbound through Gate.handle; 100 apps x 10 senders; userkeys are 13-char "
        "E.164-like ids, event ids 13 chars. Mode `start`: the inbound is the keyword START, so each "
        "userkey has a Userkey row and a Conversation row (plain inbounds write no Userkey row; the model "
        "creates one only on a consent change). `RSS growth` is VmRSS after minus before (after gc); "
        "`payload` is the sum of key + value bytes of those rows. Store `memory` is `MemoryStore` as it "
        "is; `trim` is a bench-only subclass that stores `bytes(memoryview(value))`, an exact-size copy: "
        "orjson 3.13 returns bytes whose allocation stays at ~4 KB however short the JSON "
        "(see ijl/orjson#483), and MemoryStore keeps those objects.\n\n"
        + md_table(
            [
                "userkeys",
                "mode",
                "store",
                "Userkey rows",
                "Conversation rows",
                "RSS MB (process)",
                "RSS growth MB",
                "RSS bytes/userkey",
                "payload bytes/userkey",
                "feed s",
                "note",
            ],
            rss_rows,
        )
    )
    write_report(
        out_path(args.out, args.quick, NAME),
        "sendgate: state size",
        "python -m bench.state_size",
        [f"wall time {time.perf_counter() - started:.0f} s"],
        sections,
    )


if __name__ == "__main__":
    main()
