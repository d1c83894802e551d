"""The tables the gate keeps, how their keys are made, and the stores that hold them.

Each table is declared once here (`Table`: its name, its key's parts, its row class), and
`TABLES` lists them: the gate reads and writes rows of them (through an event's unit of work,
unit.py), and every `Store` keeps rows by them: the worker's Faust table (streams/worker/checkpoint.py, one key prefix per table, which
rebuild writes too), a `MemoryStore` in unit tests, benchmarks and replay, an `OverlayStore` for
a what-if check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Protocol, TypeVar

from ..categories import LastSent
from ..clock import AppClock
from ..consent import AppGrant, Conversation, Userkey
from ..controls import RecentTexts, RecipientSends
from ..junk import JunkIndex, JunkReport, JunkTemplate
from ..pending import DueBucket, PendingRequest, ReleaseSchedule
from ..policy import Policy
from ..quiet_hours import RecipientPlace
from ..retention import LapseBucket, LapseIndex
from ..subjects import SubjectSends

R = TypeVar("R")


class RowCodec(Protocol[R]):
    """A row class: its stored bytes and back (models/rows.py)."""

    def from_bytes(self, raw: bytes, /) -> R | None: ...
    def to_bytes(self, row: R, /) -> bytes: ...


class Raw:
    """The codec of rows kept as bytes: read whole by another (a sender's head, clusters and
    sketches: `SenderState.from_rows`), of two kinds told apart by their key (`seen`), or whose
    presence is the value (`contacts`)."""

    @staticmethod
    def from_bytes(raw: bytes) -> bytes:
        return raw

    @staticmethod
    def to_bytes(row: bytes) -> bytes:
        return row


@dataclass(frozen=True, eq=False)  # eq=False: a table is itself, hashed by identity (every row access)
class Table(Generic[R]):
    """One table: its name, the parts its keys are made of, and its row class."""

    name: str
    parts: tuple[str, ...]  # the key's ids, in order, joined by `key`
    row: RowCodec[R]
    # the row class's own functions, found once (every row read and write): None encodes a Raw row
    decode: Callable[[bytes], R] = field(init=False, repr=False)
    encode: Callable[[R], bytes] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode", self.row.from_bytes)
        object.__setattr__(self, "encode", None if self.row is Raw else self.row.to_bytes)

    def __str__(self) -> str:
        return self.name

    def get(self, store: Store, *parts: str) -> R | None:
        """The row as `store` holds it, decoded; None if there is none. (An event reads and writes
        rows through its unit of work, models/gate/unit.py.)"""
        raw = store.get(self, key(*parts))
        return None if raw is None else self.row.from_bytes(raw)


# One small row per key, never one row per app holding all its userkeys.
USERKEYS = Table("userkeys", ("app", "userkey"), Userkey)
CONVERSATIONS = Table("conversations", ("app", "sender", "userkey"), Conversation)
GRANTS = Table("grants", ("app",), AppGrant)
SENDERS = Table("senders", ("app", "sender"), Raw)  # SenderState's head (profile, risk, cluster ids)
CLUSTERS = Table("clusters", ("app", "sender", "cluster"), Raw)  # one BurstCluster of the sender
SKETCHES = Table("sketches", ("app", "sender", "cluster"), Raw)  # the cluster's sketch (written once)
PENDING = Table("pending", ("app", "request_id"), PendingRequest)
SCHEDULES = Table("schedules", ("app",), ReleaseSchedule)
DUE = Table("due", ("app", "minute", "chunk"), DueBucket)  # <= DUE_CHUNK entries; chunk 0 has no part: `due_parts`
CLOCKS = Table("clocks", ("app",), AppClock)
LAPSE_DAYS = Table("lapse_days", ("app",), LapseIndex)  # models/retention.py
LAPSES = Table("lapses", ("app", "day", "chunk"), LapseBucket)  # <= LAPSE_CHUNK conversations
RECIPIENTS = Table("recipients", ("app", "userkey"), RecipientSends)  # only with recipient_limits
CONTACTS = Table("contacts", ("app", "userkey", "network"), Raw)  # b"1": the bot is on the user's contact list there
SEEN = Table("seen", ("app", "kind", "id"), Raw)  # AnsweredRequest | SeenEvent, by kind (models/memory.py)
SEEN_DAYS = Table("seen_days", ("app",), LapseIndex)  # the days `seen` rows were written
SEEN_LISTS = Table("seen_lists", ("app", "day", "chunk"), LapseBucket)  # of (kind, id)
TEXTS = Table("texts", ("app", "userkey"), RecentTexts)  # the texts sent to it lately
JUNK = Table("junk", ("partition", "template"), JunkTemplate)  # each partition's own index
PLACES = Table("places", ("app", "userkey"), RecipientPlace)  # a recipient_profile event's
SUBJECTS = Table("subjects", ("app", "userkey"), SubjectSends)  # promotional sends by subject
LAST_SENT = Table("last_sent", ("app", "userkey"), LastSent)  # with opt_out_scope "category"
TABLES: tuple[Table, ...] = (
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

    index: Table[LapseIndex]
    buckets: Table[LapseBucket]  # of two-part entries
    clock_field: str  # the AppClock field that says when the next bucket is due


LAPSES_BY_DAY = DayLists(LAPSE_DAYS, LAPSES, "sweep_at")  # conversations, by the day of their last inbound
SEEN_BY_DAY = DayLists(SEEN_DAYS, SEEN_LISTS, "forget_at")  # remembered requests and events, by their day


def key(*parts: str) -> bytes:
    # Ids cannot contain control characters (see events.py), so \x1f separates them unambiguously.
    return "\x1f".join(parts).encode()


def due_parts(app: str, minute: int, chunk: int) -> tuple[str, ...]:
    """The key of the DueBucket row of one chunk of a minute (chunk 0 keeps the key of one bucket a minute)."""
    return (app, str(minute)) if chunk == 0 else (app, str(minute), str(chunk))


def due_entries(
    get: Callable[[Table, bytes], bytes | None], app: str, schedule: ReleaseSchedule, minute: int
) -> list[list]:
    """Every [deliver_at, request_id] of a minute of the app's schedule; `get` reads a row."""
    return [
        entry
        for chunk in range(schedule.chunk_count(minute))
        for entry in DueBucket.from_bytes(get(DUE, key(*due_parts(app, minute, chunk)))).entries
    ]


