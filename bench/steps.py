"""µs per message for each step of the gate, in-process (no Kafka).

    python -m bench.steps            # full run (a few minutes), writes bench/results/steps.md
    python -m bench.steps --quick    # seconds: smoke test for CI

Every figure is the median of several timeit repeats. Ratios against the naive datasketch
baseline are taken repeat by repeat, with both sides run alternately in the same process.
"""
from __future__ import annotations

import argparse
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
from sendgate.models.consent import Conversation, Userkey
from sendgate.models.decisions import Decision
from sendgate.models.events import decode_event, validate
from sendgate.models.gate import CLOCKS, CONVERSATIONS, Gate, MemoryStore, key
from sendgate.models.clock import AppClock
from sendgate.models.junk import JunkIndex, JunkTemplate
from sendgate.models.policy import Policy
from sendgate.models.similarity import SEED, Sketcher, normalize, shingles, similarities

from ._common import (DAY, MINUTE, SECOND, T0, fmt, header, load_corpus, md_table, median, median_us,
                      side_by_side, write_results)

NAME = "steps"


# --- corpus helpers ---------------------------------------------------------------------------
def distinct_texts(texts: list[str], sketcher: Sketcher, count: int, max_sim: float = 0.3,
                   min_len: int = 40) -> list[str]:
    """`count` texts whose sketches are pairwise below `max_sim` (each starts its own cluster)."""
    chosen: list[str] = []
    rows: list[np.ndarray] = []
    for text in texts:
        if len(text) < min_len:
            continue
        sk = sketcher.sketch(text)
        if rows and similarities(sk, np.stack(rows)).max() >= max_sim:
            continue
        chosen.append(text)
        rows.append(sk)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"only {len(chosen)} distinct texts found")


def send_doc(rng: random.Random, i: int, text: str) -> dict:
    return {"type": "send", "request_id": f"req-{i:08d}", "app": f"app-{rng.randrange(100)}",
            "sender": f"sender-{rng.randrange(1000):04d}", "userkey": f"+4477009{rng.randrange(10**5):05d}",
            "network": "sms", "text": text, "reply_to": None if rng.random() < 0.7 else f"in-{i:08d}",
            "ts": T0 + i * 100}


# --- 1. decode + validate ---------------------------------------------------------------------
def bench_decode(texts: list[str], repeat: int, n: int) -> list[list]:
    rng = random.Random(1)
    docs = [send_doc(rng, i, texts[i % len(texts)]) for i in range(n)]
    raws = [orjson.dumps(d) for d in docs]

    def decode_all():
        for raw in raws:
            decode_event(raw, T0)

    def loads_all():
        for raw in raws:
            orjson.loads(raw)

    def validate_all():
        for d in docs:
            validate(d, T0)

    mean_bytes = sum(map(len, raws)) / len(raws)
    return [
        ["decode_event (orjson.loads + validate) of a send", fmt(median_us(decode_all, 1, repeat, per=n), 2),
         f"{len(raws)} distinct send JSONs, mean {mean_bytes:.0f} bytes"],
        ["  of which orjson.loads", fmt(median_us(loads_all, 1, repeat, per=n), 2), ""],
        ["  of which validate (decoded dict -> Send)", fmt(median_us(validate_all, 1, repeat, per=n), 2), ""],
    ]


# --- 2. consent-only path ---------------------------------------------------------------------
APP, SENDER = "app-0", "sender-0"


