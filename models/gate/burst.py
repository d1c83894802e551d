"""Burst pacing: near-identical texts to many recipients (the rules are models/burst.py's).

Send steps: `pace` (the sender's clusters, and the same rules over all of the app's sender
names: the stricter verdict holds) and `count` (a refused send takes no slot in either count).
"""

from __future__ import annotations

import dataclasses

from ..burst import BURST_FREE, JunkMatch, recipient_hash
from ..decisions import Outcome, Record
from . import quiet
from .context import SendContext

# The sender name under which an app's near-identical texts are counted across all its sender
# names (a blast spread over names is one blast to the platform); ids hold no control characters.
WHOLE_APP = "\x00app"


def pace(c: SendContext) -> list[Record] | None:
    e, p, gate, rows = c.e, c.policy, c.gate, c.rows
    sketch = gate.sketcher.sketch(e.text)
    found = rows.store.junk.match(sketch, p.similarity_threshold)
    junk = JunkMatch(found[2], len(found[1].reporters)) if found else None
    recipient = recipient_hash(e.userkey, gate.secret)
    sender = rows.sender(e.app, e.sender)
    v = sender.decide(e.ts, recipient, sketch, p, junk, c.valid_until, c.not_before)
    c.counted = [(e.sender, sender)]
    if v.outcome != Outcome.REJECTED:  # the same rules over all the app's sender names: the stricter holds
        whole = rows.sender(e.app, WHOLE_APP)
        whole.whole_app = True
        w = whole.decide(e.ts, recipient, sketch, p, junk, c.valid_until, c.not_before)
        c.counted.append((WHOLE_APP, whole))
        c.subject = f"app-{w.cluster_id}"  # the text's subject across the app's sender names (subjects)
        if w.outcome == Outcome.REJECTED or (w.deliver_at or e.ts) > (v.deliver_at or e.ts):
            v = dataclasses.replace(
                w, cluster_id=f"app-{w.cluster_id}", detail=f"counted across all of the app's sender names: {w.detail}"
            )
    burst = dict(
        similarity=v.similarity,
        similar_recipients=v.similar_recipients,
        cluster_id=v.cluster_id,
        deliver_at=v.deliver_at,
        retry_after_s=v.retry_after_s,
    )
    if v.outcome == Outcome.ACCEPTED and v.reason == BURST_FREE:  # free of pacing: it goes on its consent
        if c.not_before:  # ... when the recipient's window opens
            c.decision = quiet.held(c, f"{c.because}; {v.detail}", **burst)
        else:
            c.decision = c.decide(Outcome.ACCEPTED, c.basis, f"{c.because}; {v.detail}", **burst)
    else:
        paced = v.detail if v.outcome == Outcome.REJECTED else quiet.note(c) + v.detail
        c.decision = c.decide(v.outcome, v.reason, paced, **burst)
    return None


def count(c: SendContext) -> list[Record] | None:
    refused = c.decision is not None and c.decision.outcome == Outcome.REJECTED
    for name, state in c.counted:
        if refused:
            state.undo()  # a refused send takes no slot in either count
        c.rows.put_sender(c.e.app, name, state)
    return None
