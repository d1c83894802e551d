"""Consent aggregates: who may be messaged, and why.

Scope: opt-in and opt-out are per (app, userkey) -> `Userkey`; conversation is per
(app, sender, userkey) -> `Conversation`; the unrestricted-outbound grant is per app -> `AppGrant`.
Each is a small row with explicit transitions; `to_bytes`/`from_bytes` are its stored form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

# Inbound ids kept per conversation to recognise `reply_to`: those inside the reply window, at most
# this many (a user who sends more within one window has its oldest ones forgotten); bounds the row.
RECENT_INBOUNDS = 32


@dataclass(slots=True)
class Userkey:
    opted_out: bool = False
    opted_in: bool = False
    changed_ts: int = 0
    how: str = ""  # what made the last change, e.g. "keyword STOP" or "opt_out event (web-form)"

    def opt_out(self, ts: int, how: str) -> None:
        self.opted_out, self.opted_in, self.changed_ts, self.how = True, False, ts, how

    def opt_in(self, ts: int, how: str) -> None:
        self.opted_out, self.opted_in, self.changed_ts, self.how = False, True, ts, how

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.opted_out, self.opted_in, self.changed_ts, self.how])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Userkey":
        return cls() if raw is None else cls(*orjson.loads(raw))


@dataclass(slots=True)
class Conversation:
    first_ts: int = 0
    last_ts: int = 0
    # [event_id, ts] of the latest inbounds, newest last: the newest, plus those within the reply
    # window of it, at most RECENT_INBOUNDS
    recent: list[list] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return bool(self.recent)

    def record_inbound(self, event_id: str, ts: int, window_ms: int | None = None) -> None:
        if not self.recent:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)
        self.recent.append([event_id, ts])
        if window_ms is not None:
            self.recent = [r for r in self.recent[:-1] if self.last_ts - r[1] <= window_ms] + self.recent[-1:]
        del self.recent[:-RECENT_INBOUNDS]

    def reply_check(self, reply_to: str | None, ts: int, window_ms: int) -> tuple[bool, str]:
        """Is a send at `ts` a reply to this user's recent message? Returns (is_reply, why)."""
        window_min = window_ms // 60000
        if reply_to is None:
            if self.recent and 0 <= ts - self.last_ts <= window_ms:
                return True, f"the user's last message to this sender was {(ts - self.last_ts) // 1000} s ago"
            return False, ""
        for event_id, inbound_ts in reversed(self.recent):
            if event_id == reply_to:
                age = ts - inbound_ts
                if 0 <= age <= window_ms:
                    return True, f"answers inbound '{reply_to}' from {age // 1000} s ago"
                return False, (f"reply_to '{reply_to}' is {age // 1000} s old, outside the "
                               f"{window_min}-minute reply window, so it is not treated as a reply")
        return False, (f"reply_to '{reply_to}' does not name a recent inbound message from this userkey "
                       f"to this sender (unknown, or from another user), so it is not treated as a reply")

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.first_ts, self.last_ts, self.recent])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Conversation":
        return cls() if raw is None else cls(*orjson.loads(raw))


@dataclass(slots=True)
class AppGrant:
    unrestricted: bool = False
    since_ts: int = 0
    reason: str = ""

    def set(self, unrestricted: bool, ts: int, reason: str) -> None:
        self.unrestricted, self.since_ts, self.reason = unrestricted, ts, reason

    def allows(self, ts: int) -> bool:
        return self.unrestricted and ts >= self.since_ts

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.unrestricted, self.since_ts, self.reason])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "AppGrant":
        return cls() if raw is None else cls(*orjson.loads(raw))


def keyword(text: str) -> str:
    """The whole message as a keyword candidate: case- and whitespace-insensitive."""
    return " ".join(text.split()).upper()