def consent_fixture(n: int, texts: list[str]) -> tuple[MemoryStore, Gate, dict[str, list[ev.Send]]]:
    """A store with `n` conversing users (inbound 5 min before the sends) and `n` opted-out users;
    returns send lists that stop at the consent step: reply, reply_to reply, opted_out, no_conversation."""
    gate, store = Gate(), MemoryStore()
    gate.handle(ev.SenderProfile("sp", APP, SENDER, T0 - 365 * DAY, T0), store)
    ts_in, ts_send = T0 + SECOND, T0 + 6 * MINUTE
    for i in range(n):
        gate.handle(ev.Inbound(f"in-{i}", APP, SENDER, f"u{i}", "sms", "hi there", ts_in), store)
        gate.handle(ev.OptOut(f"oo-{i}", APP, f"o{i}", "web-form", ts_in), store)
    t = lambda i: texts[i % len(texts)]  # noqa: E731
    streams = {
        "reply (last inbound < 15 min ago, no reply_to)":
            [ev.Send(f"r-{i}", APP, SENDER, f"u{i}", "sms", t(i), None, ts_send) for i in range(n)],
        "reply (reply_to names a recent inbound)":
            [ev.Send(f"rt-{i}", APP, SENDER, f"u{i}", "sms", t(i), f"in-{i}", ts_send) for i in range(n)],
        "rejected opted_out":
            [ev.Send(f"o-{i}", APP, SENDER, f"o{i}", "sms", t(i), None, ts_send) for i in range(n)],
        "rejected no_conversation":
            [ev.Send(f"n-{i}", APP, SENDER, f"n{i}", "sms", t(i), None, ts_send) for i in range(n)],
    }
    # These paths write nothing, so replaying a list against the same store is a fair repeat.
    for name, sends in streams.items():
        out = gate.handle(sends[0], store)
        expect = {"reply": "reply", "rejected opted_out": "opted_out", "rejected no_conversation": "no_conversation"}
        want = next(v for k, v in expect.items() if name.startswith(k))
        assert out[0].reason == want, (name, out[0].reason, out[0].detail)
    return store, gate, streams


def bench_consent(texts: list[str], repeat: int, n: int) -> tuple[list[list], list[list]]:
    store, gate, streams = consent_fixture(n, texts)
    rows = []
    for name, sends in streams.items():
        def run(sends=sends):
            for e in sends:
                gate.handle(e, store)
        rows.append([f"Gate.handle: {name}", fmt(median_us(run, 1, repeat, per=len(sends)), 2), f"{n} userkeys"])
    # consent-step decisions per second on an interleaved stream of the three kinds
    mixed = [e for trio in zip(streams["reply (last inbound < 15 min ago, no reply_to)"],
                               streams["rejected opted_out"], streams["rejected no_conversation"]) for e in trio]

    def run_mixed():
        for e in mixed:
            gate.handle(e, store)
    us = median_us(run_mixed, 1, repeat, per=len(mixed))
    rate = [["consent-only stream (reply / opted_out / no_conversation, 1:1:1)", fmt(us, 2),
             f"{1e6 / us:,.0f}", f"{len(mixed)} sends"]]
    return rows, rate


# --- 3. sketching -----------------------------------------------------------------------------
def naive_datasketch(texts: list[str]):
    """What a first implementation would do: a default MinHash (SHA-1, permutations generated in
    the constructor) per message, updated one shingle at a time."""
    def run():
        for text in texts:
            m = MinHash()
            for sh in shingles(normalize(text), 4):
                m.update(sh)
    return run


