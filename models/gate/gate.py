"""The gate: one event in, the decisions and deliveries it causes out (see the package docstring).

`Gate.handle` decides an event at its app's clock: what has come due is released, an event the
app said before gets its first answer again, and any other goes to its handler (`HANDLERS`), a
small function in the module of its concept.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import Callable, Iterable

import msgspec

from .. import events as ev
from ..categories import Category
from ..clock import AppClock
from ..decisions import Decision, Delivery, JunkShare, Record, iso
from ..policy import Policy
from ..quiet_hours import QuietHours
from ..retention import DAY_MS
from ..similarity import Sketcher
from ..sources import Keyring
from ..wording import ConsentClassifier
from . import consent, contacts, grants, memory, pending, quiet, retention, send, signals
from .tables import CLOCKS, OverlayStore, Store
from .unit import Decoded, UnitOfWork

CHECK_ID = "\x00check-"  # request ids of a check's sends: a control character, so no real id can match
HASHED_USERKEYS = 4096  # userkeys kept with their HMAC (`Gate.stored_userkey`): an event hashes its userkey 2-3 times


class Gate:
    def __init__(
        self, policy: Policy | None = None, userkey_secret: bytes | None = None, keyring: Keyring | None = None
    ) -> None:
        self.policy = policy or Policy()
        # With a keyring, only a record signed by a key whose role may say it is decided
        # (models/sources.py); None: every record is taken at its word (SENDGATE_AUTH=off).
        self.keyring = keyring
        # With a secret, tables key userkeys by HMAC-SHA-256 and clusters hold keyed hashes: the
        # state holds no userkey except inside pending (delayed) requests, which must be delivered.
        self.secret = userkey_secret
        self._hashed: dict[str, str] = {}  # userkey -> its HMAC, the most recent last (an HMAC is ~25k instructions)
        self.sketcher = Sketcher(self.policy.num_perm, self.policy.shingle_size)
        p = self.policy
        self.wording = ConsentClassifier(p.opt_out_keywords, p.opt_in_keywords, p.help_keywords, p.consent_locales)
        self.decoded = Decoded(self.policy.num_perm)  # the live store's rows, across its events
        self.horizon_ms = self.policy.conversation_horizon_days * DAY_MS  # models/retention.py; 0: never
        self.memory_ms = self.policy.request_memory_s * 1000  # models/memory.py; 0: nothing remembered
        self.quiet_hours = QuietHours(p.quiet_hours_windows)  # models/quiet_hours.py
        self.default_category = Category(p.default_category)  # models/categories.py

    def stored_userkey(self, userkey: str) -> str:
        """The userkey as tables key it: itself, or its HMAC-SHA-256 (hex) when a secret is set."""
        if self.secret is None:
            return userkey
        hashed = self._hashed
        stored = hashed.get(userkey)
        if stored is None:
            stored = hashed[userkey] = hmac.digest(self.secret, userkey.encode(), "sha256").hex()
            if len(hashed) > HASHED_USERKEYS:
                del hashed[next(iter(hashed))]  # the first hashed
        return stored

    def valid_until(self, e: ev.Send) -> int | None:
        """When a send stops being worth sending (`valid_for_s`, or the policy's default), or None."""
        valid_for_s = e.valid_for_s or self.policy.default_valid_for_s
        return e.ts + valid_for_s * 1000 if valid_for_s else None

    def category_of(self, e: ev.Send) -> Category:
        """The send's kind of message: its own, or the policy's default."""
        return Category(e.category) if e.category else self.default_category

    @staticmethod
    def delivery(e: ev.Send, decision: Decision) -> Delivery:
        return Delivery(
            e.request_id, e.app, e.sender, e.userkey, e.network, e.text, e.reply_to, decision.ts, decision.decision_id
        )

    def handle_record(
        self,
        key: bytes | None,
        value: bytes | None,
        record_ts: int,
        store: Store,
        headers: Iterable[tuple[str, bytes]] | None = None,
    ) -> list[Record]:
        """Verify, decode, validate and handle one record of the events topic; raises `InvalidEvent`
        for a record refused (any other exception is a fault, not bad input)."""
        return self.handle(self.decode(key, value, record_ts, headers, store), store, record_ts)

    def decode(
        self,
        key: bytes | None,
        value: bytes | None,
        record_ts: int,
        headers: Iterable[tuple[str, bytes]] | None = None,
        store: Store | None = None,
    ) -> ev.Event:
        """The record's event, or `InvalidEvent` with the reason it is dead-lettered. With a keyring
        the signature is checked before the value is parsed, and the key's rights after; `store`
        gives the app's clock, the event time a key's validity is judged at (models/sources.py)."""
        keyring = self.keyring
        signer = keyring.verify(headers, value) if keyring is not None else None
        event = ev.decode_event(value, record_ts, self.policy.max_ts_ahead_s * 1000)
        if key != event.app.encode():
            shown = key.decode(errors="replace") if key is not None else None
            raise ev.InvalidEvent(
                f"record key {shown!r} must be the event's app {event.app!r}: events are keyed "
                f"by app so that each app's log is totally ordered",
                ev.Refusal.WRONG_KEY,
            )
        if keyring is not None and signer is not None:
            at = max(record_ts, event.ts)
            clock = CLOCKS.get(store, event.app) if store is not None else None
            if clock is not None:
                at = max(at, clock.ts)
            keyring.authorize(signer, event, at)
        return event

    def admit(
        self,
        key: bytes | None,
        value: bytes | None,
        record_ts: int,
        partition: int,
        home: Callable[[str, int], int],
        headers: Iterable[tuple[str, bytes]] | None = None,
        store: Store | None = None,
    ) -> ev.Event:
        """A record of the events log as every reader of the log takes it (the worker, replay,
        rebuild): its event, or `InvalidEvent`, refused by `decode` or read on another partition
        than its app's home. `home(app, partition)` says where the app lives (the first partition
        it was seen on): an app split over two partitions would lose its order and split its state."""
        event = self.decode(key, value, record_ts, headers, store)
        if type(event) is ev.JunkShared:  # shared with every partition: on none of its app's
            return event
        lives_on = home(event.app, partition)
        if lives_on != partition:
            raise ev.InvalidEvent(
                f"app {event.app!r} lives on partition {lives_on} of the events topic, but this record is on partition "
                f"{partition}: a producer with another partitioner split the app over two partitions, which would "
                f"break its order and split its state; publish every event of the app to partition {lives_on} "
                f"(Java's murmur2 partitioner, or that partition explicitly)",
                ev.Refusal.SPLIT_APP,
            )
        return event

    def handle(
        self, event: ev.Event, store: Store, record_ts: int | None = None, decoded: Decoded | None = None
    ) -> list[Record]:
        """Decide one event at its app's clock (models/clock.py); `record_ts` (ms), when given,
        bounds how far the event's `ts` may trail its record's timestamp. Its rows are written
        once it is decided (models/gate/unit.py); `decoded`: where rows stay decoded across events,
        if not in the gate's own (a what-if check)."""
        if type(event) is ev.JunkShared:  # on every partition, of any app: it touches no app's rows
            signals.junk_shared(self, event, store)
            return []
        rows = UnitOfWork(store, self.decoded if decoded is None else decoded)
        try:
            out = self._decide(event, rows, record_ts)
        except BaseException:
            rows.forget()
            raise
        rows.commit()
        return out

    def _decide(self, event: ev.Event, rows: UnitOfWork, record_ts: int | None) -> list[Record]:
        stored = rows.get(CLOCKS, event.app)
        clock = stored or AppClock()
        floor = record_ts - self.policy.max_ts_behind_s * 1000 if record_ts else None
        stamped, before = event.ts, clock.ts
        at, skewed = clock.advance(stamped, floor)
        sweeps = self.horizon_ms > 0 and 0 < clock.sweep_at <= at
        if sweeps:
            clock.sweep_at = retention.sweep_lapsed(event.app, at, self.horizon_ms, rows)
        forgets = self.memory_ms > 0 and 0 < clock.forget_at <= at
        if forgets:
            clock.forget_at = memory.forget_seen(self, event.app, at, rows)
        if stored is None or at != before or sweeps or forgets:
            rows.put(CLOCKS, clock, event.app)
        if at != stamped:
            event = msgspec.structs.replace(event, ts=at)
        out = pending.release_due(self, event.app, at, rows)
        said = memory.memory_key(self, event)
        again = memory.said_before(self, event, said, at, rows)
        if again is not None:  # a retry, or a repeated event: its first answer, nothing applied twice
            out.extend(again)
            return out
        decided = HANDLERS[type(event)](self, event, rows) or []
        if skewed:
            assert record_ts is not None, "only a record's timestamp bounds the skew"
            note = (
                f"; event time: ts {iso(stamped)} trailed its record's timestamp by "
                f"{(record_ts - stamped) // 1000} s, more than max_ts_behind_s = {self.policy.max_ts_behind_s} s, "
                f"so it was decided at {iso(at)}"
            )
            # (a repeated earlier decision keeps its own time, and its detail)
            decided = [
                dataclasses.replace(r, detail=r.detail + note) if isinstance(r, Decision) and r.ts == at else r
                for r in decided
            ]
        memory.remember(self, event, said, decided, at, rows)
        out.extend(decided)
        return out

    def handle_in_one_log(self, event: ev.Event, store: Store, record_ts: int | None = None) -> list[Record]:
        """`handle` for a log of one partition simulated in one process (unit tests, benchmarks):
        a junk report's `junk_shared` event is appended right after it, and decided."""
        out = self.handle(event, store, record_ts)
        for record in out:
            if isinstance(record, JunkShare):
                self.handle(ev.decode_event(record.to_json(), record.ts), store, record_ts)
        return out

    def check(
        self,
        app: str,
        sender: str,
        text: str,
        userkeys: list[str],
        ts: int,
        store: OverlayStore,
        network: str = "sms",
        valid_for_s: int | None = None,
        category: ev.CategoryName | None = None,
    ) -> list[Decision]:
        """What sending `text` from `sender` to each of `userkeys`, in order, at `ts` would decide
        now: the campaign pre-flight. The sends are decided exactly as the worker decides them,
        over `store`, which keeps the writes (an OverlayStore), so nothing live changes; the sender
        rows it keeps decoded are its own."""
        decoded = Decoded(self.policy.num_perm)
        out = []
        for i, userkey in enumerate(userkeys):
            e = ev.Send(f"{CHECK_ID}{i}", app, sender, userkey, network, text, None, ts, valid_for_s, category)
            decided = [
                r
                for r in self.handle(e, store, decoded=decoded)
                if isinstance(r, Decision) and r.request_id == e.request_id
            ]
            out.append(dataclasses.replace(decided[-1], request_id=""))
        return out


# each event type's handler: (gate, event, its unit of work) -> the records it decides (None: none)
HANDLERS: dict[type, Callable[..., list[Record] | None]] = {
    ev.Inbound: consent.inbound,
    ev.OptIn: consent.opt_change,
    ev.OptOut: consent.opt_change,
    ev.Send: send.send,
    ev.AppPolicy: grants.app_policy,
    ev.SenderProfile: signals.sender_profile,
    ev.JunkReport: signals.junk_report,
    ev.DeliveryStatus: signals.delivery_status,
    ev.Contact: contacts.contact,
    ev.Tick: pending.tick,
    ev.Cancel: pending.cancel,
    ev.RecipientProfile: quiet.recipient_profile,
}
