"""Consent: what an inbound or a consent event changes, and the consent a send goes on.

Send steps: `opted_out` (an opted-out userkey gets nothing but the one confirmation of its
opt-out), `category` (the consent held must cover the send's kind of message) and `basis` (a
send that is no reply needs a conversation, an opt-in or the app's unrestricted grant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events as ev
from ..categories import ALL, CONVERSED, COVERING, GRANTED, Category, LastSent, covered_by, covers, names
from ..consent import Conversation, Userkey
from ..controls import inbound_digest
from ..decisions import ConsentRecord, Outcome, Reason, Record, iso
from ..retention import DAY_MS, lapsed
from ..wording import HELP, OPT_IN, OPT_OUT
from . import retention
from .context import SendContext
from .tables import CONTACTS, CONVERSATIONS, LAST_SENT, USERKEYS
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def inbound(gate: Gate, e: ev.Inbound, rows: UnitOfWork) -> list[Record]:
    said = gate.wording.classify(e.text)  # models/wording.py: opt-out > opt-in > help > none
    user_id = gate.stored_userkey(e.userkey)
    conv = rows.get(CONVERSATIONS, e.app, e.sender, user_id) or Conversation()
    horizon = gate.horizon_ms
    if lapsed(conv.last_ts, e.ts, horizon):
        conv = Conversation()  # a lapsed conversation starts again
    day = conv.last_ts // DAY_MS if conv.last_ts else None
    asks_help = said.kind == HELP  # answered always, but no consent
    # HELP and STOP are no conversation a sender may count towards being an established one
    if not conv.exists and said.kind not in (HELP, OPT_OUT):
        sender = rows.sender(e.app, e.sender)
        sender.record_conversation()
        sender.record_signal("conversation", e.ts, gate.policy)
        rows.put_sender(e.app, e.sender, sender)
    conv.record_text(inbound_digest(e.text), e.ts, gate.policy.loop_window_s * 1000)
    if e.network in gate.policy.contact_list_networks:  # the platform accepted the user writing first
        rows.put(CONTACTS, b"1", e.app, user_id, e.network)
    conv.record_inbound(e.event_id, e.ts, gate.policy.reply_window_s * 1000, asks_help)
    rows.put(CONVERSATIONS, conv, e.app, e.sender, user_id)
    if horizon and conv.last_ts // DAY_MS != day:
        retention.index_lapse(e.app, e.sender, user_id, conv.last_ts // DAY_MS, horizon, rows)

    def audit(kind: str, categories: int | None = None) -> ConsentRecord:
        return ConsentRecord(
            e.app,
            user_id,
            kind,
            said.rule,
            "inbound",
            e.event_id,
            e.sender,
            said.normalized,
            said.matched,
            e.ts,
            categories=None if categories is None else names(categories),
        )

    if said.kind in (OPT_OUT, OPT_IN):
        user = rows.get(USERKEYS, e.app, user_id) or Userkey()
        how = f"inbound '{said.matched}' to sender '{e.sender}' (rule {said.rule})"
        if said.kind == OPT_OUT:
            stopped, answered = stopped_by(gate, said.matched, e.app, user_id, rows)
            user.opt_out(e.ts, how + answered, e.event_id, stopped)
        else:
            user.opt_in(e.ts, how)
        rows.put(USERKEYS, user, e.app, user_id)
        return [audit(said.kind, user.stopped if said.kind == OPT_OUT else user.covered)]
    return [audit("ambiguous")] if said.ambiguous else []


def stopped_by(gate: Gate, matched: str, app: str, user_id: str, rows: UnitOfWork) -> tuple[int, str]:
    """What an opt-out inbound stops (Policy.opt_out_scope), and the message it answered in words."""
    last = rows.get(LAST_SENT, app, user_id) if gate.policy.opt_out_scope == "category" else None
    if last is None or matched == "stopall":  # "stop all", or no message known to answer: everything
        return ALL, ""
    return COVERING[Category(last.category)], f", answering a {last.category} message of {iso(last.ts)}"


def remember_sent(gate: Gate, app: str, user_id: str, category: Category, ts: int, rows: UnitOfWork) -> None:
    """The kind of a message that goes out to the userkey now (accepted, or released), what a STOP
    answers under opt_out_scope "category" (a held one the user has not seen yet)."""
    if gate.policy.opt_out_scope == "category":
        rows.put(LAST_SENT, LastSent(category.value, ts), app, user_id)


def opt_change(gate: Gate, e: ev.OptIn | ev.OptOut, rows: UnitOfWork) -> list[Record]:
    user_id = gate.stored_userkey(e.userkey)
    user = rows.get(USERKEYS, e.app, user_id) or Userkey()
    kind = ev.event_type(e)
    how = f"{kind} event" + (f" ({e.source})" if e.source else "")
    categories, evidence = None, None
    if isinstance(e, ev.OptIn):
        covered = covered_by(e.categories)
        user.opt_in(e.ts, how, covered)
        categories = names(covered)
        evidence = {name: value for name in EVIDENCE if (value := getattr(e, name))} or None
    else:
        user.opt_out(e.ts, how)
        categories = names(user.stopped)
    rows.put(USERKEYS, user, e.app, user_id)
    return [
        ConsentRecord(
            app=e.app,
            userkey=user_id,
            kind=kind,
            rule=f"{kind}_event",
            source=how,
            source_event_id=e.event_id,
            sender="",
            text="",
            matched="",
            ts=e.ts,
            categories=categories,
            evidence=evidence,
        )
    ]


EVIDENCE = ("method", "consent_text", "consent_version", "location")  # an opt_in event's, for the audit trail


def opted_out(c: SendContext) -> list[Record] | None:
    """Nothing goes to an opted-out userkey but the one confirmation of its opt-out."""
    e, p, user = c.e, c.policy, c.user
    if not user.stops(c.category):
        return None
    # only a send that says it answers the opt-out may confirm it: the gate cannot read a
    # text's intent, so it does not infer it from timing (an implicit reply)
    confirms, why_not = user.confirmation_check(
        e.reply_to, c.answered is not None, e.ts, p.opt_out_confirmation_s * 1000
    )
    if confirms:
        user.confirm()
        c.rows.put(USERKEYS, user, e.app, c.user_id)
        decision = c.decide(
            Outcome.ACCEPTED,
            Reason.OPT_OUT_CONFIRMATION,
            f"the one confirmation allowed after the opt-out at {iso(user.changed_ts)} "
            f"({user.how}), within {p.opt_out_confirmation_s} s (FCC 47 CFR 64.1200(a)(12)); "
            f"it must carry no marketing, and nothing may follow it",
            reply=True,
        )
        return [decision, c.gate.delivery(e, decision)]
    stopped = (
        "nothing may be sent to it"
        if user.stopped == ALL
        else f"no {' or '.join(names(user.stopped))} message may be sent to it (policy opt_out_scope: category)"
    )
    return [
        c.decide(
            Outcome.REJECTED,
            Reason.OPTED_OUT,
            f"userkey opted out at {iso(user.changed_ts)} ({user.how}); {stopped} until it opts in "
            f"again (opt_in event or a keyword such as START){why_not}",
        )
    ]


# the consent each kind of message needs, in words (models/categories.py)
NEEDS = {
    Category.INFORMATIONAL: "the user to have written to the sender, an opt-in, or the app's grant",
    Category.PROMOTIONAL: "express consent to marketing: an opt-in that names promotional messages "
    "(an opt_in event with categories including promotional, or a keyword such as START)",
}


def category(c: SendContext) -> list[Record] | None:
    """A send's kind must be covered by the consent it goes on: a promotional one needs an opt-in
    that names it; the user writing, or the app's grant, covers informational ones at most. A
    send with no consent at all is left to `basis` (or is a reply)."""
    e, user, conv = c.e, c.user, c.conv
    kind = c.category
    if kind is Category.CONVERSATIONAL or (kind is Category.INFORMATIONAL and conv.exists):  # the common case
        return None
    covered, held = 0, []
    if conv.exists:
        covered |= CONVERSED
        held.append(f"has written to sender '{e.sender}', which covers {' and '.join(names(CONVERSED))} messages")
    if user.opted_in:
        covered |= user.covered
        held.append(f"opted in to {', '.join(names(user.covered))} messages at {iso(user.changed_ts)} ({user.how})")
    if covers(covered, kind):
        return None
    if c.grant().allows(e.ts):
        covered |= GRANTED
        held.append(
            f"the app holds an unrestricted-outbound grant, which covers {' and '.join(names(GRANTED))} messages"
        )
        if covers(covered, kind):
            return None
    if not held and kind != Category.PROMOTIONAL:
        return None
    has = "; the userkey " + "; ".join(held) if held else "; the userkey has given no consent"
    return [
        c.decide(
            Outcome.REJECTED,
            Reason.NO_CONSENT_FOR_CATEGORY,
            f"a {kind} message needs {NEEDS[kind]}{has}"
            + (f" (the send's category: {e.category})" if e.category else f" (the policy's default_category: {kind})"),
        )
    ]


def basis(c: SendContext) -> list[Record] | None:
    """A send that is no reply goes on a conversation with the sender, an opt-in to the app, or
    the app's unrestricted-outbound grant (models/consent.py), in that order."""
    e, user, conv = c.e, c.user, c.conv
    if conv.exists and c.category != Category.PROMOTIONAL:  # (a promotion goes on its opt-in: `category`)
        c.basis = Reason.CONVERSATION
        c.because = f"userkey has written to sender '{e.sender}' (first at {iso(conv.first_ts)})"
    elif user.opted_in:
        c.basis, c.because = Reason.OPT_IN, f"userkey opted in at {iso(user.changed_ts)} ({user.how})"
    elif (grant := c.grant()).allows(e.ts):
        c.basis, c.because = Reason.UNRESTRICTED, "the app holds an unrestricted-outbound grant"
    else:
        note = f" ({c.reply_why})" if c.reply_why else ""
        if grant.revoked_by_sendgate:
            note += (
                f"; the app lost its unrestricted-outbound grant at {iso(grant.since_ts)}: {grant.reason}; "
                f"an operator's app_policy event restores it"
            )
        return [
            c.decide(
                Outcome.REJECTED,
                Reason.NO_CONVERSATION,
                f"userkey has not written to sender '{e.sender}' and has not opted in to app "
                f"'{e.app}'{note}{c.lapse_note}; the user must message this sender first, or opt in "
                f"(opt_in event or a keyword such as START)",
            )
        ]
    return None
