"""What the steps of one send request share: the request, its rows, and what earlier steps found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..burst import SenderState
from ..categories import Category
from ..consent import AppGrant, Conversation, RecentInbound, Userkey
from ..controls import RecentTexts, RecipientSends
from ..decisions import Decision, Outcome, Reason
from ..policy import Policy
from ..quiet_hours import Opening
from ..slots import SlotRefusal
from ..subjects import SubjectSends
from .tables import CONVERSATIONS, GRANTS, USERKEYS
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


@dataclass(slots=True)
class SendContext:
    gate: Gate
    rows: UnitOfWork
    e: ev.Send
    policy: Policy
    user_id: str  # the userkey as tables key it (Gate.stored_userkey)
    user: Userkey
    conv: Conversation  # with this sender; a fresh one once it lapsed (retention)
    valid_until: int | None  # when the request stops being worth sending (Gate.valid_until)
    category: Category  # the send's kind, or the policy's default (models/categories.py)
    lapse_note: str = ""  # says that the conversation lapsed, for a refusal (retention)
    answered: RecentInbound | None = None  # the inbound the send answers, if it does (replies)
    reply_why: str = ""  # why the send is, or is not, a reply (replies)
    basis: Reason | str = ""  # the consent a send that is no reply goes on: conversation | opt_in | unrestricted
    because: str = ""  # ... in words
    recent: RecentTexts | None = None  # the texts sent to the userkey lately (with duplicate_text_limit)
    digest: int = 0  # ... and this text's digest among them
    sends: RecipientSends | None = None  # the userkey's send slots (with recipient_limits)
    counted: list[tuple[str, SenderState]] = field(default_factory=list)  # the burst counts the send took
    decision: Decision | None = None  # once burst pacing has decided
    not_before: int | None = None  # the recipient's quiet hours hold the send until then (quiet)
    opening: Opening | None = None  # ... the window that does, in words
    subject: str = ""  # the app-wide cluster of near-identical texts the send joined (burst.pace)
    subjects: SubjectSends | None = None  # the userkey's promotional sends by subject (with subject_limit)

    @classmethod
    def of(cls, gate: Gate, e: ev.Send, rows: UnitOfWork) -> SendContext:
        user_id = gate.stored_userkey(e.userkey)
        return cls(
            gate,
            rows,
            e,
            gate.policy,
            user_id,
            rows.get(USERKEYS, e.app, user_id) or Userkey(),
            rows.get(CONVERSATIONS, e.app, e.sender, user_id) or Conversation(),
            gate.valid_until(e),
            gate.category_of(e),
        )

    def grant(self) -> AppGrant:
        """The app's unrestricted-outbound grant (consent.category and basis)."""
        return self.rows.get(GRANTS, self.e.app) or AppGrant()

    def decide(self, outcome: Outcome, reason: Reason | str, detail: str, **extra: Any) -> Decision:
        return Decision.on(self.e, outcome, reason, detail, self.e.ts, **extra)

    def refuse(self, refusal: SlotRefusal, **extra: Any) -> Decision:
        return self.decide(
            Outcome.REJECTED,
            refusal.reason,
            refusal.detail,
            deliver_at=refusal.deliver_at,
            retry_after_s=refusal.retry_after_s,
            **extra,
        )
