r"""Rows that can evolve: every stored row says its version, and reading upcasts older versions.

A row kind (a class that mixes in `Row`) declares `row_version`, the version its rows are written
in, and for every older version N a static `upcast_vN_vM(fields) -> fields` (M = N + 1), as the
eventsourcing library declares `class_version` and `upcast_vX_vY` on its aggregates. `pack` writes
the current version with the fields; `unpack` reads a row's version, applies the upcasts from it
on, in order, and returns the fields as the current version has them. A row written by any
earlier build so decodes into today's object, and its next write is of the current version.
Changing a row's fields is: bump `row_version`, add the upcast, add the old form to
tests/unit/test_rows.py.

Stored form: one byte, the version as an ASCII character from `0` (versions 1-9 are the digits,
then `:` for 10 ... `Z` for 42), then the body, the JSON array of the fields: a Userkey is
`2[true,false,1700000000000,"opt_out event","",false]`. (A LapseBucket's body is its entries as
bytes, `1\x1esender\x1fuserkey...`, which that row already was.) One byte, so that reading the
version is one comparison on every read and costs one byte a row.

How old forms are told apart. Rows written before rows carried a version ("untagged") are bare
JSON arrays: their first byte is `[`, which is never a version (it would be 43). The first byte
alone so tells the two apart, for every kind and whatever its first field holds; a version put
*inside* the array could not be told from an untagged Conversation or BurstCluster row, whose
first field is an int too. Which version an untagged row is, its kind says (`untagged`), telling
apart only its own untagged forms, which no build writes any more (their list is closed):
- by the number of fields (`by_field_count`), for kinds whose fields were only ever appended:
  Userkey (4 or 6), Conversation (3, 4 or 5), AppGrant (3 or 5), PendingRequest (11 or 12: the
  send's `valid_for_s` was written only when set), BurstCluster (6), JunkTemplate (3);
- by the version the old row wrote first in its array (`version_first`): AppClock, RecipientSends,
  JunkReport, LapseIndex;
- by a shape of its own: the SenderState head (v1: 5 fields then a newline and the raw sketches,
  or 6 with the sketches in base64; v2 and v3: 7, the version first), ReleaseSchedule (v1 begins
  with its list of minutes, v2 with the version), DueBucket (always its list of entries: v1).

A version newer than the build's raises `NewerRow`, a ValueError naming the kind and both
versions: a newer build wrote the row, and this one must not decide over it (the worker stalls on
it rather than dead-lettering the event).

Not versioned: a sketch row (raw uint32, its length set by the policy's num_perm; a sketch of
another kind could not be upcast, only recomputed from texts long gone) and a contacts row (its
presence is the value, `1`).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import orjson

ZERO = 0x30  # b"0": a version's byte is ZERO + version
UNTAGGED = 0x5B  # b"[": the first byte of a row from before versions


class NewerRow(ValueError):
    """A row written by a newer build, of a version this one does not know."""


class Row:
    """Mixed into each stored row kind; see the module docstring."""

    __slots__ = ()
    row_version: ClassVar[int] = 1
    # the body of the fields and back; a kind whose fields are already bytes replaces both
    dump: ClassVar[Callable[[Any], bytes]] = staticmethod(orjson.dumps)
    load: ClassVar[Callable[[bytes], Any]] = staticmethod(orjson.loads)
    _byte: ClassVar[int]  # the current version's byte
    _tag: ClassVar[bytes]
    _upcasts: ClassVar[tuple[Callable[[Any], Any], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not 1 <= cls.row_version < UNTAGGED - ZERO:
            raise TypeError(f"{cls.__name__}.row_version {cls.row_version}: one byte holds versions 1 to 42")
        cls._byte = ZERO + cls.row_version
        cls._tag = bytes([cls._byte])
        # every step up to the current version, found now: a missing one fails the import, not a read
        cls._upcasts = tuple(getattr(cls, f"upcast_v{v}_v{v + 1}") for v in range(1, cls.row_version))

    @classmethod
    def pack(cls, fields: Any) -> bytes:
        """The stored row: the current version, then the fields. (A new bytes of the row's own
        size: orjson's output keeps a ~4 KB buffer however short the JSON, which made a million
        small rows in a MemoryStore cost 8 GB instead of 0.4 GB.)"""
        return cls._tag + cls.dump(fields)

    @classmethod
    def unpack(cls, raw: bytes) -> Any:
        """The fields of a stored row of any version this build knows, as the current version has them."""
        first = raw[0]
        if first == cls._byte:  # nearly every read
            return cls.load(raw[1:])
        if first == UNTAGGED:
            version, fields = cls.untagged(raw)
        else:
            version, fields = first - ZERO, cls.load(raw[1:])
        return cls.upcast(version, fields)

    @classmethod
    def upcast(cls, version: int, fields: Any) -> Any:
        """A version's fields as the current version has them."""
        if type(version) is not int or version < 1:
            raise ValueError(f"{cls.__name__} row of version {version!r}: not a version")
        if version > cls.row_version:
            raise NewerRow(
                f"{cls.__name__} row of version {version}, newer than this build's {cls.row_version}: "
                f"a newer sendgate wrote it, and only such a build may decide over it"
            )
        for step in cls._upcasts[version - 1 :]:
            fields = step(fields)
        return fields

    @classmethod
    def untagged(cls, raw: bytes) -> tuple[int, Any]:
        """(version, fields) of a row written before rows carried a version; kinds that had such
        rows say how (module docstring)."""
        raise ValueError(f"{cls.__name__} row {raw[:24]!r}...: neither a version nor a form this kind ever had")


def by_field_count(versions: dict[int, int]) -> classmethod:
    """`untagged` for a kind whose fields were only ever appended: the version by the field count."""

    def untagged(cls: type[Row], raw: bytes) -> tuple[int, list]:
        fields = orjson.loads(raw)
        if len(fields) not in versions:
            raise ValueError(
                f"{cls.__name__} row of {len(fields)} fields from before versions; such rows had "
                f"{' or '.join(map(str, versions))}"
            )
        return versions[len(fields)], fields

    return classmethod(untagged)


@classmethod  # type: ignore[misc]  # a classmethod object for kinds to assign (`untagged = version_first`)
def version_first(cls: type[Row], raw: bytes) -> tuple[int, list]:
    """`untagged` for a kind whose rows already began with their version: `[version, *fields]`."""
    version, *fields = orjson.loads(raw)
    return version, fields
