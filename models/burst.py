"""Burst pacing: a sender's recent texts as clusters of near-identical sends.

A `SenderState` per (app, sender) holds the sender's profile, risk marks and at most
`max_clusters` `BurstCluster`s. Windows are explicit event-time fields here (not Faust windowed
tables), so expiry is a pure function of the log and survives rebalances and recovery.

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
from typing import Any
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
    # the last decide's cluster (its index) as it was before the send counted (`undo`)
    _before: tuple | None = field(default=None, compare=False, repr=False)
    # what changed since the rows were read or written: clusters changed (by id), new (id -> its
    # sketch row), ids removed
    _changed: dict[str, BurstCluster] = field(default_factory=dict, compare=False, repr=False)
    _new: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    _removed: set[str] = field(default_factory=set, compare=False, repr=False)
    # Per cluster, in numpy and parallel to `clusters`, what matching, expiry and eviction look at,
    # so that a send costs no Python loop over a sender's clusters (128 at the app level). The
    # arrays have room to grow at both ends: cluster i is at `_start + i` (evicting the oldest
    # moves `_start`, no row); `sketches` is a view of `_rows`. Built on first use.
    _rows: np.ndarray | None = field(default=None, compare=False, repr=False)
    _last: np.ndarray | None = field(default=None, compare=False, repr=False)  # int64: last_ts
    _rank: np.ndarray | None = field(default=None, compare=False, repr=False)  # int64: eviction order
    _union: np.ndarray | None = field(default=None, compare=False, repr=False)  # uint32: `unions`
    _size: np.ndarray | None = field(default=None, compare=False, repr=False)  # float64: estimated shingles
    _usize: np.ndarray | None = field(default=None, compare=False, repr=False)  # ... of the unions
    _start: int = field(default=0, compare=False, repr=False)
    _ids: list[str] = field(default_factory=list, compare=False, repr=False)  # cluster ids, in order

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
        self._index(sketch.shape[0])
        self._expire(ts, policy)
        at, similarity = self._join(ts, sketch, policy)
        cluster = self.clusters[at]
        count = cluster.count
        self._before = (at, count, cluster.paced, cluster.next_slot, list(cluster.recipients), None)
        verdict = self._place(cluster, ts, recipient, similarity, policy, junk, valid_until, not_before or ts)
        # a copy that holds all of its cluster (similarity 1.0: a new cluster, or the first text
        # padded) has nothing to teach but padding; Jaccard compares first texts only
        if (
            verdict.reason == BURST_FREE
            and cluster.count > count
            and similarity < 1.0
            and policy.similarity_measure == "containment"
        ):
            self._learn(at, sketch)
        self._mark(at)
        return verdict

    def _learn(self, at: int, sketch: np.ndarray) -> None:
        """A free recipient's copy joins its cluster's union sketch (a MinHash of a union is the
        element-wise minimum): the words a spintax varies are all in it after a few copies, so a
        later copy is contained in it. Learned only from the free allowance, so a sketch row is
        rewritten at most that many times. The first text's sketch stays: a padded copy is
        contained in it (or it in the copy) better than in a union of pads."""
        i = self._start + at
        union = self._union[i]
        merged = np.minimum(union, sketch)
        size = float(sizes(merged))
        if np.array_equal(merged, union) or size > LEARN_GROWTH * self._size[i]:
            return
        cid = self._ids[at]
        self._before = (*self._before[:5], (union.copy(), self._usize[i], self._new.get(cid)))
        union[:] = merged
        self._usize[i] = size
        self._new[cid] = self._rows[i].astype("<u4").tobytes() + merged.astype("<u4").tobytes()

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
            self._before = (*self._before[:1], 0, 0, cluster.next_slot, [], None)
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
        if self._before is not None:
            at, *before, learned = self._before
            cluster = self.clusters[at]
            cluster.count, cluster.paced, cluster.next_slot, cluster.recipients = before
            if learned is not None:  # nor does it join the cluster's sketch
                union, size, written = learned
                self._union[self._start + at], self._usize[self._start + at] = union, size
                if written is None:
                    del self._new[cluster.cluster_id]
                else:
                    self._new[cluster.cluster_id] = written
            self._mark(at)
            self._before = None

    # --- cluster bookkeeping -----------------------------------------------------------------
    def _blast_over(self, cluster: BurstCluster, ts: int, policy: Policy) -> None:
        """A cluster's window ends (a new one starts, or the cluster expires or is evicted): if it
        was a paced blast, it costs reputation by its size, from now on (never in its own window,
        whose slots are already promised)."""
        if cluster.paced and not self.whole_app:
            self.reputation.record("paced_blast", ts, policy, cluster.paced / max(policy.free_recipients, 1))

    def _index(self, num_perm: int) -> None:
        """Build the per-cluster arrays of a state read from rows (or new)."""
        if self._last is not None:
            return
        n = len(self.clusters)
        self._rows = np.zeros((max(8, 2 * n), num_perm), dtype=np.uint32)
        self._last = np.zeros(len(self._rows), dtype=np.int64)
        self._rank = np.zeros(len(self._rows), dtype=np.int64)
        self._union = np.zeros_like(self._rows)
        self._size = np.zeros(len(self._rows), dtype=np.float64)
        self._usize = np.zeros(len(self._rows), dtype=np.float64)
        self._start, self._ids = 0, list(map(_CLUSTER_ID, self.clusters))
        if n:
            self._rows[:n] = self.sketches
            self._union[:n] = self.sketches if self.unions is None else self.unions
            self._size[:n] = sizes(self.sketches)
            self._usize[:n] = sizes(self._union[:n])
        for i in range(n):
            self._mark(i)
        self._view()

    def _mark(self, i: int) -> None:
        """Cluster i's last_ts or count changed."""
        c, at = self.clusters[i], self._start + i
        self._last[at], self._rank[at] = c.last_ts, c.last_ts + (_TEMPLATE if c.count > 1 else 0)

    def _view(self) -> None:
        n = len(self.clusters)
        self.sketches = self._rows[self._start : self._start + n] if n else None
        self.unions = self._union[self._start : self._start + n] if n else None

    def _expire(self, ts: int, policy: Policy) -> None:
        n, start = len(self.clusters), self._start
        idle_ms = policy.cluster_idle_s * 1000
        if not n or ts - int(np.minimum.reduce(self._last[start : start + n])) < idle_ms:  # the common case
            return
        keep = np.flatnonzero(ts - self._last[start : start + n] < idle_ms)
        kept = set(keep.tolist())
        for i, c in enumerate(self.clusters):
            if i not in kept:
                self._blast_over(c, ts, policy)
                self._removed.add(c.cluster_id)
        self.clusters = [self.clusters[i] for i in keep]
        self._ids = [self._ids[i] for i in keep]
        for array in (self._rows, self._union, self._last, self._rank, self._size, self._usize):
            array[: len(keep)] = array[start + keep]
        self._start = 0
        self._view()

    def _join(self, ts: int, sketch: np.ndarray, policy: Policy) -> tuple[int, float]:
        """The index of the cluster the text joins (a new one if none is similar enough), and its similarity."""
        n = len(self.clusters)
        size = float(sizes(sketch))
        if n:
            if policy.similarity_measure == "containment":  # with the first text or the union, the closer
                at = slice(self._start, self._start + n)
                sims = np.maximum(
                    containments(sketch, size, self.sketches, self._size[at]),
                    containments(sketch, size, self.unions, self._usize[at]),
                )
            else:
                sims = similarities(sketch, self.sketches)
            best = int(np.argmax(sims))
            if sims[best] >= policy.similarity_threshold:
                return best, float(sims[best])
        if n >= (policy.app_max_clusters if self.whole_app else policy.max_clusters):
            # Evict one-off texts before templates, least recently used first (the first such on a
            # tie), so that a blast cannot be pushed out of memory by interleaving unrelated texts.
            victim = int(np.argmin(self._rank[self._start : self._start + n]))
            self._removed.add(self.clusters[victim].cluster_id)
            self._blast_over(self.clusters[victim], ts, policy)
            del self.clusters[victim]
            del self._ids[victim]
            start = self._start
            for array in (
                self._rows,
                self._union,
                self._last,
                self._rank,
                self._size,
                self._usize,
            ):  # close the gap from the shorter side
                if victim < n // 2:
                    array[start + 1 : start + victim + 1] = array[start : start + victim].copy()
                else:
                    array[start + victim : start + n - 1] = array[start + victim + 1 : start + n].copy()
            if victim < n // 2:
                self._start += 1
            n -= 1
        if self._start + n == len(self._rows):  # no room after the last: move to the front, or grow
            # (`length`, not `size`: that is the new text's, stored with its cluster below)
            length = len(self._rows) if n < len(self._rows) // 2 else 2 * len(self._rows)
            for name in ("_rows", "_union", "_last", "_rank", "_size", "_usize"):
                old = getattr(self, name)
                moved = np.zeros((length, *old.shape[1:]), dtype=old.dtype)
                moved[:n] = old[self._start : self._start + n]
                setattr(self, name, moved)
            self._start = 0
        self.seq += 1
        cluster = BurstCluster(cluster_id=f"c{self.seq}", window_start=ts, last_ts=ts)
        self._new[cluster.cluster_id] = sketch.astype("<u4").tobytes()
        self.clusters.append(cluster)
        self._ids.append(cluster.cluster_id)
        self._rows[self._start + n] = sketch
        self._union[self._start + n] = sketch
        self._size[self._start + n] = self._usize[self._start + n] = size
        self._mark(n)
        self._view()
        return n, 1.0

    # --- stored form ---------------------------------------------------------------------------
    def to_rows(self) -> tuple[bytes, dict[str, bytes | None], dict[str, bytes | None]]:
        """The head row, and the cluster rows and sketch rows (by cluster id) that changed since
        the state was read (None: delete the row). Marks the state as written."""
        ids = self._ids if self._last is not None else list(map(_CLUSTER_ID, self.clusters))
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
        head = self.pack([self.registered_ts, self.conversing, self.reputation.to_list(), self.seq, self.stamp, ids])
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
