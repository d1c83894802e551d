"""The kind of a message, and the consent each kind needs (CTIA Messaging Principles, 5.1).

A send says its `category` (else the policy's `default_category`). The kinds are ordered by the
consent they need: a conversational message answers what the user started; an informational one
needs the user to have written or given their number for it; a promotional one needs express
consent to marketing (an opt-in that names it). Consent to a kind covers the kinds below it.
"""
from __future__ import annotations

from enum import IntFlag, StrEnum


class Category(StrEnum):
    CONVERSATIONAL = "conversational"
    INFORMATIONAL = "informational"
    PROMOTIONAL = "promotional"


CATEGORIES = tuple(c.value for c in Category)
_RANK = {c: i for i, c in enumerate(Category)}


class Covered(IntFlag):
    """The kinds an opt-in names, as stored in a Userkey row (a small int)."""
    CONVERSATIONAL = 1
    INFORMATIONAL = 2
    PROMOTIONAL = 4
    ALL = 7

    @classmethod
    def of(cls, categories: tuple[str, ...] | None) -> "Covered":
        """The flags of an opt-in's `categories` (None: all of them)."""
        if categories is None:
            return cls.ALL
        flags = cls(0)
        for name in categories:
            flags |= cls[name.upper()]
        return flags

    def names(self) -> list[str]:
        return [c.value for c in Category if self & Covered[c.name]]

    def covers(self, category: Category) -> bool:
        """Consent to a kind covers the kinds that need less."""
        return any(_RANK[named] >= _RANK[category] for named in Category if self & Covered[named.name])


# what each other basis of a send covers: the user wrote (a conversation, a reply), or the
# platform lifted the conversation rule for the app (its grant); neither is consent to marketing
CONVERSED = Covered.CONVERSATIONAL | Covered.INFORMATIONAL
GRANTED = Covered.CONVERSATIONAL | Covered.INFORMATIONAL
