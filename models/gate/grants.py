"""Grants: an app's unrestricted-outbound grant, set by operators and revoked by sendgate when
the app's signals cross the policy's thresholds (models/consent.py AppGrant)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events as ev
from ..consent import AppGrant
from ..decisions import GrantRevocation, Record, duration, revocation_made_at
from .tables import GRANTS
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def app_policy(gate: Gate, e: ev.AppPolicy, rows: UnitOfWork) -> None:
    grant = rows.get(GRANTS, e.app) or AppGrant()
    made_at = revocation_made_at(e.event_id)
    if made_at is not None and grant.since_ts > made_at:
        return  # an operator decided after the revocation was made (or this is a copy of it, decided again)
    grant.set(e.unrestricted, e.ts, e.reason, made_at is not None)
    rows.put(GRANTS, grant, e.app)


def watch(gate: Gate, app: str, signals: tuple[str, ...], ts: int, rows: UnitOfWork) -> list[Record]:
    """Count signals against the app's unrestricted grant (models/consent.py WATCHED); the
    revocation, once, when they cross one of the policy's thresholds."""
    grant = rows.get(GRANTS, app)
    if grant is None or not grant.allows(ts) or grant.revoking:
        return []
    p = gate.policy
    for signal in signals:
        counts = grant.count(signal, ts, p.grant_revoke_window_s * 1000)
    results, lost = counts["results"], counts["not_delivered"]
    junk, refused = counts["junk_reports"], counts["refused_blasts"]
    why = (
        f"{junk} junk reports"
        if junk >= p.grant_revoke_junk_reports
        else f"{refused} blast sends refused"
        if refused >= p.grant_revoke_refused_blasts
        else f"{lost} of {results} delivery results not delivered ({lost / results:.0%})"
        if results >= p.grant_revoke_min_results and lost >= p.grant_revoke_not_delivered_rate * results
        else None
    )
    if why is not None:
        grant.mark_revoking()
    rows.put(GRANTS, grant, app)
    if why is None:
        return []
    return [
        GrantRevocation(
            app,
            f"sendgate revoked the unrestricted-outbound grant: {why} within "
            f"{duration(p.grant_revoke_window_s)} of event time (policy grant_revoke_*)",
            counts,
            ts,
        )
    ]