def bench_sketch(corpus: list[tuple[str, str]], repeat: int, subset_step: int) -> tuple[list[list], list[list]]:
    all_texts = [t for _, t in corpus]
    ham = [t for lbl, t in corpus if lbl == "ham"]
    spam = [t for lbl, t in corpus if lbl == "spam"]
    sk = Sketcher()
    rows = []
    for name, texts in (("all", all_texts), ("ham", ham), ("spam", spam)):
        def run(texts=texts):
            for text in texts:
                sk.sketch(text)
        mean_len = sum(map(len, texts)) / len(texts)
        rows.append([f"Sketcher.sketch, {name} texts (num_perm 128)", fmt(median_us(run, 1, repeat, per=len(texts)), 1),
                     f"{len(texts)} texts, mean {mean_len:.0f} chars"])
    for num_perm in (64, 256):
        s2 = Sketcher(num_perm=num_perm)

        def run(s2=s2):
            for text in all_texts:
                s2.sketch(text)
        rows.append([f"Sketcher.sketch, all texts (num_perm {num_perm})",
                     fmt(median_us(run, 1, repeat, per=len(all_texts)), 1), ""])

    def prep():
        for text in all_texts:
            shingles(normalize(text), 4)
    rows.append(["  of which normalize + shingles", fmt(median_us(prep, 1, repeat, per=len(all_texts)), 1), ""])

    # Side by side against naive datasketch use, on a subset (the naive path is slow).
    subset = all_texts[::subset_step]

    def ours():
        for text in subset:
            sk.sketch(text)

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

    runs = side_by_side({"ours": ours, "naive": naive_datasketch(subset), "fresh_batch_sha1": fresh_batch_sha1,
                         "fresh_batch_crc": fresh_batch_crc, "shared_batch_crc": shared_batch_crc,
                         "construct_only": construct_only},
                        number=1, repeat=repeat, per=len(subset))
    ours_us = median(runs["ours"])

    def ratio(name: str) -> str:
        return f"{median(b / a for a, b in zip(runs['ours'], runs[name])):.1f}x"
    base = [
        ["Sketcher.sketch (crc32 of 4-grams by table lookups, permutations in numpy)", fmt(ours_us, 1), "1.0x"],
        ["datasketch: one MinHash(crc32, affine32), clear() + update_batch per message (the previous Sketcher)",
         fmt(median(runs["shared_batch_crc"]), 1), ratio("shared_batch_crc")],
        ["naive: MinHash() per message (sha1) + update() per shingle", fmt(median(runs["naive"]), 1), ratio("naive")],
        ["MinHash() per message (sha1) + update_batch", fmt(median(runs["fresh_batch_sha1"]), 1), ratio("fresh_batch_sha1")],
        ["MinHash(crc32, affine32) per message + update_batch", fmt(median(runs["fresh_batch_crc"]), 1), ratio("fresh_batch_crc")],
        ["MinHash() constructor alone", fmt(median(runs["construct_only"]), 1), ratio("construct_only")],
    ]
    base.append([f"(subset: every {subset_step}th text, {len(subset)} texts; ratio = median of per-repeat ratios)", "", ""])
    return rows, base


# --- 4. cluster lookup ------------------------------------------------------------------------
def sender_with_clusters(policy: Policy, sketches: list[np.ndarray], k: int) -> SenderState:
    st = SenderState(registered_ts=T0 - 365 * DAY, conversing=50)
    for j in range(k):
        v = st.decide(T0 + j * SECOND, recipient_hash(f"u{j}"), sketches[j], policy, None)
        assert v.cluster_id == f"c{j + 1}", "cluster texts must be mutually dissimilar"
    assert len(st.clusters) == k
    return st


def bench_clusters(texts: list[str], repeat: int, copies: int) -> list[list]:
    policy = Policy()
    sk = Sketcher(policy.num_perm, policy.shingle_size)
    chosen = distinct_texts(texts, sk, 34)
    sketches = [sk.sketch(t) for t in chosen]
    miss = sketches[33]  # dissimilar to every cluster
    rows = []
    for k in (1, 8, 32):
        st = sender_with_clusters(policy, sketches, k)
        probe_ts = T0 + 40 * SECOND
        j = k - 1  # the most recent cluster: same argmax cost as any other row
        hit = sketches[j]
        matrix = st.sketches

        def sims():
            similarities(hit, matrix)
        rows.append([k, "similarities() alone (k x num_perm compare)", fmt(median_us(sims, 5000, repeat), 2)])

        def counted(st=st, hit=hit, j=j):
            st.decide(probe_ts, recipient_hash(f"u{j}"), hit, policy, None)
        v = st.decide(probe_ts, recipient_hash(f"u{j}"), hit, policy, None)
        assert v.outcome == "accepted" and "already counted" in v.detail, v.detail
        rows.append([k, "decide: hit, recipient already counted (pure lookup)", fmt(median_us(counted, 2000, repeat), 2)])

        # Paths that change the row: each call gets its own fresh copy, decoded outside the timing.
        pool: list[SenderState] = []

        def fresh(pool=pool, st=st):
            pool[:] = [copy.deepcopy(st) for _ in range(copies)]

        def new_recipient(pool=pool, hit=hit):
            for s in pool:
                s.decide(probe_ts, recipient_hash("u-new"), hit, policy, None)

        def miss_new_cluster(pool=pool):
            for s in pool:
                s.decide(probe_ts, recipient_hash("u-new"), miss, policy, None)
        rows.append([k, "decide: hit, new recipient (free)", fmt(median_us(new_recipient, 1, repeat, setup=fresh, per=copies), 2)])
        rows.append([k, "decide: miss -> new cluster" + (" (evicts one)" if k == policy.max_clusters else ""),
                     fmt(median_us(miss_new_cluster, 1, repeat, setup=fresh, per=copies), 2)])
        # paced: the hit cluster already holds its 10 free recipients
        st10 = sender_with_clusters(policy, sketches, k)
        for r in range(1, policy.free_recipients):
            st10.decide(T0 + 35 * SECOND + r, recipient_hash(f"f{r}"), hit, policy, None)

        def fresh10(pool=pool, st10=st10):
            pool[:] = [copy.deepcopy(st10) for _ in range(copies)]
        probe = copy.deepcopy(st10).decide(probe_ts, recipient_hash("u-new"), hit, policy, None)
        assert probe.reason == "burst_paced" and probe.outcome == "delayed", (probe.reason, probe.detail)
        rows.append([k, "decide: hit, paced (11th recipient, delayed)",
                     fmt(median_us(new_recipient, 1, repeat, setup=fresh10, per=copies), 2)])
    return rows


