"""A send request's steps, in the order they apply (the table is in the package docstring).

Each step reads the `SendContext` and either answers (the records the send decides: the chain
ends there) or adds what it found and passes (None). From `burst.pace` on, a decision exists and
the later steps refine it, count it, and answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .. import events as ev
from ..decisions import Outcome, Reason, Record
from . import burst, consent, contacts, grants, pending, quiet, recipients, replies, retention, subjects
from .context import SendContext
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def answer(c: SendContext) -> list[Record] | None:
    """The decision, with its delivery, the blast refusal counted against the app's grant, or the
    request held until its slot."""
    decision = c.decision
    assert decision is not None, "burst.pace decides every send that reaches it"
    if decision.outcome == Outcome.ACCEPTED:
        consent.remember_sent(c.gate, c.e.app, c.user_id, c.category, c.e.ts, c.rows)
        return [decision, c.gate.delivery(c.e, decision)]
    if decision.reason in (Reason.BURST_LIMIT, Reason.JUNK_SIMILAR) and decision.outcome == Outcome.REJECTED:
        return [decision, *grants.watch(c.gate, c.e.app, ("refused_blasts",), c.e.ts, c.rows)]
    if decision.outcome == Outcome.DELAYED:
        pending.hold(c.gate, c.e, decision, c.rows)
    return [decision]


SEND_STEPS: tuple[Callable[[SendContext], list[Record] | None], ...] = (
    pending.repeated_request,
    contacts.contact_list,
    retention.lapsed_conversation,
    replies.help_reply,
    consent.opted_out,
    consent.category,
    replies.reply,
    consent.basis,
    quiet.quiet_hours,
    recipients.duplicate_text,
    recipients.recipient_limits,
    burst.pace,
    subjects.subject_limit,
    recipients.recipient_slot,
    burst.count,
    recipients.count,
    subjects.count,
    answer,
)


def send(gate: Gate, e: ev.Send, rows: UnitOfWork) -> list[Record]:
    c = SendContext.of(gate, e, rows)
    for step in SEND_STEPS:
        out = step(c)
        if out is not None:
            return out
    raise AssertionError("the last step answers every send")
