"""Consent aggregates: who may be messaged, and why.

Scope: opt-in and opt-out are per (app, userkey) -> `Userkey`; conversation is per
(app, sender, userkey) -> `Conversation`; the unrestricted-outbound grant is per app -> `AppGrant`.
Each is a small row with explicit transitions; `to_bytes`/`from_bytes` are its stored form, versioned
(models/rows.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .rows import Row, by_field_count

# Inbound ids kept per conversation to recognise `reply_to`: those inside the reply window, at most
# this many (a user who sends more within one window has its oldest ones forgotten); bounds the row.
RECENT_INBOUNDS = 32
HELP_MARK = "help"  # a HELP inbound: one reply to it is allowed, whatever the consent
HELP_ANSWERED = "help_answered"


@dataclass(slots=True)
class Userkey(Row):
    opted_out: bool = False
    opted_in: bool = False
    changed_ts: int = 0
    how: str = ""  # what made the last change, e.g. "rule per_se ('stop') to sender 'S1'" or "opt_out event"
    # The inbound that opted the user out (its event id), which one confirmation may answer, and
    # whether it has (FCC 64.1200(a)(12): one confirmation, within 5 minutes, nothing after it).
    opt_out_inbound: str = ""
    confirmed: bool = False

    # v1: [opted_out, opted_in, changed_ts, how]; v2 appends opt_out_inbound, confirmed
    row_version = 2
    untagged = by_field_count({4: 1, 6: 2})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, "", False]  # from before confirmations: none to send

    def opt_out(self, ts: int, how: str, inbound: str = "") -> None:
        self.opted_out, self.opted_in, self.changed_ts, self.how = True, False, ts, how
        self.opt_out_inbound, self.confirmed = inbound, False

    def opt_in(self, ts: int, how: str) -> None:
        self.opted_out, self.opted_in, self.changed_ts, self.how = False, True, ts, how
        self.opt_out_inbound, self.confirmed = "", False

    def confirmation_check(self, reply_to: str | None, recent: bool, ts: int, window_ms: int) -> tuple[bool, str]:
        """May a send at `ts` whose `reply_to` names an inbound (`recent`: within the reply window)
        confirm this user's opt-out? (why not)"""
        if not self.opt_out_inbound:
            return False, ""
        names_it = reply_to == self.opt_out_inbound and recent
        if self.confirmed:
            return False, "; the one confirmation of this opt-out was already sent" if names_it else ""
        if ts - self.changed_ts > window_ms:
            return False, (f"; a confirmation must follow the opt-out within {window_ms // 1000} s, this one "
                           f"came {(ts - self.changed_ts) // 1000} s after it") if names_it else ""
        if not names_it:
            return False, (f"; only a send whose reply_to names the opt-out message ('{self.opt_out_inbound}') may "
                           f"be its one confirmation") if reply_to is None else ""
        return True, ""

    def to_bytes(self) -> bytes:
        return self.pack([self.opted_out, self.opted_in, self.changed_ts, self.how, self.opt_out_inbound,
                          self.confirmed])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Userkey":
        return cls() if raw is None else cls(*cls.unpack(raw))


