"""The kind of a message, and the consent each kind needs (CTIA Messaging Principles, 5.1).

A send says its `category` (else the policy's `default_category`). The kinds are ordered by the
consent they need: a conversational message answers what the user started; an informational one
needs the user to have written or given their number for it; a promotional one needs express
consent to marketing (an opt-in that names it). Consent to a kind covers the kinds below it.

What a consent covers is a small int of one bit per kind (as a Userkey row stores an opt-in's):
a plain int, because the check runs on every send.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .rows import Row


class Category(StrEnum):
    CONVERSATIONAL = "conversational"
    INFORMATIONAL = "informational"
    PROMOTIONAL = "promotional"


CATEGORIES = tuple(c.value for c in Category)
BIT = {c: 1 << i for i, c in enumerate(Category)}
ALL = (1 << len(BIT)) - 1
# the bits any one of which covers a kind: consent to it or to a kind that needs more
COVERING = {c: ALL & ~(BIT[c] - 1) for c in Category}
# what each other basis of a send covers: the user wrote (a conversation, a reply), or the
# platform lifted the conversation rule for the app (its grant); neither is consent to marketing
CONVERSED = GRANTED = BIT[Category.CONVERSATIONAL] | BIT[Category.INFORMATIONAL]


def covered_by(categories: tuple[str, ...] | None) -> int:
    """The bits of an opt-in's `categories` (None: all of them)."""
    return ALL if categories is None else sum(BIT[Category(name)] for name in set(categories))


def covers(covered: int, category: Category) -> bool:
    return bool(covered & COVERING[category])


def names(covered: int) -> list[str]:
    return [c.value for c in Category if covered & BIT[c]]


@dataclass(slots=True)
class LastSent(Row):
    """The kind of the last message that went (or goes) to a userkey: what a STOP answers, under
    Policy.opt_out_scope "category". [category, ts]."""

    category: str = ""
    ts: int = 0

    row_version = 1  # [category, ts] (models/rows.py)

    def to_bytes(self) -> bytes:
        return self.pack([self.category, self.ts])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "LastSent | None":
        return None if raw is None else cls(*cls.unpack(raw))
