"""What the app said before (models/memory.py): a retried request gets its first answer again,
and a repeated event changes nothing, for `request_memory_s`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events as ev
from ..decisions import Decision, Outcome, Reason, Record, iso
from ..memory import EVENT, REQUEST, AnsweredRequest, SeenEvent, said_digest
from ..retention import DAY_MS
from . import retention
from .tables import SEEN, SEEN_BY_DAY
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


Said = tuple[str, str, str]  # (kind, id, digest of what the event says): `memory_key`


def said_before(gate: Gate, e: ev.Event, said: Said | None, at: int, rows: UnitOfWork) -> list[Record] | None:
    """The answer to an event the app sent within request_memory_s: a send's first decision
    again (or a refusal of its id reused for another request), nothing for a repeated inbound
    or consent event; None for an event not seen within the memory."""
    if said is None:
        return None
    kind, id_, digest = said
    raw = rows.get(SEEN, e.app, kind, id_)
    if raw is None:
        return None
    if not isinstance(e, ev.Send):  # an inbound or consent event (EVENT)
        seen = SeenEvent.from_bytes(raw)
        # the same id with other content is another event (an id clash, or one made to suppress it)
        return [] if at - seen.ts <= gate.memory_ms and seen.digest == digest else None
    answered = AnsweredRequest.from_bytes(raw)
    if at - answered.ts > gate.memory_ms:
        return None
    if answered.digest == digest:
        return [answered.again(e.request_id, e.app, e.sender, e.userkey, e.network)]
    return [
        Decision.on(
            e,
            Outcome.REJECTED,
            Reason.REQUEST_ID_REUSED,
            f"request_id '{e.request_id}' was answered at {iso(answered.ts)} ({answered.outcome}/"
            f"{answered.reason}) for another request (another sender, userkey, network, text or "
            f"reply_to); a retry repeats its request exactly, a new request needs a new request_id "
            f"(ids are remembered for request_memory_s = {gate.policy.request_memory_s} s)",
            at,
        )
    ]


def remember(gate: Gate, e: ev.Event, said: Said | None, decided: list[Record], at: int, rows: UnitOfWork) -> None:
    if said is None:
        return
    kind, id_, digest = said
    if isinstance(e, ev.Send):  # (REQUEST)
        first = next(r for r in decided if isinstance(r, Decision) and r.request_id == e.request_id)
        row = AnsweredRequest.of(digest, first).to_bytes()
    else:
        row = SeenEvent(digest, at).to_bytes()
    rows.put(SEEN, row, e.app, kind, id_)
    retention.list_by_day(SEEN_BY_DAY, e.app, (kind, id_), at // DAY_MS, gate.memory_ms, rows)


def memory_key(gate: Gate, e: ev.Event) -> Said | None:
    """What the memory keeps of an event (once per event: `Gate.handle`); None for one it does not keep."""
    if not gate.memory_ms:
        return None
    if isinstance(e, ev.Send):
        category = () if e.category is None else (e.category,)  # (digests of sends without one are unchanged)
        return (
            REQUEST,
            e.request_id,
            said_digest(e.sender, gate.stored_userkey(e.userkey), e.network, e.text, e.reply_to or "", *category),
        )
    if isinstance(e, ev.Inbound):
        return EVENT, e.event_id, said_digest("inbound", e.sender, gate.stored_userkey(e.userkey), e.network, e.text)
    if isinstance(e, ev.ConsentChange):
        return EVENT, e.event_id, said_digest(ev.event_type(e), gate.stored_userkey(e.userkey), e.source)
    return None


def forget_seen(gate: Gate, app: str, ts: int, rows: UnitOfWork) -> int:
    """Remove one bucket's remembered requests and events; returns when the next sweep is due."""

    def forget(kind: str, id_: str) -> None:
        rows.delete(SEEN, app, kind, id_)

    return retention.sweep_by_day(SEEN_BY_DAY, app, ts, gate.memory_ms, rows, forget)