class Store(Protocol):
    # The junk index of the partition being decided: built by the `junk_shared` events of that
    # partition's log alone (models/junk.py), so that a replay reading the partitions in another
    # order matches each send against the same index.
    junk: JunkIndex

    def get(self, table: Table, key: bytes) -> bytes | None: ...
    def set(self, table: Table, key: bytes, value: bytes) -> None: ...
    def delete(self, table: Table, key: bytes) -> None: ...
    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        """Count a shared junk report in this partition's index, and write the rows it changed."""


class MemoryStore:
    """A Store over plain dicts: for unit tests, in-process benchmarks, replay and policy
    experiments. `partition` is the partition of the log being decided (replay sets it per record):
    each has its own junk index, as in the worker."""

    def __init__(self) -> None:
        self.tables: dict[Table, dict[bytes, bytes]] = {table: {} for table in TABLES}
        self.partition = 0
        self._junk: dict[int, JunkIndex] = {}

    @property
    def junk(self) -> JunkIndex:
        index = self._junk.get(self.partition)
        if index is None:
            index = self._junk[self.partition] = JunkIndex()
        return index

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.tables[table].get(key)

    def set(self, table: Table, key: bytes, value: bytes) -> None:
        # Kept as it is: the gate's rows are exact-size bytes (`Row.pack` concatenates), so no copy
        # (orjson's own output keeps a ~4 KB buffer however short the JSON).
        self.tables[table][key] = value

    def delete(self, table: Table, key: bytes) -> None:
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

    def __init__(self, read: Callable[[Table, bytes], bytes | None], junk: JunkIndex) -> None:
        self.read = read
        self.junk = junk
        self.rows: dict[tuple[Table, bytes], bytes | None] = {}

    def get(self, table: Table, key: bytes) -> bytes | None:
        row = (table, key)
        return self.rows[row] if row in self.rows else self.read(table, key)

    def set(self, table: Table, key: bytes, value: bytes) -> None:
        self.rows[(table, key)] = value

    def delete(self, table: Table, key: bytes) -> None:
        self.rows[(table, key)] = None

    def report_junk(self, report: JunkReport, policy: Policy) -> None:
        """A check decides sends only."""
