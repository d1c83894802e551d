"""Contact lists: networks that deliver only to users who put the bot on their contact list
(the policy's `contact_list_networks`).

Send step: `contact_list` (refused where the userkey has not authorized the bot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events as ev
from ..decisions import Outcome, Reason, Record
from .context import SendContext
from .tables import CONTACTS
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .gate import Gate


def contact(gate: Gate, e: ev.Contact, rows: UnitOfWork) -> None:
    user_id = gate.stored_userkey(e.userkey)
    if e.authorized:
        rows.put(CONTACTS, b"1", e.app, user_id, e.network)
    else:
        rows.delete(CONTACTS, e.app, user_id, e.network)


def contact_list(c: SendContext) -> list[Record] | None:
    e = c.e
    if (
        e.network not in c.policy.contact_list_networks
        or c.user.stops(c.category)
        or c.rows.get(CONTACTS, e.app, c.user_id, e.network) is not None
    ):
        return None
    return [
        c.decide(
            Outcome.REJECTED,
            Reason.NOT_IN_CONTACTS,
            f"network '{e.network}' delivers only to users who put the bot on their contact list "
            f"(policy contact_list_networks), and this userkey has not: it has not written on "
            f"{e.network} and no contact event authorizes it; ask the user to add the bot, then "
            f"publish a contact event with authorized: true (or wait for the user to write)",
        )
    ]