def bench_junk_match(texts: list[str], repeat: int) -> list[list]:
    """Every send that reaches the burst step is matched against the whole junk index."""
    policy = Policy()
    sk = Sketcher()
    rng = np.random.default_rng(7)
    probe = sk.sketch(texts[0])
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


# --- 5. row codecs ----------------------------------------------------------------------------
def bench_rows(texts: list[str], repeat: int) -> list[list]:
    policy = Policy()
    sk = Sketcher()
    sketches = [sk.sketch(t) for t in distinct_texts(texts, sk, 32)]
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
        dec = median_us(lambda: SenderState.from_rows(head, clusters.get, sketch_rows.get, policy.num_perm), 2000, repeat)
        rows.append([f"SenderState, {k} clusters (all rows; written by one send)", f"{whole:,}; {per_send:,}",
                     fmt(enc, 2), fmt(dec, 2)])
    u = Userkey()
    u.opt_out(T0, "keyword STOP to sender 'sender-0001'")
    c = Conversation()
    for i in range(8):
        c.record_inbound(f"in-{i:08d}", T0 + i)
    for name, obj, cls in (("Userkey (opted out by keyword)", u, Userkey), ("Conversation, 8 recent inbounds", c, Conversation)):
        raw = obj.to_bytes()
        rows.append([name, len(raw), fmt(median_us(obj.to_bytes, 5000, repeat), 2),
                     fmt(median_us(lambda raw=raw, cls=cls: cls.from_bytes(raw), 5000, repeat), 2)])
    return rows


# --- 5b. retention: lapsed conversations swept ---------------------------------------------------
def bench_retention(n: int) -> list[list]:
    """n userkeys write to one app on day 0; a tenth write again on day 300 and a twentieth opt
    out. Past day 400 the app's events sweep the lapsed conversations: the rows left, what a sweep
    costs per conversation removed, and what indexing costs the inbounds (horizon 400 vs 0 days,
    the same inbounds, run alternately)."""
    def inbounds(users: range, ts: int, text: str = "hello") -> list[ev.Event]:
        return [validate({"type": "inbound", "event_id": f"in-{ts}-{u}", "app": "a", "sender": "s",
                          "userkey": f"user-{u:07d}", "network": "sms", "text": text, "ts": ts}, 0) for u in users]

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
    ratio = [a / b for a, b in zip(costs[400], costs[0])]
    return [
        ["rows (all kinds) before the sweep; after", f"{rows_before:,}; {rows_after:,}",
         f"{n:,} userkeys, {len(renewed):,} wrote again on day 300, {len(stops):,} opted out (kept)"],
        ["bytes (key + value) before; after", f"{bytes_before:,}; {bytes_after:,}",
         f"{1 - bytes_after / bytes_before:.0%} less to restore"],
        ["conversations removed; events that swept them", f"{removed:,}; {ticks:,}",
         "one bucket row (<= 256 conversations) per event of the app"],
        ["sweep: µs per conversation removed", fmt(swept_s / max(1, removed) * 1e6, 2), "read, check, delete"],
        ["inbound (first of the day) µs: horizon 400 d; 0 d (no index)",
         f"{fmt(median(costs[400]), 1)}; {fmt(median(costs[0]), 1)}",
         f"ratio {median(ratio):.2f} (alternate loads, 3 each)"],
    ]


