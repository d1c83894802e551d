"""The rule pipeline: one event in, the decisions and deliveries it causes out.

`Gate.handle` (gate.py) is a pure function of the event and the rows it reads through a `Store`
(tables.py); the worker gives it Faust tables, unit tests give it a `MemoryStore`. An event reads
and writes rows through its unit of work (unit.py): each row decoded once, each changed row
written once, when the event is decided. Each event type has a handler in the module of its
concept; before any of them, what has come due is released (pending.py) and an event the app
said before gets its first answer (memory.py). A `junk_shared` event touches no app's rows: it
goes to the partition's junk index (signals.py).

A send request goes through `SEND_STEPS` (send.py) in order; the first step that answers ends
it. "Why was this request rejected?": find its reason below (a test checks this table against
`SEND_STEPS`), then read the step.

| step | reasons | module |
|---|---|---|
| repeated_request | (the held request's first decision) | pending |
| contact_list | not_in_contacts | contacts |
| lapsed_conversation | (no consent from a lapsed conversation) | retention |
| help_reply | help_reply | replies |
| opted_out | opt_out_confirmation, opted_out | consent |
| category | no_consent_for_category | consent |
| reply | reply, loop_suspected, expired_before_slot | replies |
| basis | no_conversation (else the basis: conversation, opt_in, unrestricted) | consent |
| quiet_hours | quiet_hours (refused; a held send is placed from the window's opening) | quiet |
| duplicate_text | duplicate_text | recipients |
| recipient_limits | recipient_limit, expired_before_slot | recipients |
| pace | burst_paced, burst_limit, junk_similar, expired_before_slot, quiet_hours (free of pacing: the basis) | burst |
| subject_limit | subject_limit | subjects |
| recipient_slot | recipient_limit, expired_before_slot | recipients |
| count | (a refused send takes no burst slot) | burst |
| count | (what the send took is counted) | recipients |
| count | (a promotional send that goes is counted by subject) | subjects |
| answer | (delivery, grant signal or pending hold) | send |

`pace` decides by models/burst.py's rules; a send free of pacing goes out on its consent basis.
`expired_before_slot`, and the refusals of a slot too far away, are made by one helper
(models/slots.py `slot_refusal`).
"""

from ..decisions import Record
from .burst import WHOLE_APP
from .gate import CHECK_ID, HANDLERS, Gate
from .send import SEND_STEPS
from .tables import (
    CLOCKS,
    CLUSTERS,
    CONTACTS,
    CONVERSATIONS,
    DUE,
    GRANTS,
    JUNK,
    LAPSE_DAYS,
    LAPSES,
    LAPSES_BY_DAY,
    LAST_SENT,
    PENDING,
    PLACES,
    RECIPIENTS,
    SCHEDULES,
    SEEN,
    SEEN_BY_DAY,
    SEEN_DAYS,
    SEEN_LISTS,
    SENDERS,
    SKETCHES,
    SUBJECTS,
    TABLES,
    TEXTS,
    USERKEYS,
    DayLists,
    MemoryStore,
    OverlayStore,
    Store,
    Table,
    due_entries,
    key,
)
from .unit import DECODED_ROWS, DECODED_SENDER_BYTES, Decoded, UnitOfWork

__all__ = [
    "CHECK_ID",
    "CLOCKS",
    "CLUSTERS",
    "CONTACTS",
    "CONVERSATIONS",
    "DECODED_ROWS",
    "DECODED_SENDER_BYTES",
    "DUE",
    "GRANTS",
    "HANDLERS",
    "JUNK",
    "LAPSE_DAYS",
    "LAPSES",
    "LAPSES_BY_DAY",
    "LAST_SENT",
    "PENDING",
    "PLACES",
    "RECIPIENTS",
    "SCHEDULES",
    "SEEN",
    "SEEN_BY_DAY",
    "SEEN_DAYS",
    "SEEN_LISTS",
    "SEND_STEPS",
    "SENDERS",
    "SKETCHES",
    "SUBJECTS",
    "TABLES",
    "TEXTS",
    "USERKEYS",
    "WHOLE_APP",
    "DayLists",
    "Decoded",
    "Gate",
    "MemoryStore",
    "OverlayStore",
    "Record",
    "Store",
    "Table",
    "UnitOfWork",
    "due_entries",
    "key",
]
