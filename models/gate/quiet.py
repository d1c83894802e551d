"""Quiet hours: a send of a kind the policy holds (promotional by default) reaches its recipient
only inside the recipient's window, in its local time (models/quiet_hours.py).

Send step: `quiet_hours`, after the consent a send goes on and before any slot: a send outside
the window waits for its opening, and burst pacing and the recipient's limits place it from
there (so a night's blast is paced from the opening, not released at once); a send whose
validity ends first is refused. A reply is never held: the user wrote at that hour.
Handler: `recipient_profile`, where the platform says a userkey is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..decisions import Decision, Outcome, Reason, Record, iso
from ..quiet_hours import Place, RecipientPlace, place_of_number
from .context import SendContext
from .tables import PLACES
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def recipient_profile(gate: Gate, e: ev.RecipientProfile, rows: UnitOfWork) -> None:
    """What the platform said last replaces what it said before (the app's log orders them)."""
    rows.put(PLACES, RecipientPlace(e.timezone, e.region, e.ts), e.app, gate.stored_userkey(e.userkey))


def place(c: SendContext) -> Place | None:
    """Where the recipient is: as the platform said (recipient_profile), else as its number says."""
    said = c.rows.get(PLACES, c.e.app, c.user_id)
    return said.place() if said is not None else place_of_number(c.e.userkey)


def quiet_hours(c: SendContext) -> list[Record] | None:
    e = c.e
    if c.category not in c.policy.quiet_hours_categories:
        return None
    opening = c.gate.quiet_hours.opening(e.ts, place(c))
    if opening is None or opening.at == e.ts:
        return None
    if opening.at is None:
        return [
            c.decide(
                Outcome.REJECTED,
                Reason.QUIET_HOURS,
                f"{opening.describe()}: the window is never open in all of the recipient's zones at once, "
                f"so a {c.category} message cannot reach it",
            )
        ]
    if c.valid_until is not None and opening.at > c.valid_until:
        return [
            c.decide(
                Outcome.REJECTED,
                Reason.QUIET_HOURS,
                f"{opening.describe()}: a {c.category} message may reach it from {iso(opening.at)}, after "
                f"the request stops being valid at {iso(c.valid_until)} (valid_for_s)",
                deliver_at=opening.at,
                retry_after_s=math.ceil((opening.at - e.ts) / 1000),
            )
        ]
    c.not_before, c.opening = opening.at, opening
    return None


def note(c: SendContext) -> str:
    """What quiet hours say of a send paced from its recipient's window (the start of a detail)."""
    if c.opening is None or c.not_before is None:
        return ""
    return f"{c.opening.describe()}: it may reach the recipient from {iso(c.not_before)}; "


def held(c: SendContext, detail: str, **burst: Any) -> Decision:
    """A send free of pacing, held until its recipient's window opens."""
    assert c.not_before is not None, "only a send quiet hours hold"
    return c.decide(Outcome.DELAYED, Reason.QUIET_HOURS, note(c) + detail, **{**burst, "deliver_at": c.not_before})
