"""Platform signals: what the platform said about a sender (its profile, junk reports, delivery
results), counted in the sender's reputation (models/reputation.py) and against the app's grant.
A junk report reaches the junk index through the log: its `JunkShare` comes back to every
partition as a `junk_shared` event (`Gate.handle` applies it before any app's rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events as ev
from ..burst import recipient_hash
from ..decisions import JunkShare, Record
from ..junk import JunkReport
from . import grants
from .tables import Store
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def sender_profile(gate: Gate, e: ev.SenderProfile, rows: UnitOfWork) -> None:
    sender = rows.sender(e.app, e.sender)
    sender.set_profile(e.registered_ts)
    rows.put_sender(e.app, e.sender, sender)


def junk_report(gate: Gate, e: ev.JunkReport, rows: UnitOfWork) -> list[Record]:
    """The reported text joins the junk index of every partition through the log (`JunkShare`),
    not here: a send on another partition must see it where its own log shows it."""
    p = gate.policy
    share = JunkShare(e.event_id, e.app, recipient_hash(f"{e.app}\x1f{e.userkey}", gate.secret), e.text, e.ts)
    sender = rows.sender(e.app, e.sender)
    sender.record_signal("junk_report", e.ts, p)
    rows.put_sender(e.app, e.sender, sender)
    return [share, *grants.watch(gate, e.app, ("junk_reports",), e.ts, rows)]


def junk_shared(gate: Gate, e: ev.JunkShared, store: Store) -> None:
    store.report_junk(
        JunkReport(f"{e.app}\x1f{e.event_id}", gate.sketcher.sketch(e.text), e.reporter, e.ts), gate.policy
    )


def delivery_status(gate: Gate, e: ev.DeliveryStatus, rows: UnitOfWork) -> list[Record]:
    sender = rows.sender(e.app, e.sender)
    sender.record_signal(e.status, e.ts, gate.policy)
    rows.put_sender(e.app, e.sender, sender)
    signals = ("results", "not_delivered") if e.status == "not_delivered" else ("results",)
    return grants.watch(gate, e.app, signals, e.ts, rows)
