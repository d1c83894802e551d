"""When a send's slot comes too late: the one refusal of burst pacing, recipient limits and the loop guard.

A send that must wait for a slot is refused if the slot comes after the request stops being
valid (`expired_before_slot`: it takes no slot), or, where the wait is bounded by the policy's
`max_delay_s`, if the slot is further away than that (the caller's own reason, with a retry time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .decisions import Reason, duration, iso


@dataclass(frozen=True, slots=True)
class SlotRefusal:
    reason: Reason
    detail: str
    deliver_at: int | None = None  # the slot that came too late (expired_before_slot)
    retry_after_s: int | None = None  # when the slot is within max_delay_s again


def slot_refusal(
    why: str,
    slot: int,
    ts: int,
    valid_until: int | None,
    max_delay_s: int | None = None,
    too_far: Reason | None = None,
    slot_name: str = "its slot",
    tail: str = "",
) -> SlotRefusal | None:
    """The refusal of a send decided at `ts` whose slot is `slot`, or None if it may wait for it;
    `why` says why it waits, `too_far` is the reason when the wait is beyond `max_delay_s`."""
    if valid_until is not None and slot > valid_until:
        return SlotRefusal(
            Reason.EXPIRED_BEFORE_SLOT,
            f"{why}; {slot_name} {iso(slot)} comes after the request stops being valid at "
            f"{iso(valid_until)} (valid_for_s){tail}",
            deliver_at=slot,
        )
    if too_far is not None and max_delay_s is not None and slot - ts > max_delay_s * 1000:
        retry = math.ceil((slot - ts - max_delay_s * 1000) / 1000)
        return SlotRefusal(
            too_far,
            f"{why}; the next free slot {iso(slot)} is more than {duration(max_delay_s)} away; retry in {retry} s",
            retry_after_s=retry,
        )
    return None
