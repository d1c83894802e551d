"""The tables the gate keeps, how their keys are made, and the stores that hold them.

`Gate.handle` reads and writes rows through a `Store`: the worker's Faust tables
(streams/worker/checkpoint.py), a `MemoryStore` in unit tests and benchmarks, an `OverlayStore`
for a what-if check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..junk import JunkIndex, JunkReport
from ..pending import DueBucket, ReleaseSchedule
from ..policy import Policy

# Tables (name -> key): one small row per key, never one row per app holding all its userkeys.
USERKEYS = "userkeys"  # (app, userkey)          -> Userkey
CONVERSATIONS = "conversations"  # (app, sender, userkey)  -> Conversation
GRANTS = "grants"  # app                     -> AppGrant
SENDERS = "senders"  # (app, sender)           -> SenderState's head (profile, risk, cluster ids)
CLUSTERS = "clusters"  # (app, sender, cluster)  -> one BurstCluster of the sender
SKETCHES = "sketches"  # (app, sender, cluster)  -> the cluster's sketch (written once)
PENDING = "pending"  # (app, request_id)       -> PendingRequest
SCHEDULES = "schedules"  # app                     -> ReleaseSchedule
DUE = "due"  # (app, minute[, chunk])  -> DueBucket (<= DUE_CHUNK entries)
CLOCKS = "clocks"  # app                     -> AppClock
LAPSE_DAYS = "lapse_days"  # app                     -> LapseIndex (models/retention.py)
LAPSES = "lapses"  # (app, day, chunk)       -> LapseBucket (<= LAPSE_CHUNK conversations)
RECIPIENTS = "recipients"  # (app, userkey)          -> RecipientSends (only with recipient_limits)
CONTACTS = "contacts"  # (app, userkey, network) -> b"1": the bot is on the user's contact list there
SEEN = "seen"  # (app, kind, id)         -> AnsweredRequest | SeenEvent (models/memory.py)
SEEN_DAYS = "seen_days"  # app                     -> LapseIndex of the days `seen` rows were written
SEEN_LISTS = "seen_lists"  # (app, day, chunk)       -> LapseBucket of (kind, id)
TEXTS = "texts"  # (app, userkey)          -> RecentTexts (the texts sent to it lately)
JUNK = "junk"  # template id             -> JunkTemplate (each partition's own index)
PLACES = "places"  # (app, userkey)          -> RecipientPlace (a recipient_profile event's)
SUBJECTS = "subjects"  # (app, userkey)          -> SubjectSends (promotional sends by subject)
LAST_SENT = "last_sent"  # (app, userkey)          -> LastSent (with opt_out_scope "category")
TABLES = (
    USERKEYS,
    CONVERSATIONS,
    GRANTS,
    SENDERS,
    CLUSTERS,
    SKETCHES,
    PENDING,
    SCHEDULES,
    DUE,
    CLOCKS,
    LAPSE_DAYS,
    LAPSES,
    RECIPIENTS,
    CONTACTS,
    SEEN,
    SEEN_DAYS,
    SEEN_LISTS,
    TEXTS,
    JUNK,
    PLACES,
    SUBJECTS,
    LAST_SENT,
)


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


def due_entries(
    get: Callable[[str, bytes], bytes | None], app: str, schedule: ReleaseSchedule, minute: int
) -> list[list]:
    """Every [deliver_at, request_id] of a minute of the app's schedule; `get` reads a row."""
    return [
        entry
        for chunk in range(schedule.chunk_count(minute))
        for entry in DueBucket.from_bytes(get(DUE, due_key(app, minute, chunk))).entries
    ]


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
        changed = self.junk.apply(
            report, policy.similarity_threshold, policy.junk_reject_reporters, policy.max_junk_templates
        )
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
