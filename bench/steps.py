"""µs per message for each step of the gate, in-process (no Kafka).

Every figure is the median of several timeit repeats. Ratios against the naive datasketch
baseline are taken repeat by repeat, with both sides run alternately in the same process.
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import random
import statistics
import time
import zlib
from collections import defaultdict

import numpy as np
import orjson
from datasketch import MinHash

from sendgate.models import events as ev
from sendgate.models.burst import SenderState, recipient_hash
from sendgate.models.clock import AppClock
from sendgate.models.consent import Conversation, Userkey
from sendgate.models.decisions import Decision
from sendgate.models.events import decode_event, validate
from sendgate.models.gate import CLOCKS, CONVERSATIONS, Gate, MemoryStore, key
from sendgate.models.junk import JunkIndex, JunkTemplate
from sendgate.models.policy import Policy
from sendgate.models.reading import as_seen
from sendgate.models.similarity import SEED, Sketcher, normalize, normalized_bytes, shingles, similarities
from sendgate.models.sources import APP as APP_ROLE, Keyring, SigningKey

from ._common import (
    DAY,
    MINUTE,
    SECOND,
    T0,
    Timeline,
    campaign,
    cli,
    distinct_texts,
    doc,
    each_us,
    fmt,
    labelled,
    load_corpus,
    md_table,
    median,
    median_us,
    out_path,
    side_by_side,
    variant,
    write_report,
)

NAME = "steps"
APP, SENDER = "app-0", "sender-0"


def bench_decode(texts: list[str], repeat: int, n: int) -> list[list]:
    rng = random.Random(1)
    docs = [
        doc(
            "send",
            f"req-{i:08d}",
            f"app-{rng.randrange(100)}",
            T0 + i * 100,
            sender=f"sender-{rng.randrange(1000):04d}",
            userkey=f"+4477009{rng.randrange(10**5):05d}",
            text=texts[i % len(texts)],
            reply_to=None if rng.random() < 0.7 else f"in-{i:08d}",
        )
        for i in range(n)
    ]
    raws = [orjson.dumps(d) for d in docs]
    # sources (models/sources.py): each record signed by an app key, verified by the gate's decoder
    keyring = Keyring(
        SigningKey(f"key-{d['app']}", APP_ROLE, f"secret-of-{d['app']}-0123456789".encode(), d["app"])
        for d in {d["app"]: d for d in docs}.values()
    )
    records = [(d["app"].encode(), raw, keyring.keys[f"key-{d['app']}"].headers(raw)) for d, raw in zip(docs, raws)]
    signed, unsigned, store = Gate(keyring=keyring), Gate(), MemoryStore()

    def decode_all(gate: Gate, verify: bool) -> None:
        for k, raw, headers in records:
            gate.decode(k, raw, T0, headers if verify else None, store)

    # the verified and the unverified decoder alternately, so that the difference is the
    # verification's cost and not the machine's load meanwhile
    runs = side_by_side(
        {
            "off": lambda: decode_all(unsigned, False),
            "on": lambda: decode_all(signed, True),
            "verify": lambda: [keyring.verify(h, raw) for _, raw, h in records],
        },
        number=1,
        repeat=repeat * 3,
        per=len(records),
    )
    extra = median(on - off for on, off in zip(runs["on"], runs["off"]))
    return [
        [
            "decode_event (orjson.loads + validate) of a send",
            fmt(each_us(decode_event, raws, repeat, T0), 2),
            f"{len(raws)} distinct send JSONs, mean {sum(map(len, raws)) / len(raws):.0f} bytes",
        ],
        ["  of which orjson.loads", fmt(each_us(orjson.loads, raws, repeat), 2), ""],
        ["  of which validate (decoded dict -> Send)", fmt(each_us(validate, docs, repeat, T0), 2), ""],
        [
            "Gate.decode of a send, keyring off (SENDGATE_AUTH=off)",
            fmt(median(runs["off"]), 2),
            "timed alternately with the next two rows",
        ],
        [
            "Gate.decode of a signed send, verified",
            fmt(median(runs["on"]), 2),
            f"HMAC-SHA-256 + rights + the app's clock; {len(keyring.keys)} app keys",
        ],
        ["  verification's cost (verified - off, per repeat)", fmt(extra, 2), "the sources check (models/sources.py)"],
        ["  of which Keyring.verify (headers, HMAC, compare)", fmt(median(runs["verify"]), 2), ""],
    ]


def bench_consent(texts: list[str], repeat: int, n: int) -> tuple[list[list], list[list]]:
    """A store with `n` conversing users (inbound 5 min before the sends) and `n` opted-out users;
    sends that stop at the consent step: reply, reply_to reply, opted_out, no_conversation. They
    write nothing, so replaying a list against the same store is a fair repeat."""
    gate, store = Gate(), MemoryStore()
    gate.handle(ev.SenderProfile("sp", APP, SENDER, T0 - 365 * DAY, T0), store)
    ts_in, ts_send = T0 + SECOND, T0 + 6 * MINUTE
    for i in range(n):
        gate.handle(ev.Inbound(f"in-{i}", APP, SENDER, f"u{i}", "sms", "hi there", ts_in), store)
        gate.handle(ev.OptOut(f"oo-{i}", APP, f"o{i}", "web-form", ts_in), store)
    streams = {}
    for name, reason, rid, user, reply_to in (
        ("reply (last inbound < 15 min ago, no reply_to)", "reply", "r", "u", None),
        ("reply (reply_to names a recent inbound)", "reply", "rt", "u", "in-"),
        ("rejected opted_out", "opted_out", "o", "o", None),
        ("rejected no_conversation", "no_conversation", "n", "n", None),
    ):
        streams[name] = [
            ev.Send(
                f"{rid}-{i}",
                APP,
                SENDER,
                f"{user}{i}",
                "sms",
                texts[i % len(texts)],
                reply_to and f"{reply_to}{i}",
                ts_send,
            )
            for i in range(n)
        ]
        out = gate.handle(streams[name][0], store)
        assert out[0].reason == reason, (name, out[0].reason, out[0].detail)
    rows = [
        [f"Gate.handle: {name}", fmt(each_us(gate.handle, sends, repeat, store), 2), f"{n} userkeys"]
        for name, sends in streams.items()
    ]
    # consent-step decisions per second on an interleaved stream of the three kinds
    mixed = [
        e
        for trio in zip(*(streams[k] for k in (next(iter(streams)), "rejected opted_out", "rejected no_conversation")))
        for e in trio
    ]
    us = each_us(gate.handle, mixed, repeat, store)
    return rows, [
        [
            "consent-only stream (reply / opted_out / no_conversation, 1:1:1)",
            fmt(us, 2),
            f"{1e6 / us:,.0f}",
            f"{len(mixed)} sends",
        ]
    ]


def bench_sketch(corpus: list[tuple[str, str]], repeat: int, subset_step: int) -> tuple[list[list], list[list]]:
    all_texts = [t for _, t in corpus]
    sk = Sketcher()
    rows = [
        [
            f"Sketcher.sketch, {name} texts (num_perm 128)",
            fmt(each_us(sk.sketch, texts, repeat), 1),
            f"{len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} chars",
        ]
        for name, texts in (("all", all_texts), ("ham", labelled(corpus, "ham")), ("spam", labelled(corpus, "spam")))
    ]
    rows += [
        [
            f"Sketcher.sketch, all texts (num_perm {p})",
            fmt(each_us(Sketcher(num_perm=p).sketch, all_texts, repeat), 1),
            "",
        ]
        for p in (64, 256)
    ]
    rows.append(
        [
            "  of which normalized_bytes (what shingles are cut from)",
            fmt(each_us(normalized_bytes, all_texts, repeat), 1),
            "",
        ]
    )
    rows.append(
        [
            "  of which normalize + shingles",
            fmt(each_us(lambda text: shingles(normalize(text), 4), all_texts, repeat), 1),
            "",
        ]
    )
    rows.append(
        [
            "  of which as_seen (the reader's view: look-alikes, invisible characters, spacing)",
            fmt(each_us(as_seen, all_texts, repeat), 1),
            "models/reading.py",
        ]
    )

    # Side by side against datasketch, on a subset (the naive path is slow).
    subset = all_texts[::subset_step]

    def ours():
        for text in subset:
            sk.sketch(text)

    def naive():  # what a first implementation would do: a default MinHash per message, a shingle at a time
        for text in subset:
            m = MinHash()
            for sh in shingles(normalize(text), 4):
                m.update(sh)

    def fresh_batch_sha1():
        for text in subset:
            m = MinHash()
            m.update_batch(shingles(normalize(text), 4))

    def fresh_batch_crc():
        for text in subset:
            m = MinHash(num_perm=128, seed=SEED, hashfunc=zlib.crc32, scheme="affine32")
            m.update_batch(shingles(normalize(text), 4))

    shared = MinHash(num_perm=128, seed=SEED, hashfunc=zlib.crc32, scheme="affine32")

    def shared_batch_crc():  # the Sketcher before its numpy path: same values, a Python call per shingle
        for text in subset:
            shared.clear()
            shared.update_batch(shingles(normalize(text), 4))

    def construct_only():
        for _ in subset:
            MinHash()

    runs = side_by_side(
        {
            "ours": ours,
            "naive": naive,
            "fresh_batch_sha1": fresh_batch_sha1,
            "fresh_batch_crc": fresh_batch_crc,
            "shared_batch_crc": shared_batch_crc,
            "construct_only": construct_only,
        },
        number=1,
        repeat=repeat,
        per=len(subset),
    )
    base = [
        [label, fmt(median(runs[name]), 1), f"{median(b / a for a, b in zip(runs['ours'], runs[name])):.1f}x"]
        for label, name in (
            ("Sketcher.sketch (crc32 of 4-grams by table lookups, permutations in numpy)", "ours"),
            (
                "datasketch: one MinHash(crc32, affine32), clear() + update_batch per message (the previous Sketcher)",
                "shared_batch_crc",
            ),
            ("naive: MinHash() per message (sha1) + update() per shingle", "naive"),
            ("MinHash() per message (sha1) + update_batch", "fresh_batch_sha1"),
            ("MinHash(crc32, affine32) per message + update_batch", "fresh_batch_crc"),
            ("MinHash() constructor alone", "construct_only"),
        )
    ]
    base.append(
        [f"(subset: every {subset_step}th text, {len(subset)} texts; ratio = median of per-repeat ratios)", "", ""]
    )
    return rows, base


def bench_sketch_batches(texts: list[str], repeat: int) -> list[list]:
    """Sketcher.sketch_many over consecutive batches of the texts, alternately with Sketcher.sketch
    text by text (what the burst step does unless a batch was presketched)."""
    sk = Sketcher()
    sizes = (1, 10, 100, 500)

    def alone():
        for text in texts:
            sk.sketch(text)

    def batches(size: int):
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        return lambda: [sk.sketch_many(chunk) for chunk in chunks]

    runs = side_by_side({"alone": alone, **{f"{n}": batches(n) for n in sizes}}, 1, repeat, len(texts))
    return [["Sketcher.sketch, text by text", fmt(median(runs["alone"]), 1), "1.00"]] + [
        [
            f"Sketcher.sketch_many, batches of {n}",
            fmt(median(runs[f"{n}"]), 1),
            f"{median(b / a for a, b in zip(runs['alone'], runs[f'{n}'])):.2f}",
        ]
        for n in sizes
    ]


def sender_with_clusters(policy: Policy, sketches: list[np.ndarray], k: int) -> SenderState:
    st = SenderState(registered_ts=T0 - 365 * DAY, conversing=50)
    for j in range(k):
        v = st.decide(T0 + j * SECOND, recipient_hash(f"u{j}"), sketches[j], policy, None)
        assert v.cluster_id == f"c{j + 1}", "cluster texts must be mutually dissimilar"
    assert len(st.clusters) == k
    return st


def bench_clusters(texts: list[str], repeat: int, copies: int) -> list[list]:
    """SenderState.decide with pre-computed sketches, at 1, 8 and 32 clusters."""
    policy = Policy()
    sk = Sketcher(policy.num_perm, policy.shingle_size)
    sketches = [sk.sketch(t) for t in distinct_texts(texts, 34, sk)]
    miss = sketches[33]  # dissimilar to every cluster
    probe_ts = T0 + 40 * SECOND
    rows = []
    for k in (1, 8, 32):
        st = sender_with_clusters(policy, sketches, k)
        j = k - 1  # the most recent cluster: same argmax cost as any other row
        hit, matrix = sketches[j], st.sketches

        def sims():
            similarities(hit, matrix)

        def counted(st=st, hit=hit, j=j):
            st.decide(probe_ts, recipient_hash(f"u{j}"), hit, policy, None)

        v = st.decide(probe_ts, recipient_hash(f"u{j}"), hit, policy, None)
        assert v.outcome == "accepted" and "already counted" in v.detail, v.detail
        rows += [
            [k, "similarities() alone (k x num_perm compare)", fmt(median_us(sims, 5000, repeat), 2)],
            [k, "decide: hit, recipient already counted (pure lookup)", fmt(median_us(counted, 2000, repeat), 2)],
        ]

        # Paths that change the row: each call gets its own fresh copy, decoded outside the timing.
        pool: list[SenderState] = []

        def new_recipient(pool=pool, hit=hit):
            for s in pool:
                s.decide(probe_ts, recipient_hash("u-new"), hit, policy, None)

        def miss_new_cluster(pool=pool):
            for s in pool:
                s.decide(probe_ts, recipient_hash("u-new"), miss, policy, None)

        st10 = sender_with_clusters(policy, sketches, k)  # paced: the hit cluster holds its 10 free recipients
        for r in range(1, policy.free_recipients):
            st10.decide(T0 + 35 * SECOND + r, recipient_hash(f"f{r}"), hit, policy, None)
        probe = copy.deepcopy(st10).decide(probe_ts, recipient_hash("u-new"), hit, policy, None)
        assert probe.reason == "burst_paced" and probe.outcome == "delayed", (probe.reason, probe.detail)
        for label, fn, start in (
            ("decide: hit, new recipient (free)", new_recipient, st),
            (
                "decide: miss -> new cluster" + (" (evicts one)" if k == policy.max_clusters else ""),
                miss_new_cluster,
                st,
            ),
            ("decide: hit, paced (11th recipient, delayed)", new_recipient, st10),
        ):

            def fresh(pool=pool, start=start):
                pool[:] = [copy.deepcopy(start) for _ in range(copies)]

            rows.append([k, label, fmt(median_us(fn, 1, repeat, setup=fresh, per=copies), 2)])
    return rows


def bench_junk_match(texts: list[str], repeat: int) -> list[list]:
    """Every send that reaches the burst step is matched against the whole junk index."""
    policy = Policy()
    rng = np.random.default_rng(7)
    probe = Sketcher().sketch(texts[0])
    rows = []
    for n in (0, 100, 1000, 10_000):
        index = JunkIndex()
        for i in range(n):
            index.put(f"t{i}", JunkTemplate(rng.integers(0, 2**32, policy.num_perm, dtype=np.uint32)))
        index.match(probe, policy.similarity_threshold)  # builds the matrix once

        def run(index=index):
            index.match(probe, policy.similarity_threshold)

        rows.append([f"JunkIndex.match, {n:,} templates", fmt(median_us(run, 200 if n >= 1000 else 2000, repeat), 1)])
    return rows


def bench_rows(texts: list[str], repeat: int) -> list[list]:
    policy = Policy()
    sk = Sketcher()
    sketches = [sk.sketch(t) for t in distinct_texts(texts, 32, sk)]
    rows = []
    for k in (0, 1, 8, 32):
        st = sender_with_clusters(policy, sketches, k)
        head, clusters, sketch_rows = st.to_rows()  # the first write: every row
        whole = len(head) + sum(map(len, clusters.values())) + sum(map(len, sketch_rows.values()))

        def one_send(st=st):  # what a send to an existing cluster writes: the head and that cluster
            if st.clusters:
                last = st.clusters[-1]
                st._changed[last.cluster_id] = last
            return st.to_rows()

        written = one_send()
        per_send = len(written[0]) + sum(len(v) for v in written[1].values() if v)
        enc = median_us(one_send, 2000, repeat)
        dec = median_us(
            lambda: SenderState.from_rows(head, clusters.get, sketch_rows.get, policy.num_perm), 2000, repeat
        )
        rows.append(
            [
                f"SenderState, {k} clusters (all rows; written by one send)",
                f"{whole:,}; {per_send:,}",
                fmt(enc, 2),
                fmt(dec, 2),
            ]
        )
    u = Userkey()
    u.opt_out(T0, "keyword STOP to sender 'sender-0001'")
    c = Conversation()
    for i in range(8):
        c.record_inbound(f"in-{i:08d}", T0 + i)
    for name, obj in (("Userkey (opted out by keyword)", u), ("Conversation, 8 recent inbounds", c)):
        raw = obj.to_bytes()
        rows.append(
            [
                name,
                len(raw),
                fmt(median_us(obj.to_bytes, 5000, repeat), 2),
                fmt(median_us(lambda raw=raw, cls=type(obj): cls.from_bytes(raw), 5000, repeat), 2),
            ]
        )
    return rows


def bench_retention(n: int) -> list[list]:
    """n userkeys write to one app on day 0; a tenth write again on day 300 and a twentieth opt
    out. Past day 400 the app's events sweep the lapsed conversations: the rows left, what a sweep
    costs per conversation removed, and what indexing costs the inbounds (horizon 400 vs 0 days,
    the same inbounds, run alternately)."""

    def inbounds(users: range, ts: int, text: str = "hello") -> list[ev.Event]:
        return [
            validate(doc("inbound", f"in-{ts}-{u}", "a", ts, sender="s", userkey=f"user-{u:07d}", text=text), 0)
            for u in users
        ]

    day0 = inbounds(range(n), T0)
    renewed = inbounds(range(0, n, 10), T0 + 300 * DAY)
    stops = inbounds(range(5, n, 20), T0 + 300 * DAY + MINUTE, "STOP")

    def load(horizon_days: int) -> tuple[Gate, MemoryStore, float]:
        gate, store = Gate(Policy(conversation_horizon_days=horizon_days)), MemoryStore()
        started = time.perf_counter()
        for e in day0:
            gate.handle(e, store)
        return gate, store, (time.perf_counter() - started) / len(day0) * 1e6

    costs: dict[int, list[float]] = {400: [], 0: []}
    for _ in range(3):
        for horizon in costs:
            costs[horizon].append(load(horizon)[2])
    gate, store, _ = load(400)
    for e in renewed + stops:
        gate.handle(e, store)

    def size() -> tuple[int, int]:
        tables = store.tables.values()
        return sum(map(len, tables)), sum(len(k) + len(v) for t in tables for k, v in t.items())

    rows_before, bytes_before = size()
    convs_before = len(store.tables[CONVERSATIONS])
    tick = T0 + 401 * DAY
    started, ticks = time.perf_counter(), 0
    while AppClock.from_bytes(store.get(CLOCKS, key("a"))).sweep_at <= tick:  # until day 0 is swept
        gate.handle(validate({"type": "tick", "app": "a", "ts": tick + ticks}, 0), store)
        ticks += 1
    swept_s = time.perf_counter() - started
    rows_after, bytes_after = size()
    removed = convs_before - len(store.tables[CONVERSATIONS])
    return [
        [
            "rows (all kinds) before the sweep; after",
            f"{rows_before:,}; {rows_after:,}",
            f"{n:,} userkeys, {len(renewed):,} wrote again on day 300, {len(stops):,} opted out (kept)",
        ],
        [
            "bytes (key + value) before; after",
            f"{bytes_before:,}; {bytes_after:,}",
            f"{1 - bytes_after / bytes_before:.0%} less to restore",
        ],
        [
            "conversations removed; events that swept them",
            f"{removed:,}; {ticks:,}",
            "one bucket row (<= 256 conversations) per event of the app",
        ],
        ["sweep: µs per conversation removed", fmt(swept_s / max(1, removed) * 1e6, 2), "read, check, delete"],
        [
            "inbound (first of the day) µs: horizon 400 d; 0 d (no index)",
            f"{fmt(median(costs[400]), 1)}; {fmt(median(costs[0]), 1)}",
            f"ratio {median(a / b for a, b in zip(costs[400], costs[0])):.2f} (alternate loads, 3 each)",
        ],
    ]


def mixed_stream(corpus: list[tuple[str, str]], n_events: int, seed: int = 42) -> tuple[list[ev.Event], list[ev.Event]]:
    """A seeded stream of one busy deployment, 10 apps x 20 senders: (history, live).

    The history (before T0: sender profiles, opt-outs, and 100 users per sender who wrote 20 min
    to 2 days ago) is loaded untimed. The live part, time-ordered, is about 30 % inbound, 20 %
    replies, 25 % ordinary sends to users who wrote more than 15 min ago (burst step, one-off
    texts), 5 % to opted-out users, 5 % to users who never wrote (no_conversation) and 15 % blast
    sends (spam templates with per-recipient variants, 150 recipients each, which get paced)."""
    rng = random.Random(seed)
    ham, spam = labelled(corpus, "ham"), labelled(corpus, "spam")
    apps = [f"app-{i}" for i in range(10)]
    senders = [(a, f"sender-{j}") for a in apps for j in range(20)]
    out = Timeline()
    reply_ms = Policy().reply_window_s * SECOND
    last_in: dict[tuple[str, str, str], tuple[str, int]] = {}
    pool: dict[tuple[str, str], list[str]] = {}
    for a, s in senders:
        out.add(ev.SenderProfile(f"sp-{a}-{s}", a, s, T0 - 400 * DAY, T0 - 3 * DAY))
        pool[(a, s)] = [f"u{i}" for i in range(300)]
        for u in rng.sample(pool[(a, s)], 100):
            ts = T0 - rng.randint(20 * MINUTE, 2 * DAY)
            out.add(ev.Inbound(f"h-{a}-{s}-{u}", a, s, u, "sms", rng.choice(ham), ts))
            last_in[(a, s, u)] = (f"h-{a}-{s}-{u}", ts)
    for a in apps:
        for i in range(50):
            out.add(ev.OptOut(f"oo-{a}-{i}", a, f"o{i}", "web-form", T0 - 3 * DAY))
    n_blast = int(n_events * 0.15)
    ts = T0
    for i in range(n_events - n_blast):
        ts += rng.randint(50, 450)
        a, s = senders[rng.randrange(len(senders))]
        known = [u for u in pool[(a, s)] if (a, s, u) in last_in]
        recent = [u for u in known if ts - last_in[(a, s, u)][1] <= reply_ms - 10 * SECOND]
        old = [u for u in known if ts - last_in[(a, s, u)][1] > reply_ms]
        r = rng.random() * 0.85
        if r < 0.30 or (r < 0.50 and not recent) or (r < 0.75 and not old):
            u = rng.choice(pool[(a, s)])
            last_in[(a, s, u)] = (f"in-{i}", ts)
            out.add(ev.Inbound(f"in-{i}", a, s, u, "sms", rng.choice(ham), ts))
        elif r < 0.50:  # a reply: half name the inbound, half rely on the 15-minute window
            u = rng.choice(recent)
            eid = last_in[(a, s, u)][0]
            out.add(ev.Send(f"rq-{i}", a, s, u, "sms", rng.choice(ham), eid if rng.random() < 0.5 else None, ts))
        elif r < 0.75:
            out.add(ev.Send(f"rq-{i}", a, s, rng.choice(old), "sms", rng.choice(ham), None, ts))
        elif r < 0.80:
            out.add(ev.Send(f"rq-{i}", a, s, f"o{rng.randrange(50)}", "sms", rng.choice(ham), None, ts))
        else:
            out.add(ev.Send(f"rq-{i}", a, s, f"n{rng.randrange(10**6)}", "sms", rng.choice(ham), None, ts))
    end, b = ts, 0
    while n_blast > 0:  # blasts: 150 recipients each, 0.5-3 s apart, who wrote 20-60 min before the blast
        a, s = senders[rng.randrange(len(senders))]
        n = min(150, n_blast)
        n_blast -= n
        template = campaign(rng, rng.choice(spam))
        start = rng.randint(T0 + 10 * MINUTE, max(T0 + 10 * MINUTE, end - n * 2 * SECOND))
        t = start
        for j in range(n):
            out.add(
                ev.Inbound(
                    f"bin-{b}-{j}", a, s, f"b{b}-{j}", "sms", "info please", start - rng.randint(20, 60) * MINUTE
                )
            )
            out.add(ev.Send(f"bl-{b}-{j}", a, s, f"b{b}-{j}", "sms", variant(rng, template), None, t))
            t += rng.randint(500, 3000)
        b += 1
    events = out.ordered()
    return [e for e in events if e.ts < T0], [e for e in events if e.ts >= T0]


def classify(e: ev.Event, out: list) -> str:
    if not isinstance(e, ev.Send):
        return type(e).__name__
    d = next(
        r
        for r in out
        if isinstance(r, Decision) and r.request_id == e.request_id and r.outcome not in ("released", "cancelled")
    )
    if d.reason in ("conversation", "opt_in", "unrestricted"):
        return "send: burst step, accepted free"
    if d.reason in ("burst_paced", "burst_limit", "junk_similar"):
        return f"send: burst step, {d.outcome} {d.reason}"
    return f"send: {d.outcome} {d.reason}"


def loaded(history: list[ev.Event]) -> tuple[Gate, MemoryStore]:
    gate, store = Gate(), MemoryStore()
    for e in history:
        gate.handle(e, store)
    return gate, store


def bench_mixed(history: list[ev.Event], events: list[ev.Event], repeat: int) -> tuple[list[list], list[list]]:
    n_sends = sum(isinstance(e, ev.Send) for e in events)
    ctx: dict = {}

    def fresh():
        ctx["gate"], ctx["store"] = loaded(history)

    def run():
        gate, store = ctx["gate"], ctx["store"]
        for e in events:
            gate.handle(e, store)

    us = median_us(run, 1, repeat, setup=fresh, per=len(events))
    total = [
        ["mixed stream, all live events", len(events), fmt(us, 1), f"{1e6 / us:,.0f}"],
        [
            "  per send (total time / sends)",
            n_sends,
            fmt(us * len(events) / n_sends, 1),
            f"{1e6 / (us * len(events) / n_sends):,.0f}",
        ],
    ]
    # per-category timings: a few instrumented passes, median per category
    per_cat: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = {}
    for _ in range(max(3, repeat // 2)):
        gate, store = loaded(history)
        samples: dict[str, list[int]] = defaultdict(list)
        for e in events:
            t0 = time.perf_counter_ns()
            out = gate.handle(e, store)
            t1 = time.perf_counter_ns()
            samples[classify(e, out)].append(t1 - t0)
        for cat, xs in samples.items():
            per_cat[cat].append(statistics.mean(xs) / 1000)
            per_cat[cat + "#median"].append(statistics.median(xs) / 1000)
            counts[cat] = len(xs)
    return total, [
        [cat, counts[cat], fmt(median(per_cat[cat]), 1), fmt(median(per_cat[cat + "#median"]), 1)]
        for cat in sorted(counts, key=lambda c: -counts[c])
    ]


def bench_metrics(history: list[ev.Event], events: list[ev.Event], repeat: int, batch: int = 500) -> list[list]:
    """The metrics' cost per batch (streams/worker/metrics.py): tallying a batch's outputs while it is
    decided and applying the tally once, next to deciding the same batch, in the same run."""
    from sendgate.streams.worker.metrics import BatchTally, GateMetrics

    gate, store = loaded(history)
    chunk = events[:batch]
    outputs = [gate.handle(e, store) for e in chunk]
    scrape = {
        "partitions": [],
        "pending": 0,
        "next_due": None,
        "overdue_s": 0.0,
        "recovering": False,
        "recovery_remaining": 0,
        "rebalancing": False,
        "reasons": [],
    }
    metrics = GateMetrics(("sms",), lambda: scrape)

    def tally_and_apply():
        tally = BatchTally()
        for e, out in zip(chunk, outputs):
            tally.count(ev.event_type(e), e.ts)
            for record in out:
                tally.output(record)
        tally.durations_s = {"decide": 0.01, "produce": 0.002, "checkpoint": 0.002}
        metrics.batch_done(tally, len(chunk))

    def decide():
        g, st = Gate(), MemoryStore()
        for e in chunk:
            g.handle(e, st)

    runs = side_by_side({"metrics": tally_and_apply, "decide": decide}, 1, repeat)
    m_us, d_us = median(runs["metrics"]), median(runs["decide"])
    return [
        [
            f"tally + apply, a batch of {len(chunk)} events",
            fmt(m_us),
            fmt(m_us / len(chunk), 2),
            f"{median(a / b for a, b in zip(runs['metrics'], runs['decide'])):.1%} of deciding it",
        ],
        [f"Gate.handle of the same {len(chunk)} events (fresh store)", fmt(d_us), fmt(d_us / len(chunk), 2), ""],
    ]


PROFILE_PARTS = (  # (file suffix, function name, label)
    ("gate/gate.py", "handle", "Gate.handle (total)"),
    ("gate/send.py", "send", "  send: the SEND_STEPS (sends)"),
    ("gate/burst.py", "pace", "    burst.pace (sends that reach the burst step)"),
    ("similarity.py", "sketch", "      Sketcher.sketch"),
    ("similarity.py", "normalized_bytes", "        normalized_bytes (as_seen + patterns)"),
    ("similarity.py", "shingles", "        shingles"),
    ("minhash.py", "update_batch", "        MinHash.update_batch (crc32 per shingle + fmix + permute + min)"),
    ("junk.py", "match", "      JunkIndex.match"),
    ("burst.py", "from_rows", "      SenderState.from_rows (all callers)"),
    ("burst.py", "to_rows", "      SenderState.to_rows (all callers)"),
    ("burst.py", "decide", "      SenderState.decide"),
    ("burst.py", "_join", "        SenderState._join (similarities, argmax, new cluster)"),
    ("burst.py", "_expire", "        SenderState._expire"),
    ("gate/pending.py", "hold", "      pending.hold (pending + schedule + due rows)"),
    ("gate/consent.py", "inbound", "  consent.inbound (inbound events)"),
    ("gate/pending.py", "release_due", "  pending.release_due (every event)"),
    ("decisions.py", "iso", "  iso() timestamps in detail strings (all callers)"),
    ("consent.py", "from_bytes", "  Userkey/Conversation/AppGrant.from_bytes"),
)


def profile_sends(history: list[ev.Event], events: list[ev.Event], top: int = 22) -> tuple[str, list[list]]:
    """cProfile of Gate.handle over the live part of the mixed stream: the raw top list by own time,
    and a table of where the cumulative time goes."""
    gate, store = loaded(history)
    prof = cProfile.Profile()
    prof.enable()
    for e in events:
        gate.handle(e, store)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    raw = (
        next(line for line in lines if "function calls" in line).strip()
        + "\n"
        + "\n".join(lines[start : start + top + 1])
    )
    cum: dict[tuple[str, str], tuple[int, float]] = {}
    for (filename, _, func), (_, ncalls, _, ct, _) in st.stats.items():
        for suffix, name, _ in PROFILE_PARTS:
            if filename.endswith(suffix) and func == name:
                calls, t = cum.get((suffix, name), (0, 0.0))
                cum[(suffix, name)] = (calls + ncalls, t + ct)
    total = cum[("gate/gate.py", "handle")][1]
    table = []
    for suffix, name, label in PROFILE_PARTS:
        calls, t = cum.get((suffix, name), (0, 0.0))
        table.append(
            [label, f"{calls:,}", fmt(t, 2), f"{100 * t / total:.0f} %", fmt(1e6 * t / calls if calls else 0, 1)]
        )
    return raw, table


def main() -> None:
    ap = cli(__doc__, "small sizes, 3 repeats (CI smoke)", NAME)
    ap.add_argument("--repeat", type=int, default=None, help="timeit repeats (default 7, quick 3)")
    args = ap.parse_args()
    quick = args.quick
    repeat = args.repeat or (3 if quick else 7)
    corpus = load_corpus()
    texts = [t for _, t in corpus]
    started = time.perf_counter()

    def section(title: str, *parts) -> None:
        print(f"done: {title}", flush=True)
        sections.append(f"## {title}\n\n" + "\n\n".join(parts))

    sections: list[str] = []

    section(
        "Decode and validate",
        md_table(["step", "µs/message", "note"], bench_decode(texts, repeat, 300 if quick else 2000)),
    )
    cons, rate = bench_consent(texts, repeat, 300 if quick else 2000)
    section(
        "Consent-only path (no burst step)",
        md_table(["step", "µs/send", "note"], cons),
        "Consent-step decisions per second (one core, Gate.handle, MemoryStore):",
        md_table(["stream", "µs/send", "decisions/s", "note"], rate),
    )
    sk_rows, base = bench_sketch(corpus[::10] if quick else corpus, repeat, 25 if quick else 5)
    section(
        "Sketching (normalize + shingles + MinHash)",
        md_table(["step", "µs/text", "note"], sk_rows),
        "Baseline, measured alternately in the same run on the same texts:",
        md_table(["how", "µs/text", "vs Sketcher"], base),
        "A batch at once (`Sketcher.sketch_many`; `presketch` fills a per-batch memo with it), measured "
        "alternately with text by text, all texts:",
        md_table(["how", "µs/text", "vs text by text"], bench_sketch_batches([t for _, t in corpus], repeat)),
    )
    section(
        "Cluster lookup: SenderState.decide with pre-computed sketches (no sketching)",
        md_table(["clusters", "step", "µs/call"], bench_clusters(texts, repeat, 100 if quick else 500)),
        "Junk index lookup (every send that reaches the burst step does this once):",
        md_table(["step", "µs/call"], bench_junk_match(texts, repeat)),
    )
    section(
        "Row encode / decode",
        md_table(
            ["row", "bytes", "encode µs (to_bytes / to_rows)", "decode µs (from_bytes / from_rows)"],
            bench_rows(texts, repeat),
        ),
    )
    section(
        "Retention: lapsed conversations swept (models/retention.py)",
        md_table(["figure", "value", "note"], bench_retention(5_000 if quick else 100_000)),
    )
    stream = mixed_stream(corpus, 3000 if quick else 30_000)
    total, cats = bench_mixed(*stream, max(3, repeat - 2))
    section(
        "Full Gate.handle on a mixed stream (pre-decoded events, fresh MemoryStore per repeat)",
        md_table(["stream", "events", "µs/event", "events/s"], total),
        "By category (instrumented passes; perf_counter_ns around each call):",
        md_table(["category", "events", "mean µs", "median µs"], cats),
    )
    section(
        "Metrics (per batch: tally while deciding, apply once)",
        md_table(["step", "µs/batch", "µs/event", "share"], bench_metrics(*stream, repeat)),
    )
    if not quick:
        raw, table = profile_sends(*stream)
        section(
            "cProfile of Gate.handle over the live mixed stream",
            "Cumulative time per function (cProfile inflates functions with many small calls; the shares are "
            "indicative):",
            md_table(["function", "calls", "cum s", "share of handle", "µs/call"], table),
            "Top functions by own time:\n\n```\n" + raw + "\n```",
        )
    write_report(
        out_path(args.out, quick, NAME),
        "sendgate: µs per step (in-process)",
        "python -m bench.steps",
        [f"repeats: {repeat} (median reported); wall time {time.perf_counter() - started:.0f} s"],
        sections,
    )


if __name__ == "__main__":
    main()
