"""Replies and the loop guard: a send that answers the user's own recent message.

Send steps: `help_reply` (a HELP is answered once, whatever the user's consent) and `reply` (a
reply is never paced, but is held, then refused, when the user's messages look like another
bot's auto-replies to the app's own: the loop guard).
"""

from __future__ import annotations

from ..decisions import Outcome, Reason, Record
from ..slots import slot_refusal
from . import consent, pending, recipients
from .context import SendContext
from .tables import CONVERSATIONS


def help_reply(c: SendContext) -> list[Record] | None:
    e, p = c.e, c.policy
    c.answered = answered = c.conv.replied(e.reply_to, e.ts, p.reply_window_s * 1000)
    if answered is None or not answered.asks_help:
        return None
    # CTIA 5.1.3: HELP is answered whether or not the user is subscribed
    decision = c.decide(
        Outcome.ACCEPTED,
        Reason.HELP_REPLY,
        f"answers the user's HELP message '{answered.event_id}' from {(e.ts - answered.ts) // 1000} s "
        f"ago; one help reply is allowed even after an opt-out, is never paced and gives no "
        f"consent",
        reply=True,
    )
    answered.answer_help()
    c.rows.put(CONVERSATIONS, c.conv, e.app, e.sender, c.user_id)
    consent.remember_sent(c.gate, e.app, c.user_id, c.category, e.ts, c.rows)
    return [decision, c.gate.delivery(e, decision)]


def reply(c: SendContext) -> list[Record] | None:
    """A reply: never paced, and counted towards the recipient's limits, but held when the
    user's messages look like another bot's auto-replies to the app's own (the loop guard)."""
    e, p, conv = c.e, c.policy, c.conv
    is_reply, c.reply_why = conv.reply_check(e.reply_to, e.ts, p.reply_window_s * 1000)
    if not is_reply:
        return None
    repeats, answered = conv.loop_counts
    deliver_at = e.ts
    # the app answered the repeats before this one (replies are counted from the second message on)
    if repeats > p.loop_repeats and answered >= p.loop_repeats - 1:
        counts = (
            f"the user sent the same text {repeats} times within {p.loop_window_s // 60} min and the app "
            f"replied to {answered} of the repeats"
        )
        if repeats >= p.loop_reject_repeats:
            return [
                c.decide(
                    Outcome.REJECTED,
                    Reason.LOOP_SUSPECTED,
                    f"{counts}: an auto-reply loop; from {p.loop_reject_repeats} repeats on replies to "
                    f"this user are refused until it writes something else",
                    reply=True,
                )
            ]
        deliver_at = e.ts + p.loop_delay_s * 1000
        refused = slot_refusal(
            f"{counts}, so replies wait {p.loop_delay_s} s", deliver_at, e.ts, c.valid_until, slot_name="that slot"
        )
        if refused is not None:
            return [c.refuse(refused, reply=True)]
        decision = c.decide(
            Outcome.DELAYED,
            Reason.LOOP_SUSPECTED,
            f"{counts}: a possible auto-reply loop, so the reply waits {p.loop_delay_s} s "
            f"(loop_delay_s); a different message from the user ends it",
            reply=True,
            deliver_at=deliver_at,
        )
    else:
        decision = c.decide(
            Outcome.ACCEPTED, Reason.REPLY, f"reply: {c.reply_why}; replies are exempt from burst pacing", reply=True
        )
    if conv.loop_answered():
        c.rows.put(CONVERSATIONS, conv, e.app, e.sender, c.user_id)
    if p.recipient_limits:
        recipients.take_slot(c, deliver_at)
    if decision.outcome == Outcome.DELAYED:
        pending.hold(c.gate, e, decision, c.rows)
        return [decision]
    return [decision, c.gate.delivery(e, decision)]