@dataclass(slots=True)
class Conversation(Row):
    first_ts: int = 0
    last_ts: int = 0
    # [event_id, ts] of the latest inbounds, newest last: the newest, plus those within the reply
    # window of it, at most RECENT_INBOUNDS; a HELP inbound is [event_id, ts, "help"], since a
    # reply to it is always allowed
    recent: list[list] = field(default_factory=list)
    # Whether the user wrote anything but HELP (which gives no consent). None in rows written
    # before HELP was told apart: then every inbound counted.
    conversed: bool | None = None
    # The auto-reply loop guard (Policy.loop_*): the run of same-text inbound messages the user's
    # latest belongs to: [digest] for a run of one (12 bytes a row), [digest, repeats, answered,
    # since] once the text repeats (models/controls.py inbound_digest). None in older rows.
    loop: list | None = None

    # v1: [first_ts, last_ts, recent]; v2 appends conversed; v3 appends loop
    row_version = 3
    untagged = by_field_count({3: 1, 4: 2, 5: 3})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, None]  # from before HELP was told apart: every inbound counted

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        return [*fields, None]  # from before the loop guard: no run yet

    @property
    def exists(self) -> bool:
        """Has the user conversed with this sender (the consent a conversation gives)?"""
        return bool(self.recent) if self.conversed is None else self.conversed

    def record_inbound(self, event_id: str, ts: int, window_ms: int | None = None, asks_help: bool = False) -> None:
        if not asks_help and not self.exists:
            self.first_ts = ts
        self.conversed = self.exists or not asks_help
        self.last_ts = max(self.last_ts, ts)
        self.recent.append([event_id, ts, HELP_MARK] if asks_help else [event_id, ts])
        if window_ms is not None:
            self.recent = [r for r in self.recent[:-1] if self.last_ts - r[1] <= window_ms] + self.recent[-1:]
        del self.recent[:-RECENT_INBOUNDS]

    def record_text(self, digest: int, ts: int, window_ms: int) -> None:
        """Count an inbound text towards a loop, before `record_inbound`: the same text again within
        `window_ms` of the run's first message repeats it; another text (or a late one) ends the run."""
        run = self.loop
        if run is None or run[0] != digest:
            self.loop = [digest]
        elif len(run) == 1:
            since = self.recent[-1][1] if self.recent else ts  # the run's first message
            self.loop = [digest, 2, 0, since] if ts - since <= window_ms else [digest]
        elif ts - run[3] <= window_ms:
            run[1] += 1
        else:
            self.loop = [digest]

    def loop_answered(self) -> bool:
        """A reply to this user was allowed or delayed; True when that changed the row (a text repeats)."""
        if self.loop is None or len(self.loop) == 1:
            return False
        self.loop[2] += 1
        return True

    @property
    def loop_counts(self) -> tuple[int, int]:
        """(same-text inbound messages in the current run, replies the app sent during it)."""
        run = self.loop
        return (0, 0) if run is None else (1, 0) if len(run) == 1 else (run[1], run[2])

    def replied(self, reply_to: str | None, ts: int, window_ms: int) -> list | None:
        """The inbound entry a send at `ts` answers within `window_ms` (`reply_to`, or without it
        the user's last message), or None."""
        if reply_to is None:
            last = self.recent[-1] if self.recent else None
            return last if last is not None and 0 <= ts - last[1] <= window_ms else None
        for entry in reversed(self.recent):
            if entry[0] == reply_to:
                return entry if 0 <= ts - entry[1] <= window_ms else None
        return None

    @property
    def inbound_ids(self) -> list[str]:
        return [entry[0] for entry in self.recent]

    def reply_check(self, reply_to: str | None, ts: int, window_ms: int) -> tuple[bool, str]:
        """Is a send at `ts` a reply to this user's recent message? Returns (is_reply, why)."""
        window_min = window_ms // 60000
        # A HELP inbound asks for help, not a conversation: answering it is `help_reply`, once.
        if reply_to is None:
            last = next((entry for entry in reversed(self.recent) if len(entry) == 2), None)
            if last is not None and 0 <= ts - last[1] <= window_ms:
                return True, f"the user's last message to this sender was {(ts - last[1]) // 1000} s ago"
            return False, ""
        for event_id, inbound_ts, *mark in reversed(self.recent):
            if event_id == reply_to and mark:
                return False, f"reply_to '{reply_to}' names a HELP message, which was answered already"
            if event_id == reply_to:
                age = ts - inbound_ts
                if 0 <= age <= window_ms:
                    return True, f"answers inbound '{reply_to}' from {age // 1000} s ago"
                return False, (f"reply_to '{reply_to}' is {age // 1000} s old, outside the "
                               f"{window_min}-minute reply window, so it is not treated as a reply")
        return False, (f"reply_to '{reply_to}' does not name a recent inbound message from this userkey "
                       f"to this sender (unknown, or from another user), so it is not treated as a reply")

    def to_bytes(self) -> bytes:
        return self.pack([self.first_ts, self.last_ts, self.recent, self.conversed, self.loop])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Conversation":
        return cls() if raw is None else cls(*cls.unpack(raw))


WATCHED = ("junk_reports", "refused_blasts", "results", "not_delivered")


@dataclass(slots=True)
class AppGrant(Row):
    unrestricted: bool = False
    since_ts: int = 0
    reason: str = ""
    # While the grant holds: what may make sendgate revoke it (Policy.grant_revoke_*), as
    # [window_start, junk_reports, refused_blasts, results, not_delivered, revoking]; None before
    # the first signal (and in older rows). `revoking`: the revocation is on its way to the log.
    watch: list | None = None
    revoked_by_sendgate: bool = False

    # v1: [unrestricted, since_ts, reason]; v2 appends watch, revoked_by_sendgate
    row_version = 2
    untagged = by_field_count({3: 1, 5: 2})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, None, False]  # no signal counted yet, not revoked by sendgate

    def set(self, unrestricted: bool, ts: int, reason: str, by_sendgate: bool = False) -> None:
        self.unrestricted, self.since_ts, self.reason = unrestricted, ts, reason
        self.watch, self.revoked_by_sendgate = None, by_sendgate and not unrestricted

    def allows(self, ts: int) -> bool:
        return self.unrestricted and ts >= self.since_ts

    def count(self, signal: str, ts: int, window_ms: int) -> dict[str, int]:
        """Count a signal against the grant (WATCHED), in windows of `window_ms`; the counts."""
        watch = self.watch
        if watch is None or ts - watch[0] >= window_ms:
            watch = self.watch = [ts, 0, 0, 0, 0, watch[5] if watch else False]
        watch[1 + WATCHED.index(signal)] += 1
        return dict(zip(WATCHED, watch[1:5]))

    @property
    def revoking(self) -> bool:
        return bool(self.watch and self.watch[5])

    def mark_revoking(self) -> None:
        self.watch[5] = True

    def to_bytes(self) -> bytes:
        return self.pack([self.unrestricted, self.since_ts, self.reason, self.watch, self.revoked_by_sendgate])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "AppGrant":
        return cls() if raw is None else cls(*cls.unpack(raw))


