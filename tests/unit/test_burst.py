"""burst.py: clusters of near-identical sends, free allowance, pacing, risky senders and junk.

Rules (default policy): per (app, sender), near-identical texts (MinHash similarity >= 0.6) form a
cluster. 10 distinct recipients per 10-minute window go out free; beyond that each send gets the
next free slot, the gap after paced send k being 60 s * (1 + k/50). A wait beyond 6 h is rejected
(`burst_limit`, retry_after_s). Risky senders (no profile, younger than 90 days, fewer than 3
conversing userkeys, junk-reported within 7 days) get 5 free recipients and gaps x2. Texts similar
to reported junk are paced from the first recipient (gaps x2) and rejected after 3 reporters.
Clusters expire after 24 h idle; at most max_clusters per sender, singletons evicted first.
"""

from __future__ import annotations

import math

import random

import numpy as np
import pytest

from conftest import (
    DAY,
    HOUR,
    MINUTE,
    PARCEL,
    SECOND,
    T,
    TEMPLATE,
    UNRELATED,
    Harness,
    established,
    event,
    paced_slots,
    recipients,
    send,
)
from sendgate.models import events as ev
from sendgate.models.decisions import Decision, JunkShare
from sendgate.models.events import validate
from sendgate.models.gate import Decoded, Gate, MemoryStore
from sendgate.models.burst import (
    BurstCluster,
    ClusterArrays,
    SenderState,
    ordinal,
    pace_interval_ms,
    recipient_hash,
)
from sendgate.models.policy import Policy
from sendgate.models.similarity import Sketcher

SIX_HOURS = 6 * HOUR
NAMES = ["Anna", "Bo", "Christopher", "Dee", "Eleanor", "Farid", "Gus", "Hanna", "Ivo", "Jo", "Kasimir", "Lu"]


def variant(i: int) -> str:
    """The i-th recipient's copy of the parcel template: other name, number and URL."""
    return TEMPLATE.format(name=NAMES[i % len(NAMES)], num=str(40_000 + 7 * i), url=f"https://t{i}.example.com/p/{i}")


@pytest.fixture
def established_gate() -> Harness:
    """A non-risky sender S1 of app1 (old profile, 3 conversing userkeys) in an unrestricted app."""
    h = Harness()
    h.feed(*established())
    return h


def outcomes(decisions) -> list[tuple[str, str]]:
    return [(d.outcome, d.reason) for d in decisions]


# === pure functions ===========================================================================
def test_pace_interval_starts_at_60_s_and_grows_by_60_s_every_50_paced_sends():
    p = Policy()
    assert pace_interval_ms(p, 0, 1.0) == 60_000
    assert pace_interval_ms(p, 1, 1.0) == 61_200
    assert pace_interval_ms(p, 2, 1.0) == 62_400
    assert pace_interval_ms(p, 50, 1.0) == 120_000
    assert pace_interval_ms(p, 100, 1.0) == 180_000
    assert pace_interval_ms(p, 0, 2.0) == 120_000
    assert pace_interval_ms(p, 1, 2.0) == 122_400


def test_pace_interval_is_exact_for_every_paced_send():
    # int() truncation of the float product once made e.g. paced=21 85199 ms instead of 85200.
    p = Policy()
    got = {k: pace_interval_ms(p, k, 1.0) for k in range(200)}
    assert got == {k: 60_000 + 1_200 * k for k in range(200)}


@pytest.mark.parametrize(
    "n, text",
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (10, "10th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
        (111, "111th"),
        (112, "112th"),
    ],
)
def test_ordinal(n, text):
    assert ordinal(n) == text


def test_recipient_hash_is_stable_and_64_bit():
    assert recipient_hash("u1") == recipient_hash("u1")
    assert recipient_hash("u1") != recipient_hash("u2")
    assert 0 <= recipient_hash("u1") < 2**64


# === sender risk ==============================================================================
class TestRisk:
    P = Policy()

    def state(self, registered_ts=T - 365 * DAY, conversing=3) -> SenderState:
        return SenderState(registered_ts=registered_ts, conversing=conversing)

    def test_established_sender_is_not_risky(self):
        assert self.state().risk(T, self.P) is None

    def test_no_profile_is_risky(self):
        assert "no sender_profile" in SenderState(conversing=10).risk(T, self.P)

    @pytest.mark.parametrize("age, risky", [(90 * DAY - 1, True), (90 * DAY, False), (-DAY, True)])
    def test_young_sender_edge(self, age, risky):
        why = self.state(registered_ts=T - age).risk(T, self.P)
        assert (why is not None) is risky
        if risky:
            assert "younger than 90 days" in why

    @pytest.mark.parametrize("conversing, risky", [(0, True), (2, True), (3, False)])
    def test_few_conversations(self, conversing, risky):
        why = self.state(conversing=conversing).risk(T, self.P)
        assert (why is not None) is risky

    def test_a_junk_report_lowers_the_reputation_not_the_young_sender_rule(self):
        s = self.state()
        s.record_signal("junk_report", T, self.P)
        assert s.risk(T, self.P) is None and s.reputation.effect(T, self.P) == 0.5

    def test_record_conversation_counts(self):
        s = SenderState()
        for _ in range(3):
            s.record_conversation()
        assert s.conversing == 3


