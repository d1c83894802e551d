"""No more than `subject_limit` promotional sends on one subject to one userkey in
`subject_window_s` (models/subjects.py).

Send steps: `subject_limit` (after burst pacing has placed the send in its cluster, the subject;
a refused send takes no slot) and `count` (a promotional send that goes, now or later, counts).
"""

from __future__ import annotations

import math

from ..categories import Category
from ..decisions import Outcome, Reason, Record, duration, iso
from ..subjects import SubjectSends
from .context import SendContext
from .tables import SUBJECTS


def subject_limit(c: SendContext) -> list[Record] | None:
    e, p, decision = c.e, c.policy, c.decision
    if (
        not p.subject_limit
        or c.category != Category.PROMOTIONAL
        or not c.subject
        or decision is None
        or decision.outcome == Outcome.REJECTED
    ):
        return None
    c.subjects = c.rows.get(SUBJECTS, e.app, c.user_id) or SubjectSends()
    at = decision.deliver_at or e.ts
    times = c.subjects.times(c.subject, at, p.subject_window_s)
    if len(times) < p.subject_limit:
        return None
    retry = math.ceil((times[len(times) - p.subject_limit] + p.subject_window_s * 1000 - e.ts) / 1000)
    c.decision = c.decide(
        Outcome.REJECTED,
        Reason.SUBJECT_LIMIT,
        f"{len(times)} promotional message(s) on this subject (near-identical texts, cluster "
        f"{c.subject}) already go to this userkey within {duration(p.subject_window_s)}, the "
        f"first at {iso(times[0])}; at most {p.subject_limit} (policy subject_limit; Florida, "
        f"Oklahoma and Maryland allow 3 in 24 h); retry in {retry} s",
        retry_after_s=retry,
        similarity=decision.similarity,
        similar_recipients=decision.similar_recipients,
        cluster_id=decision.cluster_id,
    )
    return None


def count(c: SendContext) -> list[Record] | None:
    decision, subjects = c.decision, c.subjects
    if subjects is None or decision is None or decision.outcome == Outcome.REJECTED:
        return None
    subjects.record(c.subject, decision.deliver_at or c.e.ts, c.e.ts, c.policy.subject_window_s)
    c.rows.put(SUBJECTS, subjects, c.e.app, c.user_id)
    return None