# --- 6. the full Gate.handle on a mixed stream ------------------------------------------------
def mixed_stream(corpus: list[tuple[str, str]], n_events: int,
                 seed: int = 42) -> tuple[list[ev.Event], list[ev.Event]]:
    """A seeded stream of one busy deployment, 10 apps x 20 senders: (history, live).

    The history (before T0: sender profiles, opt-outs, and 100 users per sender who wrote 20 min
    to 2 days ago) is loaded untimed. The live part, time-ordered, is about 30 % inbound, 20 %
    replies, 25 % ordinary sends to users who wrote more than 15 min ago (burst step, one-off
    texts), 5 % to opted-out users, 5 % to users who never wrote (no_conversation) and 15 % blast
    sends (spam templates with per-recipient variants, 150 recipients each, which get paced)."""
    rng = random.Random(seed)
    ham = [t for lbl, t in corpus if lbl == "ham"]
    spam = [t for lbl, t in corpus if lbl == "spam"]
    apps = [f"app-{i}" for i in range(10)]
    senders = [(a, f"sender-{j}") for a in apps for j in range(20)]
    out: list[tuple[int, int, ev.Event]] = []  # (ts, order, event)
    order = 0

    def add(e: ev.Event) -> None:
        nonlocal order
        out.append((e.ts, order, e))
        order += 1

    reply_ms = Policy().reply_window_s * SECOND
    last_in: dict[tuple[str, str, str], tuple[str, int]] = {}
    pool: dict[tuple[str, str], list[str]] = {}
    for a, s in senders:
        add(ev.SenderProfile(f"sp-{a}-{s}", a, s, T0 - 400 * DAY, T0 - 3 * DAY))
        pool[(a, s)] = [f"u{i}" for i in range(300)]
        for u in rng.sample(pool[(a, s)], 100):
            ts = T0 - rng.randint(20 * MINUTE, 2 * DAY)
            eid = f"h-{a}-{s}-{u}"
            add(ev.Inbound(eid, a, s, u, "sms", rng.choice(ham), ts))
            last_in[(a, s, u)] = (eid, ts)
    for a in apps:
        for i in range(50):
            add(ev.OptOut(f"oo-{a}-{i}", a, f"o{i}", "web-form", T0 - 3 * DAY))
    n_blast = int(n_events * 0.15)
    n_other = n_events - n_blast
    ts = T0
    for i in range(n_other):
        ts += rng.randint(50, 450)
        a, s = senders[rng.randrange(len(senders))]
        known = [u for u in pool[(a, s)] if (a, s, u) in last_in]
        recent = [u for u in known if ts - last_in[(a, s, u)][1] <= reply_ms - 10 * SECOND]
        old = [u for u in known if ts - last_in[(a, s, u)][1] > reply_ms]
        r = rng.random() * 0.85
        if r < 0.30 or (r < 0.50 and not recent) or (r < 0.75 and not old):
            u = rng.choice(pool[(a, s)])
            last_in[(a, s, u)] = (f"in-{i}", ts)
            add(ev.Inbound(f"in-{i}", a, s, u, "sms", rng.choice(ham), ts))
        elif r < 0.50:  # a reply: half name the inbound, half rely on the 15-minute window
            u = rng.choice(recent)
            eid = last_in[(a, s, u)][0]
            add(ev.Send(f"rq-{i}", a, s, u, "sms", rng.choice(ham), eid if rng.random() < 0.5 else None, ts))
        elif r < 0.75:
            add(ev.Send(f"rq-{i}", a, s, rng.choice(old), "sms", rng.choice(ham), None, ts))
        elif r < 0.80:
            add(ev.Send(f"rq-{i}", a, s, f"o{rng.randrange(50)}", "sms", rng.choice(ham), None, ts))
        else:
            add(ev.Send(f"rq-{i}", a, s, f"n{rng.randrange(10**6)}", "sms", rng.choice(ham), None, ts))
    end = ts
    # blasts: 150 recipients each, 0.5-3 s apart; the recipients wrote 20-60 min before the blast
    b = 0
    while n_blast > 0:
        a, s = senders[rng.randrange(len(senders))]
        n = min(150, n_blast)
        n_blast -= n
        template = rng.choice(spam)
        start = rng.randint(T0 + 10 * MINUTE, max(T0 + 10 * MINUTE, end - n * 2 * SECOND))
        t = start
        for j in range(n):
            u = f"b{b}-{j}"
            add(ev.Inbound(f"bin-{b}-{j}", a, s, u, "sms", "info please", start - rng.randint(20, 60) * MINUTE))
            add(ev.Send(f"bl-{b}-{j}", a, s, u, "sms", variant(rng, template, j), None, t))
            t += rng.randint(500, 3000)
        b += 1
    out.sort(key=lambda x: (x[0], x[1]))
    history = [e for ts, _, e in out if ts < T0]
    live = [e for ts, _, e in out if ts >= T0]
    return history, live


