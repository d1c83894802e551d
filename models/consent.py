"""Consent aggregates: who may be messaged, and why.

Scope: opt-in and opt-out are per (app, userkey) -> `Userkey`; conversation is per
(app, sender, userkey) -> `Conversation`; the unrestricted-outbound grant is per app -> `AppGrant`.
Each is a small row with explicit transitions; `to_bytes`/`from_bytes` are its stored form, versioned
(models/rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .categories import ALL, BIT, Category
from .rows import Row, by_field_count

# Inbound ids kept per conversation to recognise `reply_to`: those inside the reply window, at most
# this many (a user who sends more within one window has its oldest ones forgotten); bounds the row.
RECENT_INBOUNDS = 32
HELP_MARK = "help"  # a HELP inbound: one reply to it is allowed, whatever the consent
HELP_ANSWERED = "help_answered"


class Stored:
    """A part of a row kept in the row as a JSON array (its stored form, `to_list`): it equals
    that form too, so that a row compares with the fields it was read from."""

    __slots__ = ()

    def to_list(self) -> list:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Stored):
            return type(other) is type(self) and other.to_list() == self.to_list()
        return isinstance(other, list) and other == self.to_list()

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass(slots=True, eq=False)
class RecentInbound(Stored):
    """One of a conversation's latest inbound messages: [event_id, ts], or [event_id, ts, mark]
    for a HELP (one reply to it is allowed, whatever the consent)."""

    event_id: str
    ts: int
    mark: str = ""  # "" | HELP_MARK: a HELP not answered yet | HELP_ANSWERED

    @property
    def asks_help(self) -> bool:
        return self.mark == HELP_MARK

    def answer_help(self) -> None:
        self.mark = HELP_ANSWERED  # one answer per HELP: later sends meet the other rules

    def to_list(self) -> list:
        return [self.event_id, self.ts, self.mark] if self.mark else [self.event_id, self.ts]


@dataclass(slots=True, eq=False)
class LoopRun(Stored):
    """The run of same-text inbound messages the user's latest belongs to (the auto-reply loop
    guard, Policy.loop_*): [digest] for a run of one (12 bytes a row), [digest, repeats, answered,
    since] once the text repeats (models/controls.py inbound_digest)."""

    digest: int
    repeats: int = 1  # same-text messages in the run
    answered: int = 0  # replies the app sent during it
    since: int = 0  # when the run's first message came (once it repeats)

    def to_list(self) -> list:
        return [self.digest] if self.repeats == 1 else [self.digest, self.repeats, self.answered, self.since]

    @classmethod
    def of(cls, stored: list | None) -> "LoopRun | None":
        return None if stored is None else cls(*stored)


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
    covered: int = ALL  # the kinds of message the opt-in names, a bit each (models/categories.py)
    # While opted out: the kinds the opt-out stopped (all, or with Policy.opt_out_scope "category"
    # the kind of the message the STOP answered and those that need more consent)
    stopped: int = ALL

    # v1: [opted_out, opted_in, changed_ts, how]; v2 appends opt_out_inbound, confirmed; v3 covered,
    # stopped
    row_version = 3
    untagged = by_field_count({4: 1, 6: 2})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, "", False]  # from before confirmations: none to send

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        return [*fields, ALL, ALL]  # from before kinds of message: an opt-in covered them all, an opt-out stopped them

    def opt_out(self, ts: int, how: str, inbound: str = "", stopped: int = ALL) -> None:
        """Stop the kinds of message in `stopped`: all of them (the consent is revoked), or some,
        when the other kinds keep the consent they had."""
        self.opted_out, self.changed_ts, self.how, self.stopped = True, ts, how, stopped
        self.opted_in = self.opted_in and stopped != ALL
        self.opt_out_inbound, self.confirmed = inbound, False

    def stops(self, category: Category) -> bool:
        """Does an opt-out stop a message of this kind?"""
        return self.opted_out and bool(self.stopped & BIT[category])

    def opt_in(self, ts: int, how: str, covered: int = ALL) -> None:
        self.opted_out, self.opted_in, self.changed_ts, self.how = False, True, ts, how
        self.opt_out_inbound, self.confirmed, self.covered, self.stopped = "", False, covered, ALL

    def confirmation_check(self, reply_to: str | None, recent: bool, ts: int, window_ms: int) -> tuple[bool, str]:
        """May a send at `ts` whose `reply_to` names an inbound (`recent`: within the reply window)
        confirm this user's opt-out? (why not)"""
        if not self.opt_out_inbound:
            return False, ""
        names_it = reply_to == self.opt_out_inbound and recent
        if self.confirmed:
            return False, "; the one confirmation of this opt-out was already sent" if names_it else ""
        if ts - self.changed_ts > window_ms:
            return False, (
                f"; a confirmation must follow the opt-out within {window_ms // 1000} s, this one "
                f"came {(ts - self.changed_ts) // 1000} s after it"
            ) if names_it else ""
        if not names_it:
            return False, (
                f"; only a send whose reply_to names the opt-out message ('{self.opt_out_inbound}') may "
                f"be its one confirmation"
            ) if reply_to is None else ""
        return True, ""

    def to_bytes(self) -> bytes:
        return self.pack(
            [
                self.opted_out,
                self.opted_in,
                self.changed_ts,
                self.how,
                self.opt_out_inbound,
                self.confirmed,
                self.covered,
                self.stopped,
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Userkey":
        return cls() if raw is None else cls(*cls.unpack(raw))


@dataclass(slots=True)
class Conversation(Row):
    first_ts: int = 0
    last_ts: int = 0
    # the latest inbounds, newest last: the newest, plus those within the reply window of it, at
    # most RECENT_INBOUNDS
    recent: list[RecentInbound] = field(default_factory=list)
    # Whether the user wrote anything but HELP (which gives no consent). None in rows written
    # before HELP was told apart: then every inbound counted.
    conversed: bool | None = None
    # The auto-reply loop guard's run (LoopRun). None in older rows.
    loop: LoopRun | None = None

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
        self.recent.append(RecentInbound(event_id, ts, HELP_MARK if asks_help else ""))
        if window_ms is not None:
            self.recent = [r for r in self.recent[:-1] if self.last_ts - r.ts <= window_ms] + self.recent[-1:]
        del self.recent[:-RECENT_INBOUNDS]

    def record_text(self, digest: int, ts: int, window_ms: int) -> None:
        """Count an inbound text towards a loop, before `record_inbound`: the same text again within
        `window_ms` of the run's first message repeats it; another text (or a late one) ends the run."""
        run = self.loop
        if run is None or run.digest != digest:
            self.loop = LoopRun(digest)
        elif run.repeats == 1:
            since = self.recent[-1].ts if self.recent else ts  # the run's first message
            self.loop = LoopRun(digest, 2, 0, since) if ts - since <= window_ms else LoopRun(digest)
        elif ts - run.since <= window_ms:
            run.repeats += 1
        else:
            self.loop = LoopRun(digest)

    def loop_answered(self) -> bool:
        """A reply to this user was allowed or delayed; True when that changed the row (a text repeats)."""
        if self.loop is None or self.loop.repeats == 1:
            return False
        self.loop.answered += 1
        return True

    @property
    def loop_counts(self) -> tuple[int, int]:
        """(same-text inbound messages in the current run, replies the app sent during it)."""
        run = self.loop
        return (0, 0) if run is None else (run.repeats, run.answered)

    def replied(self, reply_to: str | None, ts: int, window_ms: int) -> RecentInbound | None:
        """The inbound entry a send at `ts` answers within `window_ms` (`reply_to`, or without it
        the user's last message), or None."""
        if reply_to is None:
            last = self.recent[-1] if self.recent else None
            return last if last is not None and 0 <= ts - last.ts <= window_ms else None
        for entry in reversed(self.recent):
            if entry.event_id == reply_to:
                return entry if 0 <= ts - entry.ts <= window_ms else None
        return None

    @property
    def inbound_ids(self) -> list[str]:
        return [entry.event_id for entry in self.recent]

    def reply_check(self, reply_to: str | None, ts: int, window_ms: int) -> tuple[bool, str]:
        """Is a send at `ts` a reply to this user's recent message? Returns (is_reply, why)."""
        window_min = window_ms // 60000
        # A HELP inbound asks for help, not a conversation: answering it is `help_reply`, once.
        if reply_to is None:
            last = next((entry for entry in reversed(self.recent) if not entry.mark), None)
            if last is not None and 0 <= ts - last.ts <= window_ms:
                return True, f"the user's last message to this sender was {(ts - last.ts) // 1000} s ago"
            return False, ""
        for entry in reversed(self.recent):
            if entry.event_id == reply_to and entry.mark:
                return False, f"reply_to '{reply_to}' names a HELP message, which was answered already"
            if entry.event_id == reply_to:
                age = ts - entry.ts
                if 0 <= age <= window_ms:
                    return True, f"answers inbound '{reply_to}' from {age // 1000} s ago"
                return False, (
                    f"reply_to '{reply_to}' is {age // 1000} s old, outside the "
                    f"{window_min}-minute reply window, so it is not treated as a reply"
                )
        return False, (
            f"reply_to '{reply_to}' does not name a recent inbound message from this userkey "
            f"to this sender (unknown, or from another user), so it is not treated as a reply"
        )

    def to_bytes(self) -> bytes:
        return self.pack(
            [
                self.first_ts,
                self.last_ts,
                [entry.to_list() for entry in self.recent],
                self.conversed,
                None if self.loop is None else self.loop.to_list(),
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "Conversation":
        if raw is None:
            return cls()
        first_ts, last_ts, recent, conversed, loop = cls.unpack(raw)
        return cls(first_ts, last_ts, [RecentInbound(*entry) for entry in recent], conversed, LoopRun.of(loop))


WATCHED = ("junk_reports", "refused_blasts", "results", "not_delivered")


@dataclass(slots=True, eq=False)
class GrantWatch(Stored):
    """What may make sendgate revoke an app's grant (Policy.grant_revoke_*): the signals counted
    in the current window, stored as [window_start, junk_reports, refused_blasts, results,
    not_delivered, revoking]."""

    window_start: int
    junk_reports: int = 0
    refused_blasts: int = 0
    results: int = 0
    not_delivered: int = 0
    revoking: bool = False  # the revocation is on its way to the log

    @property
    def counts(self) -> dict[str, int]:
        return {signal: getattr(self, signal) for signal in WATCHED}

    def to_list(self) -> list:
        return [
            self.window_start,
            self.junk_reports,
            self.refused_blasts,
            self.results,
            self.not_delivered,
            self.revoking,
        ]

    @classmethod
    def of(cls, stored: list | None) -> "GrantWatch | None":
        return None if stored is None else cls(*stored)


@dataclass(slots=True)
class AppGrant(Row):
    unrestricted: bool = False
    since_ts: int = 0
    reason: str = ""
    # While the grant holds: what may make sendgate revoke it; None before the first signal (and
    # in older rows)
    watch: GrantWatch | None = None
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
        if watch is None or ts - watch.window_start >= window_ms:
            watch = self.watch = GrantWatch(ts, revoking=watch.revoking if watch else False)
        setattr(watch, signal, getattr(watch, signal) + 1)
        return watch.counts

    @property
    def revoking(self) -> bool:
        return bool(self.watch and self.watch.revoking)

    def mark_revoking(self) -> None:
        assert self.watch is not None, "a revocation follows a counted signal"
        self.watch.revoking = True

    def to_bytes(self) -> bytes:
        return self.pack(
            [
                self.unrestricted,
                self.since_ts,
                self.reason,
                None if self.watch is None else self.watch.to_list(),
                self.revoked_by_sendgate,
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "AppGrant":
        if raw is None:
            return cls()
        unrestricted, since_ts, reason, watch, by_sendgate = cls.unpack(raw)
        return cls(unrestricted, since_ts, reason, GrantWatch.of(watch), by_sendgate)