# === stored form ==============================================================================
class Rows:
    """A sender's rows as a store holds them: the head, and the cluster and sketch rows by id."""

    def __init__(self) -> None:
        self.head: bytes | None = None
        self.clusters: dict[str, bytes] = {}
        self.sketches: dict[str, bytes] = {}
        self.written: list[int] = []  # bytes of each write

    def write(self, state: SenderState) -> None:
        head, clusters, sketches = state.to_rows()
        self.head = head
        size = len(head)
        for rows, changed in ((self.clusters, clusters), (self.sketches, sketches)):
            for cid, raw in changed.items():
                if raw is None:
                    rows.pop(cid, None)
                else:
                    rows[cid] = raw
                    size += len(raw)
        self.written.append(size)

    def read(self, num_perm: int = 128) -> SenderState:
        return SenderState.from_rows(self.head, self.clusters.get, self.sketches.get, num_perm)


def test_sender_state_round_trip_with_clusters_and_sketches():
    p, sk = Policy(), Sketcher()
    s = SenderState(registered_ts=T - 100 * DAY, conversing=4)
    s.record_signal("not_delivered", T + 5, p)
    rows = Rows()
    for i, text in enumerate([PARCEL, variant(1), UNRELATED[0]]):
        s.decide(T + i, recipient_hash(f"u{i}"), sk.sketch(text), p, None)
        rows.write(s)
    back = rows.read()
    assert (back.registered_ts, back.conversing, back.reputation, back.seq) == (T - 100 * DAY, 4, s.reputation, 2)
    assert back.reputation.counts[1] == 1 and back.reputation.at == T + 5
    assert back.clusters == s.clusters and back.stamp == s.stamp
    assert [c.count for c in back.clusters] == [2, 1]
    assert np.array_equal(back.sketches, s.sketches) and back.sketches.shape == (2, 128)
    assert back.sketches.dtype == np.uint32


def test_a_clusters_sketch_row_holds_its_first_text_then_the_union_of_its_free_copies():
    p, sk = Policy(), Sketcher()
    s, rows = SenderState(registered_ts=T - 100 * DAY, conversing=4), Rows()
    first, second = sk.sketch(PARCEL), sk.sketch(variant(1))
    s.decide(T, recipient_hash("u0"), first, p, None)
    rows.write(s)
    assert len(rows.sketches["c1"]) == 128 * 4  # a new cluster: its first text only
    s.decide(T + 1, recipient_hash("u1"), second, p, None)
    rows.write(s)
    assert len(rows.sketches["c1"]) == 2 * 128 * 4
    back = rows.read()
    assert np.array_equal(back.sketches[0], first) and np.array_equal(back.unions[0], np.minimum(first, second))
    # a row written before unions (one sketch) reads with its union the same sketch
    rows.sketches["c1"] = first.astype("<u4").tobytes()
    assert np.array_equal(rows.read().unions[0], first)


def test_a_refused_send_does_not_join_the_union():
    p, sk = Policy(), Sketcher()
    s = SenderState(registered_ts=T - 100 * DAY, conversing=4)
    s.decide(T, recipient_hash("u0"), sk.sketch(PARCEL), p, None)
    s.to_rows()
    before = s.unions.copy()
    s.decide(T + 1, recipient_hash("u1"), sk.sketch(variant(1)), p, None)
    s.undo()
    assert np.array_equal(s.unions, before)
    assert s.to_rows()[2] == {}  # nor is its sketch row rewritten


PADDED = [
    f"{PARCEL} {pad}"
    for pad in (
        "ok see you at the station around six then, bring the umbrella please",
        "lovely weather today isnt it, shall we walk the dog later this afternoon",
        "remember grandma is visiting on sunday so tidy up your room before lunch",
    )
]
SPUN = [
    TEMPLATE.format(name=name, num=num, url="https://t.example/x")
    .replace("out for delivery", out)
    .replace("Track it", track)
    .replace("for help", end)
    for name, num, out, track, end in (
        ("Anna", 1, "on its way", "Follow it", "for assistance"),
        ("Ben", 2, "dispatched", "Trace it", "for support"),
        ("Cleo", 3, "out for delivery", "Follow it", "for support"),
        ("Dan", 4, "dispatched", "Track it", "for assistance"),
        ("Eve", 5, "on its way", "Trace it", "for help"),
    )
]


