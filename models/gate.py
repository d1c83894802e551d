"""The rule pipeline: one event in, the decisions and deliveries it causes out.

`Gate.handle` is a pure function of the event and the rows it reads through a `Store`; the
worker gives it Faust tables, unit tests give it a `MemoryStore`. Read this file to answer
"why was this request rejected?".

Per send request: release what is due -> consent (opt-out, reply, conversation, opt-in, grant)
-> the same text repeated to the userkey (duplicate_text) -> burst pacing (clusters of
near-identical texts, junk index) -> decision (+ delivery or pending).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from . import events as ev
from .burst import BurstVerdict, JunkMatch, SenderState, recipient_hash
from .clock import AppClock
from .consent import HELP_ANSWERED, HELP_MARK, AppGrant, Conversation, Userkey
from .controls import RecentTexts, RecipientSends, inbound_digest, text_digest
from .decisions import ConsentRecord, Decision, Delivery, GrantRevocation, JunkShare, iso, revocation_made_at
from .junk import JunkIndex, JunkReport
from .memory import EVENT, REQUEST, AnsweredRequest, SeenEvent, said_digest
from .pending import DUE_CHUNK, MINUTE_MS, DueBucket, PendingRequest, ReleaseSchedule
from .policy import Policy
from .retention import DAY_MS, LapseBucket, LapseIndex, lapsed
from .similarity import Sketcher
from .sources import Keyring
from .wording import HELP, OPT_IN, OPT_OUT, ConsentClassifier

# Tables (name -> key): one small row per key, never one row per app holding all its userkeys.
USERKEYS = "userkeys"            # (app, userkey)          -> Userkey
CONVERSATIONS = "conversations"  # (app, sender, userkey)  -> Conversation
GRANTS = "grants"                # app                     -> AppGrant
SENDERS = "senders"              # (app, sender)           -> SenderState's head (profile, risk, cluster ids)
CLUSTERS = "clusters"            # (app, sender, cluster)  -> one BurstCluster of the sender
SKETCHES = "sketches"            # (app, sender, cluster)  -> the cluster's sketch (written once)
PENDING = "pending"              # (app, request_id)       -> PendingRequest
SCHEDULES = "schedules"          # app                     -> ReleaseSchedule
DUE = "due"                      # (app, minute[, chunk])  -> DueBucket (<= DUE_CHUNK entries)
CLOCKS = "clocks"                # app                     -> AppClock
LAPSE_DAYS = "lapse_days"        # app                     -> LapseIndex (models/retention.py)
LAPSES = "lapses"                # (app, day, chunk)       -> LapseBucket (<= LAPSE_CHUNK conversations)
RECIPIENTS = "recipients"        # (app, userkey)          -> RecipientSends (only with recipient_limits)
CONTACTS = "contacts"            # (app, userkey, network) -> b"1": the bot is on the user's contact list there
SEEN = "seen"                    # (app, kind, id)         -> AnsweredRequest | SeenEvent (models/memory.py)
SEEN_DAYS = "seen_days"          # app                     -> LapseIndex of the days `seen` rows were written
SEEN_LISTS = "seen_lists"        # (app, day, chunk)       -> LapseBucket of (kind, id)
TEXTS = "texts"                  # (app, userkey)          -> RecentTexts (the texts sent to it lately)
JUNK = "junk"                    # template id             -> JunkTemplate (each partition's own index)
TABLES = (USERKEYS, CONVERSATIONS, GRANTS, SENDERS, CLUSTERS, SKETCHES, PENDING, SCHEDULES, DUE, CLOCKS, LAPSE_DAYS,
          LAPSES, RECIPIENTS, CONTACTS, SEEN, SEEN_DAYS, SEEN_LISTS, TEXTS, JUNK)

Record = Decision | Delivery | ConsentRecord | GrantRevocation | JunkShare
# The sender name under which an app's near-identical texts are counted across all its sender
# names (a blast spread over names is one blast to the platform); ids hold no control characters.
WHOLE_APP = "\x00app"
DECODED_SENDERS = 256  # sender rows kept decoded (`Gate._sender`): a few MB at 32 clusters a row


@dataclass(frozen=True)
class DayLists:
    """Rows listed by the UTC day they are due to go from, swept by the app's clock (models/retention.py)."""
    index: str  # app -> LapseIndex
    buckets: str  # (app, day, chunk) -> LapseBucket of two-part entries
    clock_field: str  # the AppClock field that says when the next bucket is due


LAPSES_BY_DAY = DayLists(LAPSE_DAYS, LAPSES, "sweep_at")  # conversations, by the day of their last inbound
SEEN_BY_DAY = DayLists(SEEN_DAYS, SEEN_LISTS, "forget_at")  # remembered requests and events, by their day


def key(*parts: str) -> bytes:
    # Ids cannot contain control characters (see events.py), so \x1f separates them unambiguously.
    return "\x1f".join(parts).encode()


def due_key(app: str, minute: int, chunk: int) -> bytes:
    """The DueBucket row of one chunk of a minute (chunk 0 keeps the key of one bucket a minute)."""
    return key(app, str(minute)) if chunk == 0 else key(app, str(minute), str(chunk))


def due_entries(get: Callable[[str, bytes], bytes | None], app: str, schedule: ReleaseSchedule,
                minute: int) -> list[list]:
    """Every [deliver_at, request_id] of a minute of the app's schedule; `get` reads a row."""
    return [entry for chunk in range(schedule.chunk_count(minute))
            for entry in DueBucket.from_bytes(get(DUE, due_key(app, minute, chunk))).entries]


class Store(Protocol):
    # The junk index of the partition being decided: built by the `junk_shared` events of that
    # partition's log alone (models/junk.py), so that a replay reading the partitions in another
    # order matches each send against the same index.
    junk: JunkIndex

    def get(self, table: str, key: bytes) -> bytes | None: ...
    def set(self, table: str, key: bytes, value: bytes) -> None: ...
    def delete(self, table: str, key: bytes) -> None: ...
    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        """Count a shared junk report in this partition's index, and write the rows it changed."""


