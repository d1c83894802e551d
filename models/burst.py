"""Burst pacing: a sender's recent texts as clusters of near-identical sends.

A `SenderState` per (app, sender) holds the sender's profile, risk marks and at most
`max_clusters` `BurstCluster`s, and decides by its rules; what matching, expiry and eviction look
at is in numpy, a row per cluster (`ClusterArrays`). Windows are explicit event-time fields here
(not Faust windowed tables), so expiry is a pure function of the log and survives rebalances and
recovery.

Stored form (`to_rows` / `from_rows`): a small head row (profile, risk, the cluster ids and a
stamp), one row per cluster (~50-300 B) and one row per cluster sketch (512 B: its first text's;
1 KB once free copies have joined: then the union of their sketches follows, `_learn`). A send
rewrites the head and its one cluster, not the sender's whole state (19-25 KB at 32 clusters in
the single row of v1, which is still read). Head and cluster rows are versioned (models/rows.py).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable
from typing import Any, ClassVar
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
import orjson

from .decisions import Outcome, Reason, iso
from .policy import Policy
from .reputation import SIGNALS, Reputation
from .rows import Row, by_field_count
from .similarity import containments, similarities, sizes
from .slots import slot_refusal

DAY_MS = 86_400_000
V2_SUSPICION_MS = 7 * 86_400_000  # a v2 row's suspicion began this long before it ended (the old default)
_TEMPLATE = 1 << 62  # added to a template's last_ts when choosing a cluster to evict: one-offs go first
_CLUSTER_ID = attrgetter("cluster_id")
# A union learns a copy only while it stays within this many times its first text's shingles: a
# spintax's alternatives add a little, and a union of unrelated texts that joined one another
# would contain ever more texts (the app-wide count of 300 ham senders paced 2.15 % of ham unbounded)
LEARN_GROWTH = (
    1.5  # (bench.detection: 1.3 -> 1.5 -> 2.0 spintax recall 95.7, 97.4, 98.6 %; that app 0.17, 0.17, 0.70 %)
)


def recipient_hash(userkey: str, secret: bytes | None = None) -> int:
    """A fixed-size (64-bit) stand-in for a userkey, so cluster rows hold no userkey. With a secret
    the hash is keyed, so it cannot be reversed by hashing every phone number."""
    digest = hashlib.blake2b(userkey.encode(), digest_size=8, key=(secret or b"")[:64]).digest()
    return int.from_bytes(digest, "little")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def pace_interval_ms(policy: Policy, paced: int, factor: float) -> int:
    """The gap after the paced send number `paced` (0-based): 60 s, growing linearly by 60 s
    every `pace_growth_sends` paced sends (60 s, 61.2 s, ... 120 s at the 50th, 180 s at the 100th),
    times `factor` for risky senders."""
    return round(policy.pace_interval_s * 1000 * (1 + paced / policy.pace_growth_sends) * factor)


@dataclass(slots=True)
class BurstCluster(Row):
    cluster_id: str
    window_start: int
    last_ts: int
    next_slot: int = 0
    recipients: list[int] = field(default_factory=list)  # hashes of recipients counted as free
    # recipients in the current window: distinct among the free ones; a paced recipient sent the
    # same text again is paced and counted again (only the free ones are remembered, bounding the row)
    count: int = 0
    paced: int = 0  # paced sends in the current window

    row_version = 1  # its fields but the id, which is in the row's key
    untagged = by_field_count({6: 1})

    def to_list(self) -> list:
        return [
            self.cluster_id,
            self.window_start,
            self.last_ts,
            self.next_slot,
            self.recipients,
            self.count,
            self.paced,
        ]

    def to_bytes(self) -> bytes:
        return self.pack(self.to_list()[1:])


# a verdict's reason for a send within the free allowance: it goes out on its consent (models/gate/burst.py)
BURST_FREE = "burst_free"


# what a decoded state holds besides its arrays (sys.getsizeof over its objects, measured): 960 B
# with no cluster, 384 B a BurstCluster with its strings
STATE_BYTES, CLUSTER_BYTES = 1_000, 400


@dataclass(slots=True)
class BurstVerdict:
    outcome: Outcome  # accepted | delayed | rejected
    reason: Reason | str  # BURST_FREE, burst_paced, burst_limit, junk_similar, expired_before_slot
    detail: str
    cluster_id: str
    similarity: float
    similar_recipients: int
    deliver_at: int | None = None
    retry_after_s: int | None = None


@dataclass(slots=True)
class JunkMatch:
    similarity: float
    reporters: int


@dataclass(slots=True)
class ClusterArrays:
    """Per cluster, in numpy and in cluster order, what matching, expiry and eviction look at, so
    that a send costs no Python loop over a sender's clusters (128 at the app level). The arrays
    have room to grow at both ends: cluster i is at row `start + i`, and evicting the oldest moves
    `start`, no row. The rules that fill them are SenderState's."""

    # uint32 rows of two sketches, side by side so that a text is matched against both in one
    # pass (numpy's cost per call, not per row, is most of it): [0] the cluster's first text's (its
    # representative), [1] the union of its free copies' (SenderState._learn)
    sketches: np.ndarray
    shingles: np.ndarray  # float64 rows of two: the estimated shingles of each (containment divides by them)
    last_ts: np.ndarray  # int64
    rank: np.ndarray  # int64: the eviction order, least first
    start: int = 0
    n: int = 0  # clusters held

    ARRAYS: ClassVar[tuple[str, ...]] = ("sketches", "shingles", "last_ts", "rank")

    @property
    def firsts(self) -> np.ndarray:
        return self.sketches[:, 0]

    @property
    def unions(self) -> np.ndarray:
        return self.sketches[:, 1]

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.ARRAYS)

    @classmethod
    def of(cls, firsts: np.ndarray | None, unions: np.ndarray | None, num_perm: int) -> "ClusterArrays":
        """The arrays of clusters read from rows: `firsts` a row each (None: no cluster), `unions`
        a row each or None (then the first texts: no copy learned yet)."""
        n = 0 if firsts is None else len(firsts)
        length = max(8, 2 * n)
        arrays = cls(
            np.zeros((length, 2, num_perm), dtype=np.uint32),
            np.zeros((length, 2)),
            np.zeros(length, dtype=np.int64),
            np.zeros(length, dtype=np.int64),
            n=n,
        )
        if firsts is not None:
            arrays.sketches[:n, 0] = firsts
            arrays.sketches[:n, 1] = firsts if unions is None else unions
            arrays.shingles[:n, 0] = sizes(firsts)
            arrays.shingles[:n, 1] = sizes(arrays.unions[:n])
        return arrays

    @property
    def live(self) -> slice:
        """The rows of the clusters held."""
        return slice(self.start, self.start + self.n)

    def views(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The first texts' and the unions' sketches of the clusters held (None: no cluster)."""
        if not self.n:
            return None, None
        live = self.sketches[self.live]
        return live[:, 0], live[:, 1]

    def similarity(self, sketch: np.ndarray, shingles: float, measure: str) -> np.ndarray:
        """A text's similarity (its sketch and shingles) to each cluster: by `containment` with the
        cluster's first text or its union, the closer; by Jaccard with its first text."""
        live = self.live
        if measure == "containment":
            both = containments(sketch, shingles, self.sketches[live], self.shingles[live])
            return np.maximum(both[:, 0], both[:, 1])
        return similarities(sketch, self.sketches[live, 0])

    def used_after(self, since: int) -> np.ndarray | None:
        """The indices of the clusters last used after `since`, or None when all were (the common case)."""
        last_ts = self.last_ts[self.live]
        if not self.n or int(np.minimum.reduce(last_ts)) > since:
            return None
        return np.flatnonzero(last_ts > since)

    def least_ranked(self) -> int:
        """The index of the cluster of the least rank (the first such on a tie)."""
        return int(np.argmin(self.rank[self.live]))

    def mark(self, i: int, last_ts: int, rank: int) -> None:
        at = self.start + i
        self.last_ts[at], self.rank[at] = last_ts, rank

    def set_union(self, i: int, union: np.ndarray, shingles: float) -> None:
        at = self.start + i
        self.sketches[at, 1], self.shingles[at, 1] = union, shingles

    def keep(self, kept: np.ndarray) -> None:
        """Keep only the clusters at these indices (in order), from the front."""
        for name in self.ARRAYS:
            array = getattr(self, name)
            array[: len(kept)] = array[self.start + kept]
        self.start, self.n = 0, len(kept)

    def remove(self, i: int) -> None:
        """Remove cluster i, closing the gap from the shorter side."""
        start, n = self.start, self.n
        for name in self.ARRAYS:
            array = getattr(self, name)
            if i < n // 2:
                array[start + 1 : start + i + 1] = array[start : start + i].copy()
            else:
                array[start + i : start + n - 1] = array[start + i + 1 : start + n].copy()
        if i < n // 2:
            self.start += 1
        self.n -= 1

    def append(self, sketch: np.ndarray, shingles: float) -> int:
        """Add a cluster of one text after the last (moving them to the front, or growing, when
        there is no room after it); its index."""
        n = self.n
        if self.start + n == len(self.sketches):
            length = len(self.sketches) if n < len(self.sketches) // 2 else 2 * len(self.sketches)
            for name in self.ARRAYS:
                old = getattr(self, name)
                moved = np.zeros((length, *old.shape[1:]), dtype=old.dtype)
                moved[:n] = old[self.live]
                setattr(self, name, moved)
            self.start = 0
        at = self.start + n
        self.sketches[at] = sketch  # (its first text and its union)
        self.shingles[at] = shingles
        self.n += 1
        return n


@dataclass(slots=True)
class CountTaken:
    """What the last `SenderState.decide` took, given back when the send is refused after all
    (`undo`): its cluster's counts as they were before the send counted, and the union sketch
    before the copy joined it (`_learn`; `union` None: it did not)."""

    at: int  # the cluster's index
    count: int
    paced: int
    next_slot: int
    recipients: list[int]
    union: np.ndarray | None = None
    union_shingles: float = 0.0
    union_row: bytes | None = None  # the cluster's sketch row waiting to be written, if any

    def window_restarted(self) -> None:
        """The cluster's window ended before the send counted: a refusal leaves it new."""
        self.count, self.paced, self.recipients = 0, 0, []


@dataclass(slots=True)
class SenderState(Row):
    registered_ts: int | None = None
    conversing: int = 0  # distinct userkeys that wrote to this sender (counted up to a cap)
    reputation: Reputation = field(default_factory=Reputation)  # models/reputation.py
    seq: int = 0  # cluster ids are per sender: c1, c2, ...
    clusters: list[BurstCluster] = field(default_factory=list)
    sketches: np.ndarray | None = None  # row i is clusters[i]'s representative sketch (its first text)
    # A digest chained over every write of the rows: two head rows with the same stamp come with
    # the same cluster rows, so a head read is enough to know a decoded state is still current.
    stamp: int = 0
    # row i is the union of clusters[i]'s free copies (`_learn`); None: the representatives
    unions: np.ndarray | None = field(default=None, compare=False, repr=False)
    # the app-wide counts of all its sender names (models/gate/burst.py WHOLE_APP), not a sender: no
    # young-sender rule and no reputation (each sender keeps its own); set when read, not stored
    whole_app: bool = field(default=False, compare=False, repr=False)
    _taken: CountTaken | None = field(default=None, compare=False, repr=False)  # by the last decide (`undo`)
    # what changed since the rows were read or written: clusters changed (by id), new (id -> its
    # sketch row), ids removed
    _changed: dict[str, BurstCluster] = field(default_factory=dict, compare=False, repr=False)
    _new: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    _removed: set[str] = field(default_factory=set, compare=False, repr=False)
    # parallel to `clusters`: what matching, expiry and eviction look at (`sketches` and `unions`
    # are views of it), and the cluster ids. Built on first use (`_index`).
    _arrays: ClusterArrays | None = field(default=None, compare=False, repr=False)
    _ids: list[str] = field(default_factory=list, compare=False, repr=False)
    # the ids as the head row writes them, serialized again only once a cluster is new or removed:
    # a head is written on every send, and 128 strings scattered in memory cost ~6 us to serialize
    _ids_json: orjson.Fragment | None = field(default=None, compare=False, repr=False)

    # The head row. v1: [registered_ts, conversing, suspicious_until, seq, clusters, sketches], one
    # row holding everything; v2: [registered_ts, conversing, suspicious_until, seq, stamp, ids],
    # the clusters and sketches in rows of their own; v3: a reputation instead of suspicious_until.
    row_version = 3

    @classmethod
    def untagged(cls, raw: bytes) -> tuple[int, list]:
        text, _, blob = raw.partition(b"\n")  # v1: the sketches as raw uint32 after a newline
        fields = orjson.loads(text)
        if len(fields) == 7:  # v2 and v3 wrote their version first
            return fields[0], fields[1:]
        if len(fields) == 6:  # a v1 row from before the raw sketches: in base64, last in the JSON
            *fields, text = fields
            blob = base64.b64decode(text)
        if len(fields) != 5:
            raise ValueError(f"SenderState head row of {len(fields)} fields from before versions; such rows had 5-7")
        return 1, [*fields, blob]

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        """The v2 head, then the clusters and sketches a v1 row held itself: its first write puts
        them in their own rows (`from_rows`)."""
        registered_ts, conversing, suspicious_until, seq, clusters, sketches = fields
        return [registered_ts, conversing, suspicious_until, seq, 0, [c[0] for c in clusters], clusters, sketches]

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        """A junk suspicion as a reputation: one junk report when it began."""
        registered_ts, conversing, suspicious_until, *rest = fields
        reputation = Reputation()
        if suspicious_until:
            reputation = Reputation(0.5, suspicious_until - V2_SUSPICION_MS, [1] + [0] * (len(SIGNALS) - 1))
        return [registered_ts, conversing, reputation.to_list(), *rest]

    # --- transitions -------------------------------------------------------------------------
    def set_profile(self, registered_ts: int) -> None:
        self.registered_ts = registered_ts

    def record_conversation(self) -> None:
        self.conversing = min(self.conversing + 1, 1 << 30)

    def record_signal(self, signal: str, ts: int, policy: Policy) -> None:
        """A junk report, a delivery result, a paced blast or a new conversation moves the reputation."""
        self.reputation.record(signal, ts, policy)

    def risk(self, ts: int, policy: Policy) -> str | None:
        """Why this sender gets the stricter limits of a young sender at `ts`, or None."""
        if self.registered_ts is None:
            return "it has no sender_profile, so it counts as young"
        age_days = (ts - self.registered_ts) / DAY_MS
        if age_days < policy.young_sender_days:
            return f"it was registered {max(age_days, 0):.0f} days ago (younger than {policy.young_sender_days} days)"
        if self.conversing < policy.min_conversations:
            return f"only {self.conversing} userkey(s) have written to it (fewer than {policy.min_conversations})"
        return None

    def decide(
        self,
        ts: int,
        recipient: int,
        sketch: np.ndarray,
        policy: Policy,
        junk: JunkMatch | None,
        valid_until: int | None = None,
        not_before: int | None = None,
    ) -> BurstVerdict:
        """Place one send in its cluster and say whether it goes now, later or not at all; a
        request whose slot would come after `valid_until` is refused and takes no slot. A send
        that may not go before `not_before` (quiet hours) is paced from then."""
        arrays = self._index(sketch.shape[0])
        self._expire(arrays, ts, policy)
        at, similarity = self._join(arrays, ts, sketch, policy)
        cluster = self.clusters[at]
        count = cluster.count
        self._taken = CountTaken(at, count, cluster.paced, cluster.next_slot, list(cluster.recipients))
        verdict = self._place(cluster, ts, recipient, similarity, policy, junk, valid_until, not_before or ts)
        # a copy that holds all of its cluster (similarity 1.0: a new cluster, or the first text
        # padded) has nothing to teach but padding; Jaccard compares first texts only
        if (
            verdict.reason == BURST_FREE
            and cluster.count > count
            and similarity < 1.0
            and policy.similarity_measure == "containment"
        ):
            self._learn(arrays, at, sketch)
        self._mark(arrays, at)
        return verdict

    def _learn(self, arrays: ClusterArrays, at: int, sketch: np.ndarray) -> None:
        """A free recipient's copy joins its cluster's union sketch (a MinHash of a union is the
        element-wise minimum): the words a spintax varies are all in it after a few copies, so a
        later copy is contained in it. Learned only from the free allowance, so a sketch row is
        rewritten at most that many times. The first text's sketch stays: a padded copy is
        contained in it (or it in the copy) better than in a union of pads."""
        i = arrays.start + at
        union = arrays.unions[i]
        merged = np.minimum(union, sketch)
        shingles = float(sizes(merged))
        if np.array_equal(merged, union) or shingles > LEARN_GROWTH * arrays.shingles[i, 0]:
            return
        cid, taken = self._ids[at], self._taken
        assert taken is not None, "a copy joins the cluster that decide took"
        taken.union, taken.union_shingles, taken.union_row = union.copy(), arrays.shingles[i, 1], self._new.get(cid)
        arrays.set_union(at, merged, shingles)
        self._new[cid] = arrays.firsts[i].astype("<u4").tobytes() + merged.astype("<u4").tobytes()

    def _place(
        self,
        cluster: BurstCluster,
        ts: int,
        recipient: int,
        similarity: float,
        policy: Policy,
        junk: JunkMatch | None,
        valid_until: int | None,
        start: int,
    ) -> BurstVerdict:
        self._changed[cluster.cluster_id] = cluster
        cluster.last_ts = max(cluster.last_ts, ts)
        window_ms = policy.burst_window_s * 1000
        if ts - cluster.window_start >= window_ms and ts >= cluster.next_slot:
            self._blast_over(cluster, ts, policy)
            cluster.window_start, cluster.recipients, cluster.count, cluster.paced = ts, [], 0, 0
            assert self._taken is not None
            self._taken.window_restarted()
        risk = None if self.whole_app else self.risk(ts, policy)
        standing = 1.0 if self.whole_app else self.reputation.effect(ts, policy)
        factor = (policy.risky_interval_factor if (risk or junk) else 1.0) / standing
        similar = round(similarity, 3)
        window_min = policy.burst_window_s // 60

        def verdict(outcome: Outcome, reason: Reason | str, detail: str, **extra: Any) -> BurstVerdict:
            if risk:
                detail += f"; stricter limits apply because {risk}"
            if standing < 1.0:
                detail += (
                    f"; its reputation is {standing:.2f} ({self.reputation.reasons()}), so its free "
                    f"allowance is scaled by {standing:.2f} and its pacing intervals by {1 / standing:.2f}"
                )
            return BurstVerdict(outcome, reason, detail, cluster.cluster_id, similar, cluster.count, **extra)

        if junk is not None and junk.reporters >= policy.junk_reject_reporters:
            return verdict(
                Outcome.REJECTED,
                Reason.JUNK_SIMILAR,
                f"text is {junk.similarity:.2f} similar to a text that {junk.reporters} recipients "
                f"reported as junk; such texts are not delivered",
            )
        who = recipient
        if who in cluster.recipients:
            return verdict(
                Outcome.ACCEPTED,
                BURST_FREE,
                f"recipient already counted for this text in the current {window_min}-minute window",
            )
        allowance = (
            0 if junk else math.floor((policy.risky_free_recipients if risk else policy.free_recipients) * standing)
        )
        if cluster.count < allowance:
            cluster.recipients.append(who)
            cluster.count += 1
            cluster.next_slot = max(cluster.next_slot, start + pace_interval_ms(policy, cluster.paced, factor))
            return verdict(
                Outcome.ACCEPTED,
                BURST_FREE,
                f"{ordinal(cluster.count)} recipient of this text within {window_min} minutes; "
                f"up to {allowance} go out without pacing",
            )
        interval = pace_interval_ms(policy, cluster.paced, factor)
        gap_s = pace_interval_ms(policy, max(cluster.paced - 1, 0), factor) / 1000  # since the previous slot
        slot = max(cluster.next_slot, start)
        wait_ms = slot - ts
        nth = ordinal(cluster.count + 1)
        why = (
            f"text is {junk.similarity:.2f} similar to a text reported as junk ({junk.reporters} reporter(s)), "
            f"so it is paced from its first recipient"
            if junk
            else f"{nth} recipient of a near-identical text (similarity {similar:.2f}) within {window_min} minutes"
        )
        too_far = Reason.JUNK_SIMILAR if junk else Reason.BURST_LIMIT
        refused = slot_refusal(
            why,
            slot,
            start,
            valid_until,
            policy.max_delay_s,
            too_far,
            "its paced slot",
            ", so it is not sent and takes no slot",
        )
        if refused is not None:
            return verdict(
                Outcome.REJECTED,
                refused.reason,
                refused.detail,
                deliver_at=refused.deliver_at,
                retry_after_s=refused.retry_after_s,
            )
        cluster.count += 1
        cluster.paced += 1
        cluster.next_slot = slot + interval
        reason = Reason.JUNK_SIMILAR if junk else Reason.BURST_PACED
        if wait_ms == 0:
            return verdict(
                Outcome.ACCEPTED,
                reason,
                f"{why}; paced to one send per {gap_s:.0f} s and this slot is free now",
                deliver_at=slot,
            )
        return verdict(
            Outcome.DELAYED,
            reason,
            f"{why}; paced to one send per {gap_s:.0f} s; deliver at {iso(slot)}",
            deliver_at=slot,
        )

    def undo(self) -> None:
        """Take back the last `decide`'s count and slot: the send was refused after all (by the
        app-wide count, the recipient's limits or its validity), and a refused send takes no slot."""
        taken, arrays = self._taken, self._arrays
        if taken is not None and arrays is not None:
            cluster = self.clusters[taken.at]
            cluster.count, cluster.paced, cluster.next_slot = taken.count, taken.paced, taken.next_slot
            cluster.recipients = taken.recipients
            if taken.union is not None:  # nor does it join the cluster's sketch
                arrays.set_union(taken.at, taken.union, taken.union_shingles)
                if taken.union_row is None:
                    del self._new[cluster.cluster_id]
                else:
                    self._new[cluster.cluster_id] = taken.union_row
            self._mark(arrays, taken.at)
            self._taken = None

    # --- cluster bookkeeping -----------------------------------------------------------------
    def _blast_over(self, cluster: BurstCluster, ts: int, policy: Policy) -> None:
        """A cluster's window ends (a new one starts, or the cluster expires or is evicted): if it
        was a paced blast, it costs reputation by its size, from now on (never in its own window,
        whose slots are already promised)."""
        if cluster.paced and not self.whole_app:
            self.reputation.record("paced_blast", ts, policy, cluster.paced / max(policy.free_recipients, 1))

    @property
    def nbytes(self) -> int:
        """About the memory the decoded state holds: its arrays, and a few hundred bytes a cluster
        (what bounds the decoded states a gate keeps, models/gate/unit.py)."""
        if self._arrays is not None:
            arrays = self._arrays.nbytes
        else:
            arrays = sum(a.nbytes for a in (self.sketches, self.unions) if a is not None)
        return STATE_BYTES + arrays + CLUSTER_BYTES * len(self.clusters)

    def _index(self, num_perm: int) -> ClusterArrays:
        """The per-cluster arrays, built for a state read from rows (or new) on first use."""
        if self._arrays is not None:
            return self._arrays
        self._arrays = arrays = ClusterArrays.of(self.sketches, self.unions, num_perm)
        self._ids = list(map(_CLUSTER_ID, self.clusters))
        for i in range(len(self.clusters)):
            self._mark(arrays, i)
        self.sketches, self.unions = arrays.views()
        return arrays

    def _mark(self, arrays: ClusterArrays, i: int) -> None:
        """Cluster i's last_ts or count changed: one-off texts are evicted before templates."""
        c = self.clusters[i]
        arrays.mark(i, c.last_ts, c.last_ts + (_TEMPLATE if c.count > 1 else 0))

    def _expire(self, arrays: ClusterArrays, ts: int, policy: Policy) -> None:
        keep = arrays.used_after(ts - policy.cluster_idle_s * 1000)
        if keep is None:
            return
        kept = set(keep.tolist())
        for i, c in enumerate(self.clusters):
            if i not in kept:
                self._blast_over(c, ts, policy)
                self._removed.add(c.cluster_id)
        self.clusters = [self.clusters[i] for i in keep]
        self._ids = [self._ids[i] for i in keep]
        arrays.keep(keep)
        self.sketches, self.unions = arrays.views()

    def _join(self, arrays: ClusterArrays, ts: int, sketch: np.ndarray, policy: Policy) -> tuple[int, float]:
        """The index of the cluster the text joins (a new one if none is similar enough), and its similarity."""
        n = len(self.clusters)
        shingles = float(sizes(sketch))
        if n:
            sims = arrays.similarity(sketch, shingles, policy.similarity_measure)
            best = int(np.argmax(sims))
            if sims[best] >= policy.similarity_threshold:
                return best, float(sims[best])
        if n >= (policy.app_max_clusters if self.whole_app else policy.max_clusters):
            # Evict one-off texts before templates, least recently used first (the first such on a
            # tie), so that a blast cannot be pushed out of memory by interleaving unrelated texts.
            victim = arrays.least_ranked()
            self._removed.add(self.clusters[victim].cluster_id)
            self._blast_over(self.clusters[victim], ts, policy)
            del self.clusters[victim]
            del self._ids[victim]
            arrays.remove(victim)
        self.seq += 1
        cluster = BurstCluster(cluster_id=f"c{self.seq}", window_start=ts, last_ts=ts)
        self._new[cluster.cluster_id] = sketch.astype("<u4").tobytes()
        self.clusters.append(cluster)
        self._ids.append(cluster.cluster_id)
        at = arrays.append(sketch, shingles)
        self._mark(arrays, at)
        self.sketches, self.unions = arrays.views()
        return at, 1.0

    # --- stored form ---------------------------------------------------------------------------
    def to_rows(self) -> tuple[bytes, dict[str, bytes | None], dict[str, bytes | None]]:
        """The head row, and the cluster rows and sketch rows (by cluster id) that changed since
        the state was read (None: delete the row). Marks the state as written."""
        if self._ids_json is None or self._new or self._removed:
            ids = self._ids if self._arrays is not None else list(map(_CLUSTER_ID, self.clusters))
            self._ids_json = orjson.Fragment(orjson.dumps(ids).decode())  # (a str of its own size: see Row.pack)
        clusters: dict[str, bytes | None] = {}
        sketches: dict[str, bytes | None] = {}
        removed = self._removed
        for cid in removed - self._new.keys():  # removed before their rows were ever written: nothing to delete
            clusters[cid] = sketches[cid] = None
        for cid, cluster in self._changed.items():
            if cid not in removed:
                clusters[cid] = cluster.to_bytes()
        for cid, sketch in self._new.items():
            if cid not in removed:
                sketches[cid] = sketch
        digest = hashlib.blake2b(self.stamp.to_bytes(8, "little"), digest_size=8)
        for cid in sorted(clusters):
            digest.update(cid.encode() + b"\0" + (clusters[cid] or b"-") + (sketches.get(cid) or b""))
        self.stamp = int.from_bytes(digest.digest(), "little")
        self._changed, self._new, self._removed = {}, {}, set()
        fields = [self.registered_ts, self.conversing, self.reputation.to_list(), self.seq, self.stamp, self._ids_json]
        head = self.pack(fields)
        return head, clusters, sketches

    @classmethod
    def from_rows(
        cls,
        head: bytes | None,
        cluster_row: Callable[[str], bytes | None],
        sketch_row: Callable[[str], bytes | None],
        num_perm: int,
    ) -> "SenderState":
        """The state from its head row and the rows it names (`cluster_row`, `sketch_row`: by
        cluster id)."""
        if head is None:
            return cls()
        registered_ts, conversing, standing, seq, stamp, ids, *carried = cls.unpack(head)
        reputation = Reputation.from_list(standing)
        if carried:  # a v1 row's clusters and sketches (upcast_v1_v2), whose own rows do not exist yet
            rows, blob = carried
            held = np.frombuffer(blob, dtype="<u4").reshape(-1, num_perm).copy() if blob else None
            state = cls(registered_ts, conversing, reputation, seq, [BurstCluster(*c) for c in rows], held)
            state._changed = {c.cluster_id: c for c in state.clusters}
            state._new = {cid: sketch.tobytes() for cid, sketch in zip(ids, held)} if held is not None else {}
            return state
        clusters, sketches, unions = [], [], []
        unpack = BurstCluster.unpack  # up to 128 rows: looked up once
        for cid in ids:
            raw, sketch = cluster_row(cid), sketch_row(cid)
            if raw is None or sketch is None:
                raise ValueError(f"sender state names cluster {cid!r}, whose rows are missing")
            clusters.append(BurstCluster(cid, *unpack(raw)))
            row = np.frombuffer(sketch, dtype="<u4")
            sketches.append(row[:num_perm])
            unions.append(row[num_perm:] if len(row) > num_perm else row)  # (the union once it learned)
        if not sketches:
            return cls(registered_ts, conversing, reputation, seq, clusters, None, stamp)
        state = cls(registered_ts, conversing, reputation, seq, clusters, np.vstack(sketches).astype(np.uint32), stamp)
        state.unions = np.vstack(unions).astype(np.uint32)
        return state