@pytest.mark.parametrize("copies", [PADDED, SPUN], ids=["padding", "spintax"])
def test_padded_and_spun_copies_join_one_cluster_by_containment_not_by_jaccard(copies):
    sk = Sketcher()
    for measure, joined in (("containment", {"c1"}), ("jaccard", None)):
        p = Policy(similarity_measure=measure)
        s = SenderState(registered_ts=T - 100 * DAY, conversing=4)
        ids = {
            s.decide(T + i, recipient_hash(f"u{i}"), sk.sketch(text), p, None).cluster_id
            for i, text in enumerate(copies)
        }
        if joined:
            assert ids == joined
        else:
            assert len(ids) > 1


def test_a_short_text_is_compared_by_jaccard_not_by_what_contains_it():
    sk, p = Sketcher(), Policy()
    s = SenderState(registered_ts=T - 100 * DAY, conversing=4)
    s.decide(T, recipient_hash("u0"), sk.sketch("ok thanks, see you at the station around six then"), p, None)
    assert s.decide(T + 1, recipient_hash("u1"), sk.sketch("ok thanks"), p, None).cluster_id == "c2"


def test_a_text_inside_one_far_longer_is_compared_by_jaccard():
    sk, p = Sketcher(), Policy()
    s = SenderState(registered_ts=T - 100 * DAY, conversing=4)
    short = "So when do you wanna go to the gym this week"
    s.decide(T, recipient_hash("u0"), sk.sketch(f"{UNRELATED[1]}. {short}? {UNRELATED[2]}. {UNRELATED[3]}"), p, None)
    assert s.decide(T + 1, recipient_hash("u1"), sk.sketch(short), p, None).cluster_id == "c2"


def test_a_send_rewrites_the_head_and_its_cluster_not_the_whole_sender():
    p, sk = Policy(), Sketcher()
    s, rows = SenderState(registered_ts=T - 365 * DAY, conversing=50), Rows()
    rng = random.Random(5)
    texts = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz    ") for _ in range(90)) for _ in range(p.max_clusters)]
    for i, text in enumerate(texts):  # a busy sender: 32 clusters
        s.decide(T + i, recipient_hash("u"), sk.sketch(text), p, None)
        rows.write(s)
    assert len(rows.clusters) == len(rows.sketches) == len(s.clusters) == p.max_clusters
    for j in range(5):  # five more recipients of one of its texts
        s.decide(T + 100 + j, recipient_hash(f"v{j}"), sk.sketch(texts[0]), p, None)
        rows.write(s)
    assert max(rows.written[-5:]) < 1024, rows.written[-5:]
    back = rows.read()
    assert back.clusters == s.clusters and np.array_equal(back.sketches, s.sketches)


def test_expired_and_evicted_clusters_lose_their_rows():
    p, sk = Policy(max_clusters=3), Sketcher()
    s, rows = SenderState(conversing=1), Rows()
    for i, text in enumerate([*UNRELATED[:4], PARCEL]):  # 5 one-off texts through 3 places: 2 evicted
        s.decide(T + i, recipient_hash("u"), sk.sketch(text), p, None)
        rows.write(s)
    assert sorted(rows.clusters) == sorted(c.cluster_id for c in s.clusters) and len(rows.clusters) == 3
    s.decide(T + p.cluster_idle_s * 1000 + 3, recipient_hash("u"), sk.sketch(PARCEL), p, None)  # the others expire
    rows.write(s)
    assert list(rows.clusters) == list(rows.sketches) == [s.clusters[0].cluster_id]
    assert rows.read().clusters == s.clusters


def test_a_v1_row_holding_everything_is_read_and_its_first_write_writes_every_row():
    import base64

    import orjson

    p, sk = Policy(), Sketcher()
    s = SenderState(conversing=1)
    for i in range(4):
        s.decide(T + i, recipient_hash("u"), sk.sketch(UNRELATED[i]), p, None)
    head = orjson.dumps([s.registered_ts, s.conversing, 0, s.seq, [c.to_list() for c in s.clusters]])
    v1 = head + b"\n" + s.sketches.astype("<u4").tobytes()  # sketches raw after the head
    v1_base64 = orjson.dumps([*orjson.loads(head), base64.b64encode(s.sketches.astype("<u4").tobytes()).decode()])
    for raw in (v1, v1_base64):
        rows = Rows()
        rows.head = raw
        back = rows.read()
        assert back.clusters == s.clusters and np.array_equal(back.sketches, s.sketches)
        rows.write(back)
        assert sorted(rows.clusters) == sorted(rows.sketches) == sorted(c.cluster_id for c in s.clusters)
        again = rows.read()
        assert again.clusters == s.clusters and np.array_equal(again.sketches, s.sketches)