class MemoryStore:
    """A Store over plain dicts: for unit tests, in-process benchmarks, replay and policy
    experiments. `partition` is the partition of the log being decided (replay sets it per record):
    each has its own junk index, as in the worker."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {name: {} for name in TABLES}
        self.partition = 0
        self._junk: dict[int, JunkIndex] = {}

    @property
    def junk(self) -> JunkIndex:
        index = self._junk.get(self.partition)
        if index is None:
            index = self._junk[self.partition] = JunkIndex()
        return index

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.tables[table].get(key)

    def set(self, table: str, key: bytes, value: bytes) -> None:
        # An exact-size copy: orjson's output keeps a ~4 KB buffer however short the JSON, which
        # made a million small rows cost 8 GB instead of 0.4 GB.
        self.tables[table][key] = bytes(memoryview(value))

    def delete(self, table: str, key: bytes) -> None:
        self.tables[table].pop(key, None)

    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        changed = self.junk.apply(report, policy.similarity_threshold, policy.junk_reject_reporters,
                                  policy.max_junk_templates)
        for template_id, template in changed.items():
            row = key(str(self.partition), template_id)
            if template is None:
                self.delete(JUNK, row)
            else:
                self.set(JUNK, row, template.to_bytes())


class OverlayStore:
    """A Store that reads through to live state and keeps its own writes: a what-if question
    (`Gate.check`) decides over it and leaves the live rows untouched."""

    def __init__(self, read: Callable[[str, bytes], bytes | None], junk: JunkIndex) -> None:
        self.read = read
        self.junk = junk
        self.rows: dict[tuple[str, bytes], bytes | None] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        row = (table, key)
        return self.rows[row] if row in self.rows else self.read(table, key)

    def set(self, table: str, key: bytes, value: bytes) -> None:
        self.rows[(table, key)] = value

    def delete(self, table: str, key: bytes) -> None:
        self.rows[(table, key)] = None

    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        """A check decides sends only."""


CHECK_ID = "\x00check-"  # request ids of a check's sends: a control character, so no real id can match


class Gate:
    def __init__(self, policy: Policy | None = None, userkey_secret: bytes | None = None,
                 keyring: Keyring | None = None) -> None:
        self.policy = policy or Policy()
        # With a keyring, only a record signed by a key whose role may say it is decided
        # (models/sources.py); None: every record is taken at its word (SENDGATE_AUTH=off).
        self.keyring = keyring
        # With a secret, tables key userkeys by HMAC-SHA-256 and clusters hold keyed hashes: the
        # state holds no userkey except inside pending (delayed) requests, which must be delivered.
        self._secret = userkey_secret
        self.sketcher = Sketcher(self.policy.num_perm, self.policy.shingle_size)
        p = self.policy
        self.wording = ConsentClassifier(p.opt_out_keywords, p.opt_in_keywords, p.help_keywords, p.consent_locales)
        self._decoded_senders: dict[bytes, tuple[bytes, SenderState]] = {}  # row key -> (row, its state)
        self._horizon = self.policy.conversation_horizon_days * DAY_MS  # models/retention.py; 0: never
        self._memory = self.policy.request_memory_s * 1000  # models/memory.py; 0: nothing remembered

    def stored_userkey(self, userkey: str) -> str:
        """The userkey as tables key it: itself, or its HMAC-SHA-256 (hex) when a secret is set."""
        if self._secret is None:
            return userkey
        return hmac.new(self._secret, userkey.encode(), hashlib.sha256).hexdigest()

    def handle_record(self, key: bytes | None, value: bytes | None, record_ts: int, store: Store,
                      headers: Iterable[tuple[str, bytes]] | None = None) -> list[Record]:
        """Verify, decode, validate and handle one record of the events topic; raises `InvalidEvent`
        for a record refused (any other exception is a fault, not bad input)."""
        return self.handle(self.decode(key, value, record_ts, headers, store), store, record_ts)

    def decode(self, key: bytes | None, value: bytes | None, record_ts: int,
               headers: Iterable[tuple[str, bytes]] | None = None, store: Store | None = None) -> ev.Event:
        """The record's event, or `InvalidEvent` with the reason it is dead-lettered. With a keyring
        the signature is checked before the value is parsed, and the key's rights after; `store`
        gives the app's clock, the event time a key's validity is judged at (models/sources.py)."""
        signer = self.keyring.verify(headers, value) if self.keyring is not None else None
        event = ev.decode_event(value, record_ts, self.policy.max_ts_ahead_s * 1000)
        if key != event.app.encode():
            shown = key.decode(errors="replace") if key is not None else None
            raise ev.InvalidEvent(f"record key {shown!r} must be the event's app {event.app!r}: events are keyed "
                                  f"by app so that each app's log is totally ordered")
        if signer is not None:
            at = max(record_ts, event.ts)
            if store is not None:
                at = max(at, AppClock.from_bytes(store.get(CLOCKS, key)).ts)
            self.keyring.authorize(signer, event, at)
        return event

    def handle(self, event: ev.Event, store: Store, record_ts: int | None = None) -> list[Record]:
        """Decide one event at its app's clock (models/clock.py); `record_ts` (ms), when given,
        bounds how far the event's `ts` may trail its record's timestamp."""
        if type(event) is ev.JunkShared:  # on every partition, of any app: it touches no app's rows
            self._junk_shared(event, store)
            return []
        clock_key = key(event.app)
        raw = store.get(CLOCKS, clock_key)
        clock = AppClock.from_bytes(raw)
        floor = record_ts - self.policy.max_ts_behind_s * 1000 if record_ts else None
        stamped, before = event.ts, clock.ts
        at, skewed = clock.advance(stamped, floor)
        sweeps = self._horizon > 0 and 0 < clock.sweep_at <= at
        if sweeps:
            clock.sweep_at = self._sweep_lapsed(event.app, at, self._horizon, store)
        forgets = self._memory > 0 and 0 < clock.forget_at <= at
        if forgets:
            clock.forget_at = self._forget_seen(event.app, at, store)
        if raw is None or at != before or sweeps or forgets:
            store.set(CLOCKS, clock_key, clock.to_bytes())
        if at != stamped:
            event = dataclasses.replace(event, ts=at)
        out = self._release_due(event.app, at, store)
        again = self._said_before(event, at, store)
        if again is not None:  # a retry, or a repeated event: its first answer, nothing applied twice
            out.extend(again)
            return out
        handler = self._HANDLERS[type(event)]
        decided = handler(self, event, store) or []
        if skewed:
            note = (f"; event time: ts {iso(stamped)} trailed its record's timestamp by "
                    f"{(record_ts - stamped) // 1000} s, more than max_ts_behind_s = {self.policy.max_ts_behind_s} s, "
                    f"so it was decided at {iso(at)}")
            for record in decided:
                if isinstance(record, Decision) and record.ts == at:  # not a repeated earlier decision
                    record.detail += note
        self._remember(event, decided, at, store)
        out.extend(decided)
        return out

    def check(self, app: str, sender: str, text: str, userkeys: list[str], ts: int, store: OverlayStore,
              network: str = "sms", valid_for_s: int | None = None) -> list[Decision]:
        """What sending `text` from `sender` to each of `userkeys`, in order, at `ts` would decide
        now: the campaign pre-flight. The sends are decided exactly as the worker decides them,
        over `store`, which keeps the writes (an OverlayStore), so nothing live changes. A copy of
        the gate keeps the live gate's decoded rows out of it."""
        what_if = copy.copy(self)
        what_if._decoded_senders = {}
        out = []
        for i, userkey in enumerate(userkeys):
            e = ev.Send(f"{CHECK_ID}{i}", app, sender, userkey, network, text, None, ts, valid_for_s)
            decided = [r for r in what_if.handle(e, store) if isinstance(r, Decision) and r.request_id == e.request_id]
            out.append(dataclasses.replace(decided[-1], request_id=""))
        return out

    # --- state-only events -------------------------------------------------------------------
    def _inbound(self, e: ev.Inbound, store: Store) -> list[Record]:
        said = self.wording.classify(e.text)  # models/wording.py: opt-out > opt-in > help > none
        user_id = self.stored_userkey(e.userkey)
        conv_key = key(e.app, e.sender, user_id)
        conv = Conversation.from_bytes(store.get(CONVERSATIONS, conv_key))
        horizon = self._horizon
        if lapsed(conv.last_ts, e.ts, horizon):
            conv = Conversation()  # a lapsed conversation starts again
        day = conv.last_ts // DAY_MS if conv.last_ts else None
        asks_help = said.kind == HELP  # answered always, but no consent
        # HELP and STOP are no conversation a sender may count towards being an established one
        if not conv.exists and said.kind not in (HELP, OPT_OUT):
            sender = self._sender(store, e.app, e.sender)
            sender.record_conversation()
            sender.record_signal("conversation", e.ts, self.policy)
            self._put_sender(store, e.app, e.sender, sender)
        conv.record_text(inbound_digest(e.text), e.ts, self.policy.loop_window_s * 1000)
        if e.network in self.policy.contact_list_networks:  # the platform accepted the user writing first
            store.set(CONTACTS, key(e.app, user_id, e.network), b"1")
        conv.record_inbound(e.event_id, e.ts, self.policy.reply_window_s * 1000, asks_help)
        store.set(CONVERSATIONS, conv_key, conv.to_bytes())
        if horizon and conv.last_ts // DAY_MS != day:
            self._index_lapse(e.app, e.sender, user_id, conv.last_ts // DAY_MS, horizon, store)

        def audit(kind: str) -> ConsentRecord:
            return ConsentRecord(e.app, user_id, kind, said.rule, "inbound", e.event_id, e.sender, said.normalized,
                                 said.matched, e.ts)

        if said.kind in (OPT_OUT, OPT_IN):
            user_key = key(e.app, user_id)
            user = Userkey.from_bytes(store.get(USERKEYS, user_key))
            how = f"inbound '{said.matched}' to sender '{e.sender}' (rule {said.rule})"
            if said.kind == OPT_OUT:
                user.opt_out(e.ts, how, e.event_id)
            else:
                user.opt_in(e.ts, how)
            store.set(USERKEYS, user_key, user.to_bytes())
            return [audit(said.kind)]
        return [audit("ambiguous")] if said.ambiguous else []

    def _opt_change(self, e: ev.OptIn | ev.OptOut, store: Store) -> list[Record]:
        user_id = self.stored_userkey(e.userkey)
        user_key = key(e.app, user_id)
        user = Userkey.from_bytes(store.get(USERKEYS, user_key))
        kind = ev.event_type(e)
        how = f"{kind} event" + (f" ({e.source})" if e.source else "")
        (user.opt_in if isinstance(e, ev.OptIn) else user.opt_out)(e.ts, how)
        store.set(USERKEYS, user_key, user.to_bytes())
        return [ConsentRecord(e.app, user_id, kind, f"{kind}_event", how, e.event_id, "", "", "", e.ts)]

    def _app_policy(self, e: ev.AppPolicy, store: Store) -> None:
        grant = AppGrant.from_bytes(store.get(GRANTS, key(e.app)))
        made_at = revocation_made_at(e.event_id)
        if made_at is not None and grant.since_ts > made_at:
            return  # an operator decided after the revocation was made (or this is a copy of it, decided again)
        grant.set(e.unrestricted, e.ts, e.reason, made_at is not None)
        store.set(GRANTS, key(e.app), grant.to_bytes())

    def _watch_grant(self, app: str, signals: tuple[str, ...], ts: int, store: Store) -> list[Record]:
        """Count signals against the app's unrestricted grant (models/consent.py WATCHED); the
        revocation, once, when they cross one of the policy's thresholds."""
        raw = store.get(GRANTS, key(app))
        if raw is None:
            return []
        grant = AppGrant.from_bytes(raw)
        if not grant.allows(ts) or grant.revoking:
            return []
        p = self.policy
        for signal in signals:
            counts = grant.count(signal, ts, p.grant_revoke_window_s * 1000)
        results, lost = counts["results"], counts["not_delivered"]
        why = (f"{counts['junk_reports']} junk reports" if counts["junk_reports"] >= p.grant_revoke_junk_reports else
               f"{counts['refused_blasts']} blast sends refused" if counts["refused_blasts"] >= p.grant_revoke_refused_blasts
               else f"{lost} of {results} delivery results not delivered ({lost / results:.0%})"
               if results >= p.grant_revoke_min_results and lost >= p.grant_revoke_not_delivered_rate * results
               else None)
        if why is not None:
            grant.mark_revoking()
        store.set(GRANTS, key(app), grant.to_bytes())
        if why is None:
            return []
        return [GrantRevocation(app, f"sendgate revoked the unrestricted-outbound grant: {why} within "
                                     f"{p.grant_revoke_window_s // 3600} h of event time (policy grant_revoke_*)",
                                counts, ts)]

    def _sender_profile(self, e: ev.SenderProfile, store: Store) -> None:
        sender = self._sender(store, e.app, e.sender)
        sender.set_profile(e.registered_ts)
        self._put_sender(store, e.app, e.sender, sender)

    def _junk_report(self, e: ev.JunkReport, store: Store) -> list[Record]:
        """The reported text joins the junk index of every partition through the log (`JunkShare`),
        not here: a send on another partition must see it where its own log shows it."""
        p = self.policy
        share = JunkShare(e.event_id, e.app, recipient_hash(f"{e.app}\x1f{e.userkey}", self._secret), e.text, e.ts)
        sender = self._sender(store, e.app, e.sender)
        sender.record_signal("junk_report", e.ts, p)
        self._put_sender(store, e.app, e.sender, sender)
        return [share, *self._watch_grant(e.app, ("junk_reports",), e.ts, store)]

    def _junk_shared(self, e: ev.JunkShared, store: Store) -> None:
        store.report_junk(JunkReport(f"{e.app}\x1f{e.event_id}", self.sketcher.sketch(e.text), e.reporter, e.ts),
                          self.policy)

    def handle_in_one_log(self, event: ev.Event, store: Store, record_ts: int | None = None) -> list[Record]:
        """`handle` for a log of one partition simulated in one process (unit tests, benchmarks):
        a junk report's `junk_shared` event is appended right after it, and decided."""
        out = self.handle(event, store, record_ts)
        for record in out:
            if isinstance(record, JunkShare):
                self.handle(ev.decode_event(record.to_json(), record.ts), store, record_ts)
        return out

    def _delivery_status(self, e: ev.DeliveryStatus, store: Store) -> list[Record]:
        sender = self._sender(store, e.app, e.sender)
        sender.record_signal(e.status, e.ts, self.policy)
        self._put_sender(store, e.app, e.sender, sender)
        return self._watch_grant(e.app, ("results", "not_delivered") if e.status == "not_delivered" else ("results",),
                                 e.ts, store)

    def _contact(self, e: ev.Contact, store: Store) -> None:
        row = key(e.app, self.stored_userkey(e.userkey), e.network)
        if e.authorized:
            store.set(CONTACTS, row, b"1")
        else:
            store.delete(CONTACTS, row)

    def _tick(self, e: ev.Tick, store: Store) -> None:
        """A tick only moves event time forward; `handle` has already released what it made due."""

    # --- send requests -----------------------------------------------------------------------
    def _valid_until(self, e: ev.Send) -> int | None:
        """When a send stops being worth sending (`valid_for_s`, or the policy's default), or None."""
        valid_for_s = e.valid_for_s or self.policy.default_valid_for_s
        return e.ts + valid_for_s * 1000 if valid_for_s else None

    def _send(self, e: ev.Send, store: Store) -> list[Record]:
        p = self.policy

        def decide(outcome: str, reason: str, detail: str, **extra) -> Decision:
            return Decision(e.request_id, e.app, e.sender, e.userkey, e.network, outcome, reason, detail,
                            e.ts, **extra)

        held = store.get(PENDING, key(e.app, e.request_id))
        if held is not None:
            # The same request again (a producer retry): same decision, no second slot.
            return [Decision.from_dict(PendingRequest.from_bytes(held).decision)]
        user_id = self.stored_userkey(e.userkey)
        user = Userkey.from_bytes(store.get(USERKEYS, key(e.app, user_id)))
        if (e.network in p.contact_list_networks and not user.opted_out
                and store.get(CONTACTS, key(e.app, user_id, e.network)) is None):
            return [decide("rejected", "not_in_contacts",
                           f"network '{e.network}' delivers only to users who put the bot on their contact list "
                           f"(policy contact_list_networks), and this userkey has not: it has not written on "
                           f"{e.network} and no contact event authorizes it; ask the user to add the bot, then "
                           f"publish a contact event with authorized: true (or wait for the user to write)")]
        conv = Conversation.from_bytes(store.get(CONVERSATIONS, key(e.app, e.sender, user_id)))
        lapse_note = ""
        if lapsed(conv.last_ts, e.ts, self._horizon):
            lapse_note = (f"; its conversation with this sender lapsed: the user last wrote at {iso(conv.last_ts)}, "
                          f"more than conversation_horizon_days = {p.conversation_horizon_days} days before")
            conv = Conversation()
        answered = conv.replied(e.reply_to, e.ts, p.reply_window_s * 1000)
        if answered is not None and answered[2:] == [HELP_MARK]:
            # CTIA 5.1.3: HELP is answered whether or not the user is subscribed
            decision = decide("accepted", "help_reply",
                              f"answers the user's HELP message '{answered[0]}' from {(e.ts - answered[1]) // 1000} s "
                              f"ago; one help reply is allowed even after an opt-out, is never paced and gives no "
                              f"consent", reply=True)
            answered[2] = HELP_ANSWERED  # one answer per HELP: later sends meet the other rules
            store.set(CONVERSATIONS, key(e.app, e.sender, user_id), conv.to_bytes())
            return [decision, self._delivery(e, decision)]
        if user.opted_out:
            # only a send that says it answers the opt-out may confirm it: the gate cannot read a
            # text's intent, so it does not infer it from timing (an implicit reply)
            confirms, why_not = user.confirmation_check(e.reply_to, answered is not None, e.ts,
                                                        p.opt_out_confirmation_s * 1000)
            if confirms:
                user.confirmed = True
                store.set(USERKEYS, key(e.app, user_id), user.to_bytes())
                decision = decide("accepted", "opt_out_confirmation",
                                  f"the one confirmation allowed after the opt-out at {iso(user.changed_ts)} "
                                  f"({user.how}), within {p.opt_out_confirmation_s} s (FCC 47 CFR 64.1200(a)(12)); "
                                  f"it must carry no marketing, and nothing may follow it", reply=True)
                return [decision, self._delivery(e, decision)]
            return [decide("rejected", "opted_out",
                           f"userkey opted out at {iso(user.changed_ts)} ({user.how}); nothing may be sent "
                           f"to it until it opts in again (opt_in event or a keyword such as START){why_not}")]
        is_reply, why = conv.reply_check(e.reply_to, e.ts, p.reply_window_s * 1000)
        if is_reply:
            return self._reply(e, store, user_id, conv, why, decide)
        if conv.exists:
            basis = "conversation"
            because = f"userkey has written to sender '{e.sender}' (first at {iso(conv.first_ts)})"
        elif user.opted_in:
            basis, because = "opt_in", f"userkey opted in at {iso(user.changed_ts)} ({user.how})"
        elif (grant := AppGrant.from_bytes(store.get(GRANTS, key(e.app)))).allows(e.ts):
            basis, because = "unrestricted", "the app holds an unrestricted-outbound grant"
        else:
            note = f" ({why})" if why else ""
            if grant.revoked_by_sendgate:
                note += (f"; the app lost its unrestricted-outbound grant at {iso(grant.since_ts)}: {grant.reason}; "
                         f"an operator's app_policy event restores it")
            return [decide("rejected", "no_conversation",
                           f"userkey has not written to sender '{e.sender}' and has not opted in to app "
                           f"'{e.app}'{note}{lapse_note}; the user must message this sender first, or opt in "
                           f"(opt_in event or a keyword such as START)")]
        return self._burst(e, store, user_id, basis, because, decide)

    def _reply(self, e: ev.Send, store: Store, user_id: str, conv: Conversation, why: str, decide) -> list[Record]:
        """A reply: never paced, and counted towards the recipient's limits, but held when the
        user's messages look like another bot's auto-replies to the app's own (the loop guard)."""
        p = self.policy
        repeats, answered = conv.loop_counts
        deliver_at = e.ts
        # the app answered the repeats before this one (replies are counted from the second message on)
        if repeats > p.loop_repeats and answered >= p.loop_repeats - 1:
            counts = (f"the user sent the same text {repeats} times within {p.loop_window_s // 60} min and the app "
                      f"replied to {answered} of the repeats")
            if repeats >= p.loop_reject_repeats:
                return [decide("rejected", "loop_suspected",
                               f"{counts}: an auto-reply loop; from {p.loop_reject_repeats} repeats on replies to "
                               f"this user are refused until it writes something else", reply=True)]
            deliver_at = e.ts + p.loop_delay_s * 1000
            valid_until = self._valid_until(e)
            if valid_until is not None and deliver_at > valid_until:
                return [decide("rejected", "expired_before_slot",
                               f"{counts}, so replies wait {p.loop_delay_s} s; that slot {iso(deliver_at)} comes "
                               f"after the request stops being valid at {iso(valid_until)} (valid_for_s)",
                               reply=True, deliver_at=deliver_at)]
            decision = decide("delayed", "loop_suspected",
                              f"{counts}: a possible auto-reply loop, so the reply waits {p.loop_delay_s} s "
                              f"(loop_delay_s); a different message from the user ends it", reply=True,
                              deliver_at=deliver_at)
        else:
            decision = decide("accepted", "reply", f"reply: {why}; replies are exempt from burst pacing",
                              reply=True)
        if conv.loop_answered():
            store.set(CONVERSATIONS, key(e.app, e.sender, user_id), conv.to_bytes())
        if p.recipient_limits:
            sends = RecipientSends.from_bytes(store.get(RECIPIENTS, key(e.app, user_id)))
            sends.record(deliver_at, e.ts, p.recipient_limits)
            store.set(RECIPIENTS, key(e.app, user_id), sends.to_bytes())
        if decision.outcome == "delayed":
            self._hold(e, decision, store)
            return [decision]
        return [decision, self._delivery(e, decision)]

    # --- retention (models/retention.py) --------------------------------------------------------
    def _index_lapse(self, app: str, sender: str, user_id: str, day: int, horizon: int, store: Store) -> None:
        """List a conversation under the day of its last inbound, where the sweep will look."""
        self._list_by_day(LAPSES_BY_DAY, app, (sender, user_id), day, horizon, store)

    def _list_by_day(self, tables: "DayLists", app: str, entry: tuple[str, str], day: int, after_ms: int,
                     store: Store) -> None:
        """Append `entry` to the app's bucket of `day` in `tables`; the first day listed sets when
        the app's clock next sweeps them (`after_ms` past the day's end)."""
        index = LapseIndex.from_bytes(store.get(tables.index, key(app)))
        was_empty = not index.days
        chunks = index.chunk_count(day)
        bucket = LapseBucket.from_bytes(store.get(tables.buckets, key(app, str(day), str(chunks - 1)))) \
            if chunks else None
        if bucket is None or bucket.full:
            chunk, bucket = index.open_chunk(day), LapseBucket()
            store.set(tables.index, key(app), index.to_bytes())
        else:
            chunk = chunks - 1
        bucket.add(*entry)
        store.set(tables.buckets, key(app, str(day), str(chunk)), bucket.to_bytes())
        if was_empty:  # days are listed in clock order: only a first one moves the next sweep
            clock = AppClock.from_bytes(store.get(CLOCKS, key(app)))
            setattr(clock, tables.clock_field, index.sweep_at(after_ms))
            store.set(CLOCKS, key(app), clock.to_bytes())

    def _sweep_by_day(self, tables: "DayLists", app: str, ts: int, after_ms: int, store: Store,
                      forget: Callable[[str, str], None]) -> int:
        """Call `forget` on each entry of the app's oldest due bucket in `tables`, then drop the
        bucket; returns when the next sweep is due (0: nothing listed)."""
        index = LapseIndex.from_bytes(store.get(tables.index, key(app)))
        if not index.days or ts < index.sweep_at(after_ms):  # (the setting was raised since it was due)
            return index.sweep_at(after_ms)
        day, chunk = index.take_last_chunk()
        bucket_key = key(app, str(day), str(chunk))
        for first, second in LapseBucket.from_bytes(store.get(tables.buckets, bucket_key)).entries:
            forget(first, second)
        store.delete(tables.buckets, bucket_key)
        if index.days:
            store.set(tables.index, key(app), index.to_bytes())
        else:
            store.delete(tables.index, key(app))
        return index.sweep_at(after_ms)

    def _sweep_lapsed(self, app: str, ts: int, horizon: int, store: Store) -> int:
        """Remove the lapsed conversations of one bucket row; returns when the next sweep is due."""
        def forget(sender: str, user_id: str) -> None:
            conv_key = key(app, sender, user_id)
            raw = store.get(CONVERSATIONS, conv_key)
            if raw is not None and lapsed(Conversation.from_bytes(raw).last_ts, ts, horizon):
                store.delete(CONVERSATIONS, conv_key)  # else it wrote again, and is listed under a later day
        return self._sweep_by_day(LAPSES_BY_DAY, app, ts, horizon, store, forget)

    # --- what the app said before (models/memory.py) ----------------------------------------------
    def _said_before(self, e: ev.Event, at: int, store: Store) -> list[Record] | None:
        """The answer to an event the app sent within request_memory_s: a send's first decision
        again (or a refusal of its id reused for another request), nothing for a repeated inbound
        or consent event; None for an event not seen within the memory."""
        said = self._memory_key(e)
        if said is None:
            return None
        kind, id_, digest = said
        raw = store.get(SEEN, key(e.app, kind, id_))
        if raw is None:
            return None
        if kind == EVENT:
            seen = SeenEvent.from_bytes(raw)
            # the same id with other content is another event (an id clash, or one made to suppress it)
            return [] if at - seen.ts <= self._memory and seen.digest == digest else None
        answered = AnsweredRequest.from_bytes(raw)
        if at - answered.ts > self._memory:
            return None
        if answered.digest == digest:
            return [answered.again(e.request_id, e.app, e.sender, e.userkey, e.network)]
        return [Decision(e.request_id, e.app, e.sender, e.userkey, e.network, "rejected", "request_id_reused",
                         f"request_id '{e.request_id}' was answered at {iso(answered.ts)} ({answered.answer[0]}/"
                         f"{answered.answer[1]}) for another request (another sender, userkey, network, text or "
                         f"reply_to); a retry repeats its request exactly, a new request needs a new request_id "
                         f"(ids are remembered for request_memory_s = {self.policy.request_memory_s} s)", at)]

    def _remember(self, e: ev.Event, decided: list[Record], at: int, store: Store) -> None:
        said = self._memory_key(e)
        if said is None:
            return
        kind, id_, digest = said
        if kind == REQUEST:
            first = next(r for r in decided if isinstance(r, Decision) and r.request_id == e.request_id)
            row = AnsweredRequest.of(digest, first).to_bytes()
        else:
            row = SeenEvent(digest, at).to_bytes()
        store.set(SEEN, key(e.app, kind, id_), row)
        self._list_by_day(SEEN_BY_DAY, e.app, (kind, id_), at // DAY_MS, self._memory, store)

    def _memory_key(self, e: ev.Event) -> tuple[str, str, str] | None:
        """(kind, id, digest of what the event says) of an event the memory keeps; None otherwise."""
        if not self._memory:
            return None
        if isinstance(e, ev.Send):
            return REQUEST, e.request_id, said_digest(e.sender, self.stored_userkey(e.userkey), e.network, e.text,
                                                       e.reply_to or "")
        if isinstance(e, ev.Inbound):
            return EVENT, e.event_id, said_digest("inbound", e.sender, self.stored_userkey(e.userkey), e.network,
                                                  e.text)
        if isinstance(e, ev.ConsentChange):
            return EVENT, e.event_id, said_digest(ev.event_type(e), self.stored_userkey(e.userkey), e.source)
        return None

    def _forget_seen(self, app: str, ts: int, store: Store) -> int:
        """Remove one bucket's remembered requests and events; returns when the next sweep is due."""
        def forget(kind: str, id_: str) -> None:
            store.delete(SEEN, key(app, kind, id_))
        return self._sweep_by_day(SEEN_BY_DAY, app, ts, self._memory, store, forget)

    def _burst(self, e: ev.Send, store: Store, user_id: str, basis: str, because: str, decide) -> list[Record]:
        p = self.policy
        recent = None
        if p.duplicate_text_limit:  # a runaway job repeating itself: refused before it takes any slot
            digest = text_digest(e.text)
            recent = RecentTexts.from_bytes(store.get(TEXTS, key(e.app, user_id)))
            times = recent.repeats(digest, e.ts, p.duplicate_text_window_s)
            if len(times) >= p.duplicate_text_limit:
                # when enough of the repeats have left the window for one more to fit
                retry = math.ceil((times[len(times) - p.duplicate_text_limit] + p.duplicate_text_window_s * 1000
                                   - e.ts) / 1000)
                return [decide("rejected", "duplicate_text",
                               f"the same text already went to this userkey {len(times)} times since "
                               f"{iso(times[0])}; at most {p.duplicate_text_limit} in "
                               f"{p.duplicate_text_window_s // 60} min (policy duplicate_text_limit), so this "
                               f"looks like a job repeating itself; retry in {retry} s if it is meant",
                               retry_after_s=retry)]
        valid_until = self._valid_until(e)
        limits = p.recipient_limits
        sends = RecipientSends.from_bytes(store.get(RECIPIENTS, key(e.app, user_id))) if limits else None
        if sends is not None:  # refused by the recipient's limits alone: the text takes no burst slot
            at, window = sends.slot(e.ts, limits)
            refused = self._past_limits(e, at, window, valid_until, decide)
            if refused is not None:
                return [refused]
        sketch = self.sketcher.sketch(e.text)
        found = store.junk.match(sketch, p.similarity_threshold)
        junk = JunkMatch(found[2], len(found[1].reporters)) if found else None
        recipient = recipient_hash(e.userkey, self._secret)
        sender = self._sender(store, e.app, e.sender)
        v = sender.decide(e.ts, recipient, sketch, p, junk, valid_until)
        counted = [(e.sender, sender)]
        if v.outcome != "rejected":  # the same rules over all the app's sender names: the stricter holds
            whole = self._sender(store, e.app, WHOLE_APP)
            whole.whole_app = True
            w = whole.decide(e.ts, recipient, sketch, p, junk, valid_until)
            counted.append((WHOLE_APP, whole))
            if w.outcome == "rejected" or (w.deliver_at or e.ts) > (v.deliver_at or e.ts):
                v = dataclasses.replace(w, cluster_id=f"app-{w.cluster_id}",
                                        detail=f"counted across all of the app's sender names: {w.detail}")
        decision = self._paced(e, v, sends, basis, because, valid_until, decide)
        for name, state in counted:
            if decision.outcome == "rejected":
                state.undo()  # a refused send takes no slot in either count
            self._put_sender(store, e.app, name, state)
        if sends is not None and decision.outcome != "rejected":
            sends.record(decision.deliver_at or e.ts, e.ts, limits)
            store.set(RECIPIENTS, key(e.app, user_id), sends.to_bytes())
        if recent is not None and decision.outcome != "rejected":
            recent.record(digest, e.ts, p.duplicate_text_window_s, p.duplicate_text_limit)
            store.set(TEXTS, key(e.app, user_id), recent.to_bytes())
        if decision.outcome == "accepted":
            return [decision, self._delivery(e, decision)]
        if decision.reason in ("burst_limit", "junk_similar") and decision.outcome == "rejected":
            return [decision, *self._watch_grant(e.app, ("refused_blasts",), e.ts, store)]
        if decision.outcome == "delayed":
            self._hold(e, decision, store)
        return [decision]

    def _paced(self, e: ev.Send, v: BurstVerdict, sends: RecipientSends | None, basis: str, because: str, valid_until: int | None,
               decide) -> Decision:
        """The decision from the burst verdict and, with recipient_limits, the recipient's windows."""
        burst = dict(similarity=v.similarity, similar_recipients=v.similar_recipients, cluster_id=v.cluster_id,
                     deliver_at=v.deliver_at, retry_after_s=v.retry_after_s)
        if v.outcome == "accepted" and v.reason == "burst_free":
            decision = decide("accepted", basis, f"{because}; {v.detail}", **burst)
        else:
            decision = decide(v.outcome, v.reason, v.detail, **burst)
        if sends is not None and v.outcome != "rejected":
            at, window = sends.slot(v.deliver_at or e.ts, self.policy.recipient_limits)
            if window is not None:  # the text's own slot is free, the recipient's limits are not
                refused = self._past_limits(e, at, window, valid_until, decide)
                if refused is not None:
                    return refused
                decision = decide("delayed", "recipient_limit",
                                  f"{self._limit_text(window)}: deliver at {iso(at)}; {decision.detail}",
                                  **{**burst, "deliver_at": at})
        return decision

    @staticmethod
    def _limit_text(window: tuple[int, int]) -> str:
        count, window_s = window
        span = f"{window_s // 3600} h" if window_s % 3600 == 0 else f"{window_s // 60} min" if window_s % 60 == 0 \
            else f"{window_s} s"
        return f"at most {count} send(s) to this userkey in any {span} (policy recipient_limits)"

    def _past_limits(self, e: ev.Send, at: int, window: tuple[int, int] | None, valid_until: int | None,
                     decide) -> Decision | None:
        """The refusal of a send whose recipient's limits put it at `at`, or None if it may wait."""
        if window is None:
            return None
        wait_ms, max_ms = at - e.ts, self.policy.max_delay_s * 1000
        if valid_until is not None and at > valid_until:
            return decide("rejected", "expired_before_slot",
                          f"{self._limit_text(window)}; its slot {iso(at)} comes after the request stops being "
                          f"valid at {iso(valid_until)} (valid_for_s)", deliver_at=at)
        if wait_ms > max_ms:
            retry = math.ceil((wait_ms - max_ms) / 1000)
            return decide("rejected", "recipient_limit",
                          f"{self._limit_text(window)}; the next free slot {iso(at)} is more than "
                          f"{self.policy.max_delay_s // 3600} h away; retry in {retry} s", retry_after_s=retry)
        return None

    def _delivery(self, e: ev.Send, decision: Decision) -> Delivery:
        return Delivery(e.request_id, e.app, e.sender, e.userkey, e.network, e.text, e.reply_to, decision.ts,
                        decision.decision_id)

    # --- delayed requests --------------------------------------------------------------------
    def _hold(self, e: ev.Send, decision: Decision, store: Store) -> None:
        valid_until = self._valid_until(e)  # resolved now: a later policy change does not move it
        if valid_until is not None and e.valid_for_s is None:
            e = dataclasses.replace(e, valid_for_s=(valid_until - e.ts) // 1000)
        held = PendingRequest(e, decision.deliver_at, decision.cluster_id, decision.to_dict())
        store.set(PENDING, key(e.app, e.request_id), held.to_bytes())
        self._schedule(e.app, e.request_id, decision.deliver_at, store)

    def _schedule(self, app: str, request_id: str, deliver_at: int, store: Store) -> None:
        """Put a pending request in its app's release schedule."""
        raw = store.get(SCHEDULES, key(app))
        schedule = ReleaseSchedule.from_bytes(raw)
        minute = schedule.add(deliver_at)  # adds the minute only if missing
        chunk = schedule.chunk_count(minute) - 1  # the minute's last bucket row takes new entries
        bucket = DueBucket.from_bytes(store.get(DUE, due_key(app, minute, chunk)))
        if [deliver_at, request_id] in bucket.entries:
            return
        if len(bucket.entries) >= DUE_CHUNK:
            chunk, bucket = schedule.new_chunk(minute), DueBucket()
        bucket.entries.append([deliver_at, request_id])
        store.set(DUE, due_key(app, minute, chunk), bucket.to_bytes())
        schedule.held += 1
        store.set(SCHEDULES, key(app), schedule.to_bytes())

    def _release_due(self, app: str, ts: int, store: Store) -> list[Record]:
        schedule = ReleaseSchedule.from_bytes(store.get(SCHEDULES, key(app)))
        if not schedule.is_due(ts):
            return []
        due: list[list] = []
        waiting: list[list] = []
        while schedule.minutes and schedule.minutes[0] <= ts // MINUTE_MS:
            minute = schedule.minutes[0]
            for chunk in range(schedule.chunks[0]):
                bucket_key = due_key(app, minute, chunk)
                raw = store.get(DUE, bucket_key)
                if raw is None:  # emptied by an earlier release; the minute keeps its numbering
                    continue
                now, later = DueBucket.from_bytes(raw).split(ts)
                if now:
                    due.extend(now)
                    if later:
                        store.set(DUE, bucket_key, DueBucket(later).to_bytes())
                    else:
                        store.delete(DUE, bucket_key)
                waiting.extend(later)
            if waiting:
                break
            schedule.pop_first()
        if not waiting and schedule.minutes:
            waiting = due_entries(store.get, app, schedule, schedule.minutes[0])
        schedule.next_due = min(e[0] for e in waiting) if waiting else None
        out: list[Record] = []
        for deliver_at, request_id in sorted(due):
            pending_key = key(app, request_id)
            raw = store.get(PENDING, pending_key)
            if raw is None:  # cancelled meanwhile
                continue
            store.delete(PENDING, pending_key)
            schedule.held = max(0, schedule.held - 1)
            out.extend(self._release(PendingRequest.from_bytes(raw), ts, store))
        store.set(SCHEDULES, key(app), schedule.to_bytes())
        return out

    def _release(self, pending: PendingRequest, ts: int, store: Store) -> list[Record]:
        s = pending.send
        valid_until = s.ts + s.valid_for_s * 1000 if s.valid_for_s else None  # as admitted (`_hold`)
        if valid_until is not None and ts > valid_until:
            self._unschedule_recipient(s, pending.deliver_at, store)
            # (its slot was before valid_until: event time reached it late, e.g. after an outage)
            return [Decision(s.request_id, s.app, s.sender, s.userkey, s.network, "cancelled", "expired",
                             f"the request stopped being valid at {iso(valid_until)} (valid_for_s) while it waited "
                             f"for its slot {iso(pending.deliver_at)}; event time reached the slot only at "
                             f"{iso(ts)}, so it was not delivered", ts, deliver_at=pending.deliver_at,
                             cluster_id=pending.cluster_id)]
        user = Userkey.from_bytes(store.get(USERKEYS, key(s.app, self.stored_userkey(s.userkey))))
        if user.opted_out:
            self._unschedule_recipient(s, pending.deliver_at, store)
            return [Decision(s.request_id, s.app, s.sender, s.userkey, s.network, "cancelled", "opted_out",
                             f"userkey opted out at {iso(user.changed_ts)} ({user.how}) while the request waited "
                             f"for its slot; it was not delivered", ts, cluster_id=pending.cluster_id)]
        decision = Decision(s.request_id, s.app, s.sender, s.userkey, s.network, "released", "slot_reached",
                            f"paced slot {iso(pending.deliver_at)} reached; delivered", ts,
                            deliver_at=pending.deliver_at, cluster_id=pending.cluster_id)
        return [decision, self._delivery(s, decision)]

    def _unschedule_recipient(self, s: ev.Send, deliver_at: int, store: Store) -> None:
        """A held send that will not go out stops counting against its recipient's limits."""
        if not self.policy.recipient_limits:
            return
        row = key(s.app, self.stored_userkey(s.userkey))
        raw = store.get(RECIPIENTS, row)
        if raw is not None:
            sends = RecipientSends.from_bytes(raw)
            sends.forget(deliver_at)
            store.set(RECIPIENTS, row, sends.to_bytes())

    def _cancel(self, e: ev.Cancel, store: Store) -> list[Record]:
        pending_key = key(e.app, e.request_id)
        raw = store.get(PENDING, pending_key)
        if raw is None:
            return [Decision(e.request_id, e.app, "", "", "", "rejected", "not_pending",
                             f"cancel of request '{e.request_id}': it is not pending (unknown, already released, "
                             f"or already cancelled), so nothing was cancelled", e.ts)]
        store.delete(PENDING, pending_key)  # its schedule entry is skipped when it comes due
        schedule = ReleaseSchedule.from_bytes(store.get(SCHEDULES, key(e.app)))
        schedule.held = max(0, schedule.held - 1)
        store.set(SCHEDULES, key(e.app), schedule.to_bytes())
        held = PendingRequest.from_bytes(raw)
        s = held.send
        self._unschedule_recipient(s, held.deliver_at, store)
        return [Decision(s.request_id, s.app, s.sender, s.userkey, s.network, "cancelled", "cancelled_by_app",
                         "the app cancelled this pending request; it will not be delivered", e.ts)]

    def _sender(self, store: Store, app: str, sender: str) -> SenderState:
        """The sender's state, decoded. The last states written stay decoded: an entry is used
        only while the stored head row is still the bytes it was written as (its stamp vouches
        for the cluster rows), and is taken out while in use, so a transition that fails half-way
        (its rows never written) leaves nothing stale behind."""
        row_key = key(app, sender)
        raw = store.get(SENDERS, row_key)
        hit = self._decoded_senders.pop(row_key, None)
        if hit is not None and raw is not None and hit[0] == raw:
            return hit[1]
        return SenderState.from_rows(raw, lambda cid: store.get(CLUSTERS, key(app, sender, cid)),
                                     lambda cid: store.get(SKETCHES, key(app, sender, cid)), self.policy.num_perm)

    def _put_sender(self, store: Store, app: str, sender: str, state: SenderState) -> None:
        row_key = key(app, sender)
        head, clusters, sketches = state.to_rows()
        for table, rows in ((CLUSTERS, clusters), (SKETCHES, sketches)):
            for cid, raw in rows.items():
                if raw is None:
                    store.delete(table, key(app, sender, cid))
                else:
                    store.set(table, key(app, sender, cid), raw)
        store.set(SENDERS, row_key, head)
        decoded = self._decoded_senders
        decoded[row_key] = (head, state)
        if len(decoded) > DECODED_SENDERS:
            del decoded[next(iter(decoded))]  # the least recently written

    _HANDLERS = {
        ev.Inbound: _inbound, ev.OptIn: _opt_change, ev.OptOut: _opt_change, ev.Send: _send,
        ev.AppPolicy: _app_policy, ev.SenderProfile: _sender_profile, ev.JunkReport: _junk_report,
        ev.DeliveryStatus: _delivery_status, ev.Contact: _contact, ev.Tick: _tick, ev.Cancel: _cancel,
    }
