"""Pending requests: a delayed send is held until its slot, then released (or cancelled).

Send step: `repeated_request` (the same request again while it is held gets its decision again,
no second slot). The handlers of `cancel` and `tick` events are here, and `release_due`, which
`Gate.handle` runs before every event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .. import events as ev
from ..consent import Userkey
from ..decisions import Decision, Outcome, Reason, Record, iso
from ..pending import DUE_CHUNK, MINUTE_MS, DueBucket, PendingRequest, ReleaseSchedule
from . import consent, recipients
from .context import SendContext
from .tables import DUE, PENDING, SCHEDULES, USERKEYS, due_entries, due_parts
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def repeated_request(c: SendContext) -> list[Record] | None:
    held = c.rows.get(PENDING, c.e.app, c.e.request_id)
    if held is None:
        return None
    # The same request again (a producer retry): same decision, no second slot.
    return [Decision.from_dict(held.decision)]


def hold(gate: Gate, e: ev.Send, decision: Decision, rows: UnitOfWork) -> None:
    assert decision.deliver_at is not None, "a delayed decision says when"
    valid_until = gate.valid_until(e)  # resolved now: a later policy change does not move it
    if valid_until is not None and e.valid_for_s is None:
        e = msgspec.structs.replace(e, valid_for_s=(valid_until - e.ts) // 1000)
    held = PendingRequest(e, decision.deliver_at, decision.cluster_id, decision.to_dict())
    rows.put(PENDING, held, e.app, e.request_id)
    put_in_schedule(gate, e.app, e.request_id, decision.deliver_at, rows)


def put_in_schedule(gate: Gate, app: str, request_id: str, deliver_at: int, rows: UnitOfWork) -> None:
    """Put a pending request in its app's release schedule."""
    schedule = rows.get(SCHEDULES, app) or ReleaseSchedule()
    minute = schedule.add(deliver_at)  # adds the minute only if missing
    chunk = schedule.chunk_count(minute) - 1  # the minute's last bucket row takes new entries
    bucket = rows.get(DUE, *due_parts(app, minute, chunk)) or DueBucket()
    if [deliver_at, request_id] in bucket.entries:
        return
    if len(bucket.entries) >= DUE_CHUNK:
        chunk, bucket = schedule.new_chunk(minute), DueBucket()
    bucket.entries.append([deliver_at, request_id])
    rows.put(DUE, bucket, *due_parts(app, minute, chunk))
    schedule.held += 1
    rows.put(SCHEDULES, schedule, app)


def release_due(gate: Gate, app: str, ts: int, rows: UnitOfWork) -> list[Record]:
    schedule = rows.get(SCHEDULES, app) or ReleaseSchedule()
    if not schedule.is_due(ts):
        return []
    due: list[list] = []
    waiting: list[list] = []
    while schedule.minutes and schedule.minutes[0] <= ts // MINUTE_MS:
        minute = schedule.minutes[0]
        for chunk in range(schedule.chunks[0]):
            parts = due_parts(app, minute, chunk)
            bucket = rows.get(DUE, *parts)
            if bucket is None:  # emptied by an earlier release; the minute keeps its numbering
                continue
            now, later = bucket.split(ts)
            if now:
                due.extend(now)
                if later:
                    rows.put(DUE, DueBucket(later), *parts)
                else:
                    rows.delete(DUE, *parts)
            waiting.extend(later)
        if waiting:
            break
        schedule.pop_first()
    if not waiting and schedule.minutes:
        # (from the store: release_due runs first in an event, so no bucket is changed yet)
        waiting = due_entries(rows.store.get, app, schedule, schedule.minutes[0])
    schedule.next_due = min(e[0] for e in waiting) if waiting else None
    out: list[Record] = []
    for deliver_at, request_id in sorted(due):
        held = rows.get(PENDING, app, request_id)
        if held is None:  # cancelled meanwhile
            continue
        rows.delete(PENDING, app, request_id)
        schedule.held = max(0, schedule.held - 1)
        out.extend(release(gate, held, ts, rows))
    rows.put(SCHEDULES, schedule, app)
    return out


def release(gate: Gate, pending: PendingRequest, ts: int, rows: UnitOfWork) -> list[Record]:
    s = pending.send
    valid_until = s.ts + s.valid_for_s * 1000 if s.valid_for_s else None  # as admitted (`hold`)
    if valid_until is not None and ts > valid_until:
        recipients.forget_slot(gate, s, pending.deliver_at, rows)
        # (its slot was before valid_until: event time reached it late, e.g. after an outage)
        return [
            Decision.on(
                s,
                Outcome.CANCELLED,
                Reason.EXPIRED,
                f"the request stopped being valid at {iso(valid_until)} (valid_for_s) while it waited "
                f"for its slot {iso(pending.deliver_at)}; event time reached the slot only at "
                f"{iso(ts)}, so it was not delivered",
                ts,
                deliver_at=pending.deliver_at,
                cluster_id=pending.cluster_id,
            )
        ]
    user_id, category = gate.stored_userkey(s.userkey), gate.category_of(s)
    user = rows.get(USERKEYS, s.app, user_id) or Userkey()
    if user.stops(category):
        recipients.forget_slot(gate, s, pending.deliver_at, rows)
        return [
            Decision.on(
                s,
                Outcome.CANCELLED,
                Reason.OPTED_OUT,
                f"userkey opted out at {iso(user.changed_ts)} ({user.how}) while the request waited "
                f"for its slot; it was not delivered",
                ts,
                cluster_id=pending.cluster_id,
            )
        ]
    decision = Decision.on(
        s,
        Outcome.RELEASED,
        Reason.SLOT_REACHED,
        f"paced slot {iso(pending.deliver_at)} reached; delivered",
        ts,
        deliver_at=pending.deliver_at,
        cluster_id=pending.cluster_id,
    )
    consent.remember_sent(gate, s.app, user_id, category, ts, rows)
    return [decision, gate.delivery(s, decision)]


def cancel(gate: Gate, e: ev.Cancel, rows: UnitOfWork) -> list[Record]:
    held = rows.get(PENDING, e.app, e.request_id)
    if held is None:
        return [
            Decision(
                request_id=e.request_id,
                app=e.app,
                sender="",
                userkey="",
                network="",
                outcome=Outcome.REJECTED,
                reason=Reason.NOT_PENDING,
                detail=f"cancel of request '{e.request_id}': it is not pending (unknown, already released, "
                f"or already cancelled), so nothing was cancelled",
                ts=e.ts,
            )
        ]
    rows.delete(PENDING, e.app, e.request_id)  # its schedule entry is skipped when it comes due
    schedule = rows.get(SCHEDULES, e.app) or ReleaseSchedule()
    schedule.held = max(0, schedule.held - 1)
    rows.put(SCHEDULES, schedule, e.app)
    s = held.send
    recipients.forget_slot(gate, s, held.deliver_at, rows)
    return [
        Decision.on(
            s,
            Outcome.CANCELLED,
            Reason.CANCELLED_BY_APP,
            "the app cancelled this pending request; it will not be delivered",
            e.ts,
        )
    ]


def tick(gate: Gate, e: ev.Tick, rows: UnitOfWork) -> None:
    """A tick only moves event time forward; `handle` has already released what it made due."""