def test_cluster_arrays_keep_the_clusters_in_order_through_moves_growth_and_removals():
    # the storage alone, against a list: appends past the end move to the front or grow, a removal
    # closes the gap from the shorter side, expiry keeps some from the front
    rng = random.Random(3)
    first = np.array([[1, 1]], dtype=np.uint32)
    arrays = ClusterArrays.of(first, None, 2)
    held = [(1, float(arrays.shingles[0, 0]))]  # (sketch value, its shingles) per cluster
    for step in range(400):
        op = rng.random() if step < 200 else step % 2 * 0.9  # then a steady churn: new in, oldest out
        if op < 0.55 or not held:
            held.append((step + 2, float(step)))
            assert arrays.append(np.full(2, step + 2, dtype=np.uint32), float(step)) == len(held) - 1
        elif op < 0.95:
            i = rng.randrange(len(held)) if step < 200 else 0
            del held[i]
            arrays.remove(i)
        else:
            kept = sorted(rng.sample(range(len(held)), len(held) // 2))
            held = [held[i] for i in kept]
            arrays.keep(np.array(kept, dtype=np.int64))
        firsts, unions = arrays.views()
        assert arrays.n == len(held) and arrays.start + arrays.n <= len(arrays.firsts)
        if held:
            assert firsts[:, 0].tolist() == unions[:, 1].tolist() == [value for value, _ in held]
            assert arrays.shingles[arrays.live, 0].tolist() == [shingles for _, shingles in held]
        else:
            assert firsts is None and unions is None
    assert len(arrays.firsts) > 8  # it grew


def test_sender_state_round_trip_when_empty():
    rows = Rows()
    assert rows.read() == SenderState()
    rows.write(SenderState())
    back = rows.read()
    assert (back.registered_ts, back.clusters, back.sketches) == (None, [], None)


def test_a_head_naming_a_missing_cluster_row_is_an_error_not_an_empty_sender():
    p, sk = Policy(), Sketcher()
    s, rows = SenderState(), Rows()
    s.decide(T, recipient_hash("u"), sk.sketch(PARCEL), p, None)
    rows.write(s)
    rows.clusters.clear()
    with pytest.raises(ValueError, match="rows are missing"):
        rows.read()


def test_cluster_to_list_matches_constructor_order():
    c = BurstCluster("c7", T, T + 1, T + 2, [recipient_hash("u")], 3, 1)
    assert BurstCluster(*c.to_list()) == c


# === the free allowance and pacing, through the gate =========================================
def test_tenth_recipient_is_free_and_eleventh_is_delayed_one_interval(established_gate):
    ds = established_gate.sends(recipients(11))
    assert outcomes(ds[:10]) == [("accepted", "unrestricted")] * 10
    assert [d.similar_recipients for d in ds] == list(range(1, 12))
    assert all(d.deliver_at is None for d in ds[:10])
    assert (ds[10].outcome, ds[10].reason, ds[10].deliver_at) == ("delayed", "burst_paced", T + MINUTE)
    assert "11th recipient" in ds[10].detail
    assert len({d.cluster_id for d in ds}) == 1
    assert [x.userkey for x in established_gate.deliveries] == recipients(10)


def test_paced_slots_grow_from_60_s(established_gate):
    ds = established_gate.sends(recipients(16))
    assert [d.deliver_at for d in ds[10:]] == paced_slots(T + MINUTE, 6)
    assert [d.deliver_at for d in ds[10:]] == [
        T + 60_000,
        T + 120_000,
        T + 181_200,
        T + 243_600,
        T + 307_200,
        T + 372_000,
    ]
    assert all(d.outcome == "delayed" for d in ds[10:])


def test_next_free_slot_counts_from_the_last_free_send(established_gate):
    ds = [established_gate.decide(send(u, at=i * SECOND, text=PARCEL)) for i, u in enumerate(recipients(11))]
    # the 10th went out at T+9 s; the first paced slot is one interval after it
    assert (ds[10].outcome, ds[10].deliver_at) == ("delayed", T + 9 * SECOND + MINUTE)


def test_a_free_slot_reached_while_the_window_lasts_goes_out_at_once(established_gate):
    established_gate.sends(recipients(10))
    d = established_gate.decide(send("u11", at=5 * MINUTE, text=PARCEL))
    assert (d.outcome, d.reason, d.deliver_at) == ("accepted", "burst_paced", T + 5 * MINUTE)
    assert [x.request_id for x in established_gate.last_deliveries] == [d.request_id]


def test_same_recipient_twice_counts_once(established_gate):
    ds = established_gate.sends(recipients(10))
    again = established_gate.decide(send("u01", at=SECOND, text=variant(3)))
    assert (again.outcome, again.reason, again.similar_recipients) == ("accepted", "unrestricted", 10)
    assert again.cluster_id == ds[0].cluster_id
    eleventh = established_gate.decide(send("u11", at=2 * SECOND, text=PARCEL))
    assert (eleventh.outcome, eleventh.deliver_at, eleventh.similar_recipients) == ("delayed", T + MINUTE, 11)


def test_a_paced_recipient_sent_the_same_text_again_is_paced_and_counted_again(established_gate):
    # Documented rule: only free recipients are remembered (bounded row); a repeat to a paced one
    # is paced again and counts again, which errs on the strict side.
    established_gate.sends(recipients(11))
    again = established_gate.decide(send("u11", at=SECOND, text=PARCEL))
    assert (again.outcome, again.similar_recipients) == ("delayed", 12)


def test_template_variants_join_one_cluster_and_an_unrelated_text_starts_another(established_gate):
    ds = [established_gate.decide(send(u, text=variant(i))) for i, u in enumerate(recipients(4))]
    other = established_gate.decide(send("u05", text=UNRELATED[0]))
    assert len({d.cluster_id for d in ds}) == 1
    assert [d.similar_recipients for d in ds] == [1, 2, 3, 4]
    assert ds[0].similarity == 1.0 and all(0.6 <= d.similarity < 1.0 for d in ds[1:])
    assert other.cluster_id != ds[0].cluster_id
    assert (other.similar_recipients, other.similarity) == (1, 1.0)


def test_variants_are_paced_together(established_gate):
    ds = [established_gate.decide(send(u, text=variant(i))) for i, u in enumerate(recipients(11))]
    assert [d.outcome for d in ds] == ["accepted"] * 10 + ["delayed"]
    assert ds[10].deliver_at == T + MINUTE


def test_clusters_are_per_sender_and_the_app_counts_them_all(established_gate):
    established_gate.feed(*established(sender="S2", grant=False))
    established_gate.sends(recipients(9), sender="S1")
    d = established_gate.decide(send("u10", text=PARCEL, sender="S2"))  # S2's first, the app's 10th
    assert (d.outcome, d.reason, d.similar_recipients, d.cluster_id) == ("accepted", "unrestricted", 1, "c1")
    d = established_gate.decide(send("u11", text=PARCEL, sender="S2"))  # the app's 11th: paced app-wide
    assert (d.outcome, d.reason, d.similar_recipients, d.cluster_id) == ("delayed", "burst_paced", 11, "app-c1")
    assert d.detail.startswith("counted across all of the app's sender names: 11th recipient")
    assert d.deliver_at == T + MINUTE


def test_a_blast_spread_over_six_sender_names_is_paced_as_one():
    h = Harness()
    names = [f"S{i}" for i in range(1, 7)]
    h.feed(*[e for name in names for e in established(sender=name)])
    # the seed's case: one template through 6 names, 8 recipients each, 48 texts in 2 minutes
    out = [
        h.decide(send(f"{name}-u{j}", at=(i * 8 + j) * 2500, text=variant(i * 8 + j), sender=name))
        for i, name in enumerate(names)
        for j in range(8)
    ]
    assert [d.outcome for d in out] == ["accepted"] * 10 + ["delayed"] * 38
    assert all(d.cluster_id.startswith("app-") for d in out[10:])
    slots = [d.deliver_at for d in out[10:]]
    assert slots == sorted(slots) and slots[0] == T + 9 * 2500 + MINUTE


def test_different_texts_through_many_names_are_not_paced():
    h = Harness()
    names = [f"S{i}" for i in range(1, 7)]
    h.feed(*[e for name in names for e in established(sender=name)])
    out = [h.decide(send(f"u{i}", at=i, text=text, sender=names[i % 6])) for i, text in enumerate(UNRELATED * 5)]
    assert {d.outcome for d in out} == {"accepted"}


def test_window_restarts_after_10_minutes_once_the_slots_have_passed(established_gate):
    first = established_gate.sends(recipients(11))
    assert first[10].deliver_at == T + MINUTE
    second = established_gate.sends(recipients(11, start=12), at=10 * MINUTE)
    assert outcomes(second[:10]) == [("accepted", "unrestricted")] * 10
    assert [d.similar_recipients for d in second[:10]] == list(range(1, 11))
    assert (second[10].outcome, second[10].deliver_at) == ("delayed", T + 10 * MINUTE + MINUTE)


def test_recipients_of_the_previous_window_count_again_in_the_next(established_gate):
    established_gate.sends(recipients(10))
    again = established_gate.sends(recipients(11), at=10 * MINUTE)
    assert [d.similar_recipients for d in again] == list(range(1, 12))
    assert (again[10].outcome, again[10].deliver_at) == ("delayed", T + 11 * MINUTE)


def test_window_has_not_restarted_1_ms_before_10_minutes(established_gate):
    established_gate.sends(recipients(10))
    d = established_gate.decide(send("u11", at=10 * MINUTE - 1, text=PARCEL))
    assert (d.reason, d.similar_recipients) == ("burst_paced", 11)


# --- the 6-hour limit -------------------------------------------------------------------------
def test_delay_beyond_6_hours_is_rejected_with_retry_after(established_gate):
    slots = paced_slots(T + MINUTE, 160)
    last_ok = max(i for i, s in enumerate(slots) if s - T <= SIX_HOURS)
    ds = established_gate.sends(recipients(10 + last_ok + 3))
    paced = ds[10:]
    assert all(d.outcome == "delayed" for d in paced[: last_ok + 1])
    retry = math.ceil((slots[last_ok + 1] - T - SIX_HOURS) / 1000)
    for d in paced[last_ok + 1 :]:  # a rejection does not take the slot, so the next one is rejected alike
        assert (d.outcome, d.reason, d.retry_after_s, d.deliver_at) == ("rejected", "burst_limit", retry, None)
        assert f"retry in {retry} s" in d.detail
    assert (last_ok, retry) == (146, 158)  # from the rule: 60000*(n+1) + 600*n*(n-1) <= 6 h


def test_late_paced_slots_follow_the_rule_exactly(established_gate):
    ds = established_gate.sends(recipients(10 + 40))
    assert [d.deliver_at for d in ds[10:]] == paced_slots(T + MINUTE, 40)


@pytest.mark.parametrize(
    "at, expected",
    [
        (1_200, ("delayed", "burst_paced", T + 181_200, None)),  # wait exactly the limit: allowed
        (1_199, ("rejected", "burst_limit", None, 1)),  # 1 ms more than the limit
    ],
)
def test_delay_limit_is_inclusive(at, expected):
    h = Harness(Policy(max_delay_s=180))
    h.feed(*established())
    ds = h.sends(recipients(12))
    assert [d.deliver_at for d in ds[10:]] == [T + 60_000, T + 120_000]
    d = h.decide(send("u13", at=at, text=PARCEL))  # its slot would be T + 181.2 s
    assert (d.outcome, d.reason, d.deliver_at, d.retry_after_s) == expected


def test_retrying_after_retry_after_s_is_accepted_for_the_slot():
    h = Harness(Policy(max_delay_s=180))
    h.feed(*established())
    h.sends(recipients(12))
    rejected = h.decide(send("u13", text=PARCEL))
    assert (rejected.outcome, rejected.retry_after_s) == ("rejected", 2)  # wait 181.2 s, limit 180 s
    retry = h.decide(send("u13", at=2 * SECOND, text=PARCEL, request_id="r-u13-retry"))
    assert (retry.outcome, retry.deliver_at) == ("delayed", T + 181_200)


# --- risky senders ----------------------------------------------------------------------------
def test_sender_without_profile_gets_5_free_and_double_intervals(gate: Harness):
    gate.feed(event("app_policy", -DAY))
    ds = gate.sends(recipients(8))
    assert outcomes(ds[:5]) == [("accepted", "unrestricted")] * 5
    assert [d.outcome for d in ds[5:]] == ["delayed"] * 3
    assert [d.deliver_at for d in ds[5:]] == paced_slots(T + 2 * MINUTE, 3, factor=2)
    assert [d.deliver_at for d in ds[5:]] == [T + 120_000, T + 240_000, T + 362_400]
    assert all("no sender_profile" in d.detail for d in ds)


@pytest.mark.parametrize("conversers, free", [(2, 5), (3, 10)])
def test_fewer_than_3_conversing_userkeys_is_risky(conversers, free):
    h = Harness()
    h.feed(*established(conversers=conversers))
    ds = h.sends(recipients(free + 1))
    assert [d.outcome for d in ds] == ["accepted"] * free + ["delayed"]
    assert ds[-1].deliver_at == T + (2 * MINUTE if free == 5 else MINUTE)


def test_conversing_userkeys_are_counted_once_each():
    h = Harness()
    h.feed(
        *established(conversers=1),  # conv1 writes three times: still one conversing userkey
        *[event("inbound", -DAY + i * MINUTE, userkey="conv1", text=f"msg {i}") for i in (1, 2)],
    )
    ds = h.sends(recipients(6))
    assert [d.outcome for d in ds] == ["accepted"] * 5 + ["delayed"]
    assert "only 1 userkey(s) have written to it" in ds[0].detail


def test_young_sender_turning_old_between_two_sends():
    h = Harness()
    h.feed(*established(registered_ts=T - 90 * DAY + 5 * MINUTE))  # 90 days old at T + 5 min
    young = h.sends(recipients(6))
    assert [d.outcome for d in young] == ["accepted"] * 5 + ["delayed"]
    assert young[5].deliver_at == T + 2 * MINUTE
    assert all("younger than 90 days" in d.detail for d in young)
    old = h.sends(recipients(11, start=11), at=10 * MINUTE)
    assert [d.outcome for d in old] == ["accepted"] * 10 + ["delayed"]
    assert old[10].deliver_at == T + 10 * MINUTE + MINUTE
    assert not any("stricter limits" in d.detail for d in old)


# --- junk -------------------------------------------------------------------------------------
def junk_report(reporter: str, at: int = -HOUR, text: str = PARCEL, **fields) -> dict:
    fields.setdefault("sender", "S9")  # another sender: S1 itself stays non-risky
    return event("junk_report", at, userkey=reporter, text=text, **fields)


def test_text_similar_to_reported_junk_is_paced_from_its_first_recipient(established_gate):
    established_gate.feed(junk_report("v1"))
    ds = [established_gate.decide(send(u, text=variant(i + 1))) for i, u in enumerate(recipients(3))]
    assert outcomes(ds) == [("accepted", "junk_similar"), ("delayed", "junk_similar"), ("delayed", "junk_similar")]
    assert [d.deliver_at for d in ds] == paced_slots(T, 3, factor=2)
    assert [d.deliver_at for d in ds] == [T, T + 120_000, T + 242_400]
    assert [x.userkey for x in established_gate.deliveries] == ["u01"]
    assert "reported as junk" in ds[1].detail


def test_unrelated_text_is_not_affected_by_a_junk_report_against_another_sender(established_gate):
    established_gate.feed(junk_report("v1"))
    d = established_gate.decide(send("u01", text=UNRELATED[0]))
    assert (d.outcome, d.reason) == ("accepted", "unrestricted")


@pytest.mark.parametrize(
    "reporters, outcome",
    [
        (["v1", "v2"], "accepted"),
        (["v1", "v1", "v1"], "accepted"),  # one reporter three times is still one reporter
        (["v1", "v2", "v3"], "rejected"),
    ],
)
def test_three_distinct_reporters_reject_similar_texts(established_gate, reporters, outcome):
    established_gate.feed(*[junk_report(r, text=variant(i)) for i, r in enumerate(reporters)])
    d = established_gate.decide(send("u01", text=variant(9)))
    assert (d.outcome, d.reason) == (outcome, "junk_similar")
    if outcome == "rejected":
        assert (d.retry_after_s, d.deliver_at) == (None, None)
        assert "3 recipients reported" in d.detail
        assert established_gate.last_deliveries == []


def test_junk_index_is_shared_by_every_app(established_gate):
    established_gate.feed(*[junk_report(r, app="other-app", sender="X") for r in ("v1", "v2", "v3")])
    d = established_gate.decide(send("u01", text=variant(2)))
    assert (d.outcome, d.reason) == ("rejected", "junk_similar")


def test_a_report_on_another_partition_counts_where_the_senders_partition_shows_it_whichever_is_read_first():
    """Live, a report decided on partition 1 is shared into partition 0's log after two of the
    sends there; replay reads the two partitions in whatever order they are fetched. Each send must
    see the index its own partition's log built, so both orders decide alike."""
    gate = Gate()
    reports = [validate(junk_report(r, app="other-app", sender="X", event_id=f"jr-{r}"), T) for r in ("v1", "v2", "v3")]
    shares = [
        ev.decode_event(out.to_json(), T)
        for report in reports
        for out in gate.handle(report, MemoryStore())
        if isinstance(out, JunkShare)
    ]
    sends = [validate(send(u, at=i * SECOND, text=variant(i)), T) for i, u in enumerate(recipients(4))]
    logs = {0: [*(validate(doc, T) for doc in established()), *sends[:2], *shares, *sends[2:]], 1: reports}

    def decide(first: int) -> list[tuple[str, str, str]]:
        gate, store, decided = Gate(), MemoryStore(), []
        for partition in (first, 1 - first):
            store.partition = partition
            for e in logs[partition]:
                decided += [
                    (d.request_id, d.outcome, d.reason) for d in gate.handle(e, store) if isinstance(d, Decision)
                ]
        return sorted(decided)

    assert decide(0) == decide(1)
    assert [(o, r) for rid, o, r in decide(1) if rid.startswith("r-u")] == [
        ("accepted", "unrestricted"),
        ("accepted", "unrestricted"),
        ("rejected", "junk_similar"),
        ("rejected", "junk_similar"),
    ]


@pytest.mark.parametrize(
    "after, free, interval",
    [
        (MINUTE, 5, 2 * MINUTE),  # score 0.5: half the allowance, twice the interval
        (DAY, 7, 80 * SECOND),  # the deficit halves in a day: 0.75
        (7 * DAY, 10, MINUTE),  # 0.996: clean again (steps of 0.05)
    ],
)
def test_a_junk_reported_senders_limits_recover_as_its_reputation_does(after, free, interval):
    h = Harness()
    h.feed(*established(), junk_report("v1", at=0, text=UNRELATED[3], sender="S1"))
    ds = h.sends(recipients(11), at=after)  # PARCEL is not like the reported text
    assert [d.outcome for d in ds[: free + 1]] == ["accepted"] * free + ["delayed"]
    assert ds[free].deliver_at == T + after + interval
    assert ("1 junk report(s)" in ds[0].detail) is (free < 10)


def test_a_paced_blast_costs_reputation_by_its_size_once_its_window_is_over():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(40))  # 30 paced: 0.9 ** 3 = 0.729
    # the next send, a day later: the blast's cluster has been idle 24 h and expires; its 30 paced
    # sends cost 0.9 ** 3 = 0.729 -> 0.75 (steps of 0.05): allowance 7, intervals 80 s
    later = h.sends(recipients(11, start=100), at=DAY, text=UNRELATED[0])
    assert [d.outcome for d in later[:8]] == ["accepted"] * 7 + ["delayed"]
    assert "1 paced blast(s)" in later[7].detail and later[7].deliver_at == T + DAY + 80 * SECOND


# --- cluster expiry and eviction -------------------------------------------------------------
@pytest.mark.parametrize("idle, same", [(24 * HOUR - 1, True), (24 * HOUR, False)])
def test_cluster_expires_after_24_hours_idle(established_gate, idle, same):
    first = established_gate.decide(send("u01", text=PARCEL))
    later = established_gate.decide(send("u02", at=idle, text=variant(2)))
    assert (later.cluster_id == first.cluster_id) is same
    assert (later.outcome, later.similar_recipients) == ("accepted", 1)


def test_activity_keeps_a_cluster_alive(established_gate):
    ids = {established_gate.decide(send(f"u{i}", at=i * 20 * HOUR, text=variant(i))).cluster_id for i in range(4)}
    assert len(ids) == 1


def test_expired_cluster_starts_with_a_fresh_allowance(established_gate):
    first = established_gate.sends(recipients(30))  # slots queued ~30 min ahead
    ds = established_gate.sends(recipients(11, start=31), at=DAY + HOUR)
    assert ds[0].cluster_id != first[0].cluster_id and [d.similar_recipients for d in ds[:3]] == [1, 2, 3]
    # fresh, but the expired cluster's 20 paced sends cost the sender 0.9 ** 2 = 0.81 -> 0.8:
    # 8 free, intervals 75 s
    assert [d.outcome for d in ds[:9]] == ["accepted"] * 8 + ["delayed"]
    assert ds[8].deliver_at == T + DAY + HOUR + 75 * SECOND


def test_at_most_max_clusters_and_singletons_are_evicted_before_templates():
    h = Harness(Policy(max_clusters=3))
    h.feed(*established())
    template = h.sends(["u01", "u02"], at=0)  # c1: a template (2 recipients), least recently used
    one_a = h.decide(send("u03", at=1 * SECOND, text=UNRELATED[0]))
    one_b = h.decide(send("u04", at=2 * SECOND, text=UNRELATED[1]))
    one_c = h.decide(send("u05", at=3 * SECOND, text=UNRELATED[2]))  # full: evicts one_a, not c1
    assert len({template[0].cluster_id, one_a.cluster_id, one_b.cluster_id, one_c.cluster_id}) == 4
    more = h.decide(send("u06", at=4 * SECOND, text=variant(6)))
    assert (more.cluster_id, more.similar_recipients) == (template[0].cluster_id, 3)
    again_a = h.decide(send("u07", at=5 * SECOND, text=UNRELATED[0]))  # evicted: a new cluster (evicts one_b)
    assert again_a.cluster_id not in {one_a.cluster_id, one_b.cluster_id, one_c.cluster_id, template[0].cluster_id}
    assert again_a.similar_recipients == 1
    again_c = h.decide(send("u08", at=6 * SECOND, text=UNRELATED[2]))
    assert (again_c.cluster_id, again_c.similar_recipients) == (one_c.cluster_id, 2)
    stored = h.sender("app1", "S1")
    assert len(stored.clusters) == 3 and stored.sketches.shape == (3, 128)


# --- a sender held decoded in memory decides as one read back from its rows ----------------------
# (the 30-minute soak: a cluster started just as the arrays moved or grew kept the arrays' length
# as its text's size, so the worker holding it joined variants a fresh decode would not: replay
# and live differed by which of them still held the sender decoded)
WORDS = (
    "parcel table invoice dentist survey flight order pizza meeting reminder account refund booking garden "
    "ticket concert lesson payment delivery voucher"
).split()
CALL_LATER, IN_MEETING = "Sorry, I'll call later", "Sorry,in meeting I'll call later"


def decided_with(docs: list[dict], decode_every_time: bool) -> list[tuple]:
    gate, store, out = Gate(), MemoryStore(), []
    for doc in docs:
        if decode_every_time:
            gate.decoded = Decoded(gate.policy.num_perm)  # every row read back, as after a restart
        out += [
            (r.request_id, r.outcome, r.reason, r.similarity, r.similar_recipients, r.cluster_id)
            for r in gate.handle_in_one_log(validate(doc, T), store)
            if isinstance(r, Decision)
        ]
    return out


@pytest.mark.parametrize("before", range(70))
def test_a_sender_held_in_memory_decides_as_one_read_from_its_rows(before):
    rng = random.Random(before)  # `before` unrelated texts, then a template and a variant of it
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) + f" {i}" for i in range(before)]
    texts += [CALL_LATER, CALL_LATER, IN_MEETING, IN_MEETING]
    docs = established() + [send(f"u{i}", at=i, text=text) for i, text in enumerate(texts)]
    assert decided_with(docs, decode_every_time=False) == decided_with(docs, decode_every_time=True)
