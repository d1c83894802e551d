"""Recipient limits: how often one userkey may be sent to (models/controls.py).

Send steps: `duplicate_text` (the same text to the userkey too often: a job repeating itself),
`recipient_limits` (refused by the userkey's limits alone, before the text takes a burst slot),
`recipient_slot` (the text's own slot is free but the userkey's limits are not: it waits for
theirs) and `count` (what the send took is counted).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import events as ev
from ..controls import RecentTexts, RecipientSends, text_digest
from ..decisions import Decision, Outcome, Reason, Record, duration, iso
from ..slots import slot_refusal
from .context import SendContext
from .tables import RECIPIENTS, TEXTS
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def duplicate_text(c: SendContext) -> list[Record] | None:
    """A runaway job repeating itself: refused before it takes any slot."""
    e, p = c.e, c.policy
    if not p.duplicate_text_limit:
        return None
    c.digest = text_digest(e.text)
    c.recent = c.rows.get(TEXTS, e.app, c.user_id) or RecentTexts()
    times = c.recent.repeats(c.digest, e.ts, p.duplicate_text_window_s)
    if len(times) < p.duplicate_text_limit:
        return None
    # when enough of the repeats have left the window for one more to fit
    retry = math.ceil((times[len(times) - p.duplicate_text_limit] + p.duplicate_text_window_s * 1000 - e.ts) / 1000)
    return [
        c.decide(
            Outcome.REJECTED,
            Reason.DUPLICATE_TEXT,
            f"the same text already went to this userkey {len(times)} times since "
            f"{iso(times[0])}; at most {p.duplicate_text_limit} in "
            f"{p.duplicate_text_window_s // 60} min (policy duplicate_text_limit), so this "
            f"looks like a job repeating itself; retry in {retry} s if it is meant",
            retry_after_s=retry,
        )
    ]


def recipient_limits(c: SendContext) -> list[Record] | None:
    """Refused by the recipient's limits alone: the text takes no burst slot."""
    e, limits = c.e, c.policy.recipient_limits
    if not limits:
        return None
    c.sends = c.rows.get(RECIPIENTS, e.app, c.user_id) or RecipientSends()
    at, window = c.sends.slot(c.not_before or e.ts, limits)
    refused = past_limits(c, at, window)
    return None if refused is None else [refused]


def recipient_slot(c: SendContext) -> list[Record] | None:
    """A send burst pacing lets go (now or later) waits for the recipient's next free slot."""
    decision = c.decision
    if c.sends is None or decision is None or decision.outcome == Outcome.REJECTED:
        return None
    at, window = c.sends.slot(decision.deliver_at or c.e.ts, c.policy.recipient_limits)
    if window is not None:  # the text's own slot is free, the recipient's limits are not
        refused = past_limits(c, at, window)
        c.decision = refused or c.decide(
            Outcome.DELAYED,
            Reason.RECIPIENT_LIMIT,
            f"{limit_text(window)}: deliver at {iso(at)}; {decision.detail}",
            similarity=decision.similarity,
            similar_recipients=decision.similar_recipients,
            cluster_id=decision.cluster_id,
            deliver_at=at,
            retry_after_s=decision.retry_after_s,
        )
    return None


def count(c: SendContext) -> list[Record] | None:
    """A send that goes (now or later) counts against its recipient's limits and recent texts."""
    e, p, decision = c.e, c.policy, c.decision
    if decision is None or decision.outcome == Outcome.REJECTED:
        return None
    if c.sends is not None:
        take_slot(c, decision.deliver_at or e.ts)
    if c.recent is not None:
        c.recent.record(c.digest, e.ts, p.duplicate_text_window_s, p.duplicate_text_limit)
        c.rows.put(TEXTS, c.recent, e.app, c.user_id)
    return None


def take_slot(c: SendContext, at: int) -> None:
    """Count a send going out at `at` against the recipient's limits."""
    e = c.e
    sends = c.sends or c.rows.get(RECIPIENTS, e.app, c.user_id) or RecipientSends()
    sends.record(at, e.ts, c.policy.recipient_limits)
    c.rows.put(RECIPIENTS, sends, e.app, c.user_id)


def forget_slot(gate: Gate, s: ev.Send, deliver_at: int, rows: UnitOfWork) -> None:
    """A held send that will not go out stops counting against its recipient's limits."""
    if not gate.policy.recipient_limits:
        return
    user_id = gate.stored_userkey(s.userkey)
    sends = rows.get(RECIPIENTS, s.app, user_id)
    if sends is not None:
        sends.forget(deliver_at)
        rows.put(RECIPIENTS, sends, s.app, user_id)


def limit_text(window: tuple[int, int]) -> str:
    most, window_s = window
    return f"at most {most} send(s) to this userkey in any {duration(window_s)} (policy recipient_limits)"


def past_limits(c: SendContext, at: int, window: tuple[int, int] | None) -> Decision | None:
    """The refusal of a send whose recipient's limits put it at `at`, or None if it may wait."""
    if window is None:
        return None
    # (a send quiet hours hold waits from the window's opening, as burst pacing measures it)
    refused = slot_refusal(
        limit_text(window), at, c.not_before or c.e.ts, c.valid_until, c.policy.max_delay_s, Reason.RECIPIENT_LIMIT
    )
    return None if refused is None else c.refuse(refused)
