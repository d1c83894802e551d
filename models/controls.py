"""Request controls: how often one userkey may be messaged, and what an auto-reply loop looks like.

`RecipientSends` is one row per (app, userkey) when the policy sets `recipient_limits`: the times
the recent sends to it went (or, delayed, will go) out. It keeps only what a window can still
need: the times within the longest window, the past ones at most 4 x the largest count (a few
hundred bytes), the delayed ones all (at most max_delay_s / window x count).
`RecentTexts` is one row per (app, userkey): the digests of the texts sent to it lately, so that
the same text sent again and again (a runaway job) is refused beyond `duplicate_text_limit`.
The loop guard's state is part of the `Conversation` row (models/consent.py); `inbound_digest`
is what it compares.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

from .reading import as_seen
from .rows import Row, version_first
from .similarity import normalize

KEPT_PER_COUNT = 4  # past times kept: 4 x the largest count (more only when replies exceed the limits)


def _digest(text: str) -> int:
    # 32 bits: it only tells one user's recent messages apart
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def inbound_digest(text: str) -> int:
    """What two inbound messages share when they are the same text as a reader sees it, up to
    spacing, punctuation, numbers, links and addresses (a bot's counter or timestamp does not make
    a loop's messages differ)."""
    return _digest(normalize(text))


def text_digest(text: str) -> int:
    """What two sends share when they are the same text as a reader sees it (models/reading.py)
    up to spacing; numbers and links count: a new code or link is a new message."""
    return _digest(" ".join(as_seen(text).split()))


@dataclass(slots=True)
class RecentTexts(Row):
    """The texts recently sent to one (app, userkey): [digest, ts] pairs, oldest first, only those
    within `duplicate_text_window_s`, at most KEPT_PER_COUNT x `duplicate_text_limit` of them (a
    few hundred bytes), so that a runaway job repeating one text is seen."""

    sent: list[list[int]] = field(default_factory=list)

    row_version = 1  # [sent] (models/rows.py)

    def repeats(self, digest: int, now: int, window_s: int) -> list[int]:
        """When the text went to this userkey within the window before `now`, oldest first."""
        since = now - window_s * 1000
        return [ts for d, ts in self.sent if d == digest and ts > since]

    def record(self, digest: int, now: int, window_s: int, limit: int) -> None:
        since = now - window_s * 1000
        self.sent = [entry for entry in self.sent if entry[1] > since][-(KEPT_PER_COUNT * limit - 1) :]
        self.sent.append([digest, now])

    def to_bytes(self) -> bytes:
        return self.pack([self.sent])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "RecentTexts":
        return cls() if raw is None else cls(*cls.unpack(raw))


@dataclass(slots=True)
class RecipientSends(Row):
    times: list[int] = field(default_factory=list)  # epoch ms, sorted

    row_version = 1  # [times] (models/rows.py)
    untagged = version_first

    def slot(self, base: int, limits: tuple[tuple[int, int], ...]) -> tuple[int, tuple[int, int] | None]:
        """The earliest time from `base` at which one more send keeps every window within its
        count (delayed sends are in `times` at their slots, so a send may go between them), and
        the window that held it longest (None: `base` is free)."""
        binding = self._binding(base, limits)
        if binding is None:
            return base, None
        # the last time plus the longest window is always free, so the search ends there at the latest
        for t in sorted({t + w * 1000 for t in self.times for _, w in limits if t + w * 1000 > base}):
            held = self._binding(t, limits)
            if held is None:
                return t, binding
            binding = held  # the window that holds the send longest is the one to name
        raise AssertionError("unreachable: the last send plus the longest window is free")

    def _binding(self, at: int, limits: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
        """The first window that one more send at `at` would overfill: count + 1 sends within it."""
        times = self.times
        pos = bisect.bisect_right(times, at)
        merged = times[:pos] + [at] + times[pos:]
        for count, window_s in limits:
            window = window_s * 1000
            for j in range(max(0, pos - count), pos + 1):
                if j + count < len(merged) and merged[j + count] - merged[j] < window:
                    return count, window_s
        return None

    def record(self, at: int, now: int, limits: tuple[tuple[int, int], ...]) -> None:
        """A send goes out at `at` (decided at `now`). Forgets what no window from `now` on can
        see, and bounds the past when replies (counted, never held) pile up; slots still to come
        are all kept (the windows hold them to max_delay_s / window x count)."""
        bisect.insort(self.times, at)
        longest = max(w for _, w in limits) * 1000
        del self.times[: bisect.bisect_right(self.times, now - longest)]
        extra = bisect.bisect_right(self.times, now) - KEPT_PER_COUNT * max(c for c, _ in limits)
        if extra > 0:
            del self.times[:extra]

    def forget(self, at: int) -> None:
        """A send placed at `at` will not go out (cancelled, expired, opted out): it no longer counts."""
        i = bisect.bisect_left(self.times, at)
        if i < len(self.times) and self.times[i] == at:
            del self.times[i]

    def to_bytes(self) -> bytes:
        return self.pack([self.times])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "RecipientSends":
        return cls() if raw is None else cls(*cls.unpack(raw))