HOUR_MS = 60 * MINUTE
NAMES = ("Anna", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack", "Kofi", "Lena")


def variant(rng: random.Random, template: str, j: int) -> str:
    """A per-recipient copy: name inserted, digits changed, a link appended or changed."""
    import re
    text = re.sub(r"\d", lambda m: str(rng.randrange(10)), template)
    text = f"{rng.choice(NAMES)}, {text}"
    return text + f" http://x.co/{rng.randrange(10**6):06d}"


def classify(e: ev.Event, out: list) -> str:
    if not isinstance(e, ev.Send):
        return type(e).__name__
    d = next(r for r in out if isinstance(r, Decision) and r.request_id == e.request_id
             and r.outcome not in ("released", "cancelled"))
    if d.reason in ("conversation", "opt_in", "unrestricted"):
        return "send: burst step, accepted free"
    if d.reason in ("burst_paced", "burst_limit", "junk_similar"):
        return f"send: burst step, {d.outcome} {d.reason}"
    return f"send: {d.outcome} {d.reason}"


def bench_mixed(corpus, repeat: int, n_events: int) -> tuple[list[list], list[list], list[ev.Event]]:
    history, events = mixed_stream(corpus, n_events)
    n_sends = sum(isinstance(e, ev.Send) for e in events)
    ctx: dict = {}

    def loaded() -> tuple[Gate, MemoryStore]:
        gate, store = Gate(), MemoryStore()
        for e in history:
            gate.handle(e, store)
        return gate, store

    def fresh():
        ctx["gate"], ctx["store"] = loaded()

    def run():
        gate, store = ctx["gate"], ctx["store"]
        for e in events:
            gate.handle(e, store)
    us = median_us(run, 1, repeat, setup=fresh, per=len(events))
    total = [["mixed stream, all live events", len(events), fmt(us, 1), f"{1e6 / us:,.0f}"],
             ["  per send (total time / sends)", n_sends, fmt(us * len(events) / n_sends, 1),
              f"{1e6 / (us * len(events) / n_sends):,.0f}"]]
    # per-category timings: a few instrumented passes, median per category
    per_cat: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = {}
    for _ in range(max(3, repeat // 2)):
        gate, store = loaded()
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
    rows = [[cat, counts[cat], fmt(median(per_cat[cat]), 1), fmt(median(per_cat[cat + "#median"]), 1)]
            for cat in sorted(counts, key=lambda c: -counts[c])]
    return total, rows, (history, events)


PROFILE_PARTS = (  # (file suffix, function name, label)
    ("gate.py", "handle", "Gate.handle (total)"),
    ("gate.py", "_send", "  Gate._send (sends)"),
    ("gate.py", "_burst", "    Gate._burst (sends that reach the burst step)"),
    ("similarity.py", "sketch", "      Sketcher.sketch"),
    ("similarity.py", "normalize", "        normalize (4 regex passes)"),
    ("similarity.py", "shingles", "        shingles"),
    ("minhash.py", "update_batch", "        MinHash.update_batch (crc32 per shingle + fmix + permute + min)"),
    ("junk.py", "match", "      JunkIndex.match"),
    ("burst.py", "from_rows", "      SenderState.from_rows (all callers)"),
    ("burst.py", "to_rows", "      SenderState.to_rows (all callers)"),
    ("burst.py", "decide", "      SenderState.decide"),
    ("burst.py", "_join", "        SenderState._join (similarities, argmax, new cluster)"),
    ("burst.py", "_expire", "        SenderState._expire"),
    ("gate.py", "_hold", "      Gate._hold (pending + schedule + due rows)"),
    ("gate.py", "_inbound", "  Gate._inbound (inbound events)"),
    ("gate.py", "_release_due", "  Gate._release_due (every event)"),
    ("decisions.py", "iso", "  iso() timestamps in detail strings (all callers)"),
    ("consent.py", "from_bytes", "  Userkey/Conversation/AppGrant.from_bytes"),
)


def bench_metrics(history: list[ev.Event], events: list[ev.Event], repeat: int, batch: int = 500) -> list[list]:
    """The metrics' cost per batch (streams/worker/metrics.py): tallying a batch's outputs while it is
    decided and applying the tally once, next to deciding the same batch, in the same run."""
    from sendgate.streams.worker.metrics import BatchTally, GateMetrics

    gate, store = Gate(), MemoryStore()
    for e in history:
        gate.handle(e, store)
    chunk = events[:batch]
    outputs = [gate.handle(e, store) for e in chunk]
    scrape = {"partitions": [], "pending": 0, "next_due": None, "overdue_s": 0.0, "recovering": False,
              "recovery_remaining": 0, "rebalancing": False, "reasons": []}
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
    m_us, d_us = statistics.median(runs["metrics"]), statistics.median(runs["decide"])
    ratios = [a / b for a, b in zip(runs["metrics"], runs["decide"])]
    return [[f"tally + apply, a batch of {len(chunk)} events", fmt(m_us, 0), fmt(m_us / len(chunk), 2),
             f"{statistics.median(ratios):.1%} of deciding it"],
            [f"Gate.handle of the same {len(chunk)} events (fresh store)", fmt(d_us, 0), fmt(d_us / len(chunk), 2), ""]]


def profile_sends(streams: tuple[list[ev.Event], list[ev.Event]], top: int = 22) -> tuple[str, list[list]]:
    """cProfile of Gate.handle over the live part of the mixed stream: the raw top list by own time,
    and a table of where the cumulative time goes."""
    history, events = streams
    gate, store = Gate(), MemoryStore()
    for e in history:
        gate.handle(e, store)
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
    head = next(line for line in lines if "function calls" in line).strip()
    raw = head + "\n" + "\n".join(lines[start:start + top + 1])
    cum: dict[tuple[str, str], tuple[int, float]] = {}
    for (filename, _, func), (_, ncalls, _, ct, _) in st.stats.items():
        for suffix, name, _ in PROFILE_PARTS:
            if filename.endswith(suffix) and func == name:
                calls, t = cum.get((suffix, name), (0, 0.0))
                cum[(suffix, name)] = (calls + ncalls, t + ct)
    total = cum[("gate.py", "handle")][1]
    table = []
    for suffix, name, label in PROFILE_PARTS:
        calls, t = cum.get((suffix, name), (0, 0.0))
        table.append([label, f"{calls:,}", fmt(t, 2), f"{100 * t / total:.0f} %", fmt(1e6 * t / calls if calls else 0, 1)])
    return raw, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (CI smoke)")
    ap.add_argument("--repeat", type=int, default=None, help="timeit repeats (default 7, quick 3)")
    args = ap.parse_args()
    quick = args.quick
    repeat = args.repeat or (3 if quick else 7)
    corpus = load_corpus()
    texts = [t for _, t in corpus]
    if quick:
        corpus_s = corpus[::10]
    else:
        corpus_s = corpus
    started = time.perf_counter()
    sections: list[str] = []

    print("decode + validate ...", flush=True)
    dec = bench_decode(texts, repeat, 300 if quick else 2000)
    sections.append("## Decode and validate\n\n" + md_table(["step", "µs/message", "note"], dec))

    print("consent-only path ...", flush=True)
    cons, rate = bench_consent(texts, repeat, 300 if quick else 2000)
    sections.append("## Consent-only path (no burst step)\n\n" + md_table(["step", "µs/send", "note"], cons)
                    + "\n\nConsent-step decisions per second (one core, Gate.handle, MemoryStore):\n\n"
                    + md_table(["stream", "µs/send", "decisions/s", "note"], rate))

    print("sketching ...", flush=True)
    sk_rows, base = bench_sketch(corpus_s, repeat, 25 if quick else 5)
    sections.append("## Sketching (normalize + shingles + MinHash)\n\n" + md_table(["step", "µs/text", "note"], sk_rows)
                    + "\n\nBaseline, measured alternately in the same run on the same texts:\n\n"
                    + md_table(["how", "µs/text", "vs Sketcher"], base))

    print("cluster lookup ...", flush=True)
    cl = bench_clusters(texts, repeat, 100 if quick else 500)
    jm = bench_junk_match(texts, repeat)
    sections.append("## Cluster lookup: SenderState.decide with pre-computed sketches (no sketching)\n\n"
                    + md_table(["clusters", "step", "µs/call"], cl)
                    + "\n\nJunk index lookup (every send that reaches the burst step does this once):\n\n"
                    + md_table(["step", "µs/call"], jm))

    print("row codecs ...", flush=True)
    rc = bench_rows(texts, repeat)
    sections.append("## Row encode / decode\n\n" + md_table(["row", "bytes", "encode µs (to_bytes / to_rows)", "decode µs (from_bytes / from_rows)"], rc))

    print("retention ...", flush=True)
    rt = bench_retention(5_000 if quick else 100_000)
    sections.append("## Retention: lapsed conversations swept (models/retention.py)\n\n"
                    + md_table(["figure", "value", "note"], rt))

    print("mixed stream ...", flush=True)
    total, cats, events = bench_mixed(corpus, max(3, repeat - 2), 3000 if quick else 30_000)
    sections.append("## Full Gate.handle on a mixed stream (pre-decoded events, fresh MemoryStore per repeat)\n\n"
                    + md_table(["stream", "events", "µs/event", "events/s"], total)
                    + "\n\nBy category (instrumented passes; perf_counter_ns around each call):\n\n"
                    + md_table(["category", "events", "mean µs", "median µs"], cats))

    print("metrics ...", flush=True)
    mt = bench_metrics(*events, repeat)
    sections.append("## Metrics (per batch: tally while deciding, apply once)\n\n"
                    + md_table(["step", "µs/batch", "µs/event", "share"], mt))

    if not quick:
        print("profile ...", flush=True)
        raw, table = profile_sends(events)
        sections.append("## cProfile of Gate.handle over the live mixed stream\n\n"
                        "Cumulative time per function (cProfile inflates functions with many small calls; "
                        "the shares are indicative):\n\n"
                        + md_table(["function", "calls", "cum s", "share of handle", "µs/call"], table)
                        + "\n\nTop functions by own time:\n\n```\n" + raw + "\n```")

    elapsed = time.perf_counter() - started
    text = (header(NAME, "sendgate: µs per step (in-process)")
            + f"- repeats: {repeat} (median reported); wall time {elapsed:.0f} s\n\n" + "\n\n".join(sections))
    path = write_results(NAME + (".quick" if quick else ""), text)
    print(text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
