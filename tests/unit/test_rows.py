"""models/rows.py: every form of every row kind that may be stored reads, field by field, and is
rewritten in the current version; and the mechanism itself (versions, upcast order, newer rows).

The stored forms below are committed bytes, written by the code named beside each (the commit
whose models/ encoded them, or HEAD before rows carried versions: bd0320e). They are never
regenerated: a change that stops reading one of them fails here. Sketches are 4 uint32 wide
(`NUM_PERM`) to keep the bytes short; nothing in the row forms depends on the width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest

from conftest import DAY, MINUTE, T
from sendgate.models import rows
from sendgate.models.burst import V2_SUSPICION_MS, BurstCluster, SenderState
from sendgate.models.categories import LastSent
from sendgate.models.clock import AppClock
from sendgate.models.memory import AnsweredRequest, SeenEvent
from sendgate.models.consent import AppGrant, Conversation, Userkey
from sendgate.models.controls import RecentTexts, RecipientSends
from sendgate.models.events import Send
from sendgate.models.junk import JunkReport, JunkTemplate
from sendgate.models.pending import DueBucket, PendingRequest, ReleaseSchedule
from sendgate.models.quiet_hours import RecipientPlace
from sendgate.models.reputation import Reputation
from sendgate.models.retention import LapseBucket, LapseIndex
from sendgate.models.rows import NewerRow, Row, by_field_count
from sendgate.models.subjects import SubjectSends

NUM_PERM = 4
SKETCH_1, SKETCH_3 = [11, 12, 13, 14], [21, 22, 23, 24]
MINUTE_0 = T // MINUTE
C1 = BurstCluster("c1", T, T + 5, T + 60_000, [101, 102], 2, 0)
C3 = BurstCluster("c3", T + 7, T + 9, 0, [103], 1, 0)
DELAYED = {
    "type": "decision",
    "request_id": "r1",
    "outcome": "delayed",
    "reason": "burst_paced",
    "deliver_at": T + MINUTE,
}


def version_byte(cls: type[Row]) -> bytes:
    return bytes([ord("0") + cls.row_version])  # the stored form's first byte (models/rows.py)


def fields_of(obj) -> dict:
    """The row's compared fields, numpy arrays as lists."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.compare:
            value = getattr(obj, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


# (kind, version, stored bytes, written by, the fields they must read as)
FORMS = [
    (
        Userkey,
        1,
        b"[true,false,1700000000000,\"keyword STOP to sender 'S1'\"]",
        "0bf00a2",
        dict(
            opted_out=True,
            opted_in=False,
            changed_ts=T,
            how="keyword STOP to sender 'S1'",
            opt_out_inbound="",
            confirmed=False,
            covered=7,
            stopped=7,
        ),
    ),
    (
        Userkey,
        2,
        b"[true,false,1700000000000,\"inbound 'stop' to sender 'S1' (rule per_se)\",\"in-9\",true]",
        "HEAD",
        dict(
            opted_out=True,
            opted_in=False,
            changed_ts=T,
            how="inbound 'stop' to sender 'S1' (rule per_se)",
            opt_out_inbound="in-9",
            confirmed=True,
            covered=7,
            stopped=7,
        ),
    ),
    (
        Userkey,
        2,
        b'2[false,true,1700000000000,"opt_in event (web form)","",false]',
        "e7ab275",
        dict(
            opted_out=False,
            opted_in=True,
            changed_ts=T,
            how="opt_in event (web form)",
            opt_out_inbound="",
            confirmed=False,
            covered=7,
            stopped=7,
        ),
    ),
    (
        Userkey,
        3,
        b"3[true,true,1700000000000,\"inbound 'stop' to sender 'S1' (rule per_se)\",\"in-9\",false,3,4]",
        "HEAD",
        dict(
            opted_out=True,
            opted_in=True,
            changed_ts=T,
            how="inbound 'stop' to sender 'S1' (rule per_se)",
            opt_out_inbound="in-9",
            confirmed=False,
            covered=3,
            stopped=4,
        ),
    ),
    (
        Conversation,
        1,
        b'[1699999940000,1700000000000,[["in-1",1699999940000],["in-2",1700000000000]]]',
        "0bf00a2",
        dict(first_ts=T - MINUTE, last_ts=T, recent=[["in-1", T - MINUTE], ["in-2", T]], conversed=None, loop=None),
    ),
    (
        Conversation,
        2,
        b'[1699999940000,1700000000000,[["in-1",1699999940000],["in-2",1700000000000,"help"]],true]',
        "584af52",
        dict(
            first_ts=T - MINUTE,
            last_ts=T,
            recent=[["in-1", T - MINUTE], ["in-2", T, "help"]],
            conversed=True,
            loop=None,
        ),
    ),
    (
        Conversation,
        3,
        b'[1699999940000,1700000000000,[["in-1",1699999940000],["in-2",1700000000000,"help_answered"]],true,'
        b"[3735928559,3,1,1699999940000]]",
        "HEAD",
        dict(
            first_ts=T - MINUTE,
            last_ts=T,
            recent=[["in-1", T - MINUTE], ["in-2", T, "help_answered"]],
            conversed=True,
            loop=[3735928559, 3, 1, T - MINUTE],
        ),
    ),
    (
        AppGrant,
        1,
        b'[true,1700000000000,"operator: trusted"]',
        "HEAD (a grant with no watch)",
        dict(unrestricted=True, since_ts=T, reason="operator: trusted", watch=None, revoked_by_sendgate=False),
    ),
    (
        AppGrant,
        2,
        b'[false,1700000000005,"sendgate revoked: 3 junk reports",[1699999999000,3,0,7,1,true],true]',
        "HEAD",
        dict(
            unrestricted=False,
            since_ts=T + 5,
            reason="sendgate revoked: 3 junk reports",
            watch=[T - 1000, 3, 0, 7, 1, True],
            revoked_by_sendgate=True,
        ),
    ),
    (AppClock, 1, b"[1,1700000000000]", "0baf3ae", dict(ts=T, sweep_at=0, forget_at=0)),
    (
        AppClock,
        2,
        b"[2,1700000000000,1734646400000]",
        "e0befaa (untagged, version first)",
        dict(ts=T, sweep_at=T + 401 * DAY, forget_at=0),
    ),
    (AppClock, 2, b"2[1700000000000,1734646400000]", "e0befaa", dict(ts=T, sweep_at=T + 401 * DAY, forget_at=0)),
    (
        AppClock,
        3,
        b"3[1700000000000,1734646400000,1700172800000]",
        "HEAD",
        dict(ts=T, sweep_at=T + 401 * DAY, forget_at=T + 2 * DAY),
    ),
    (
        AnsweredRequest,
        1,
        b'1["5e0f3c2a9b1d7e44",["delayed","burst_paced","11th recipient",1700000000000,'
        b'1700000060000,null,0.93,11,"c1",false]]',
        "HEAD",
        dict(
            digest="5e0f3c2a9b1d7e44",
            answer=["delayed", "burst_paced", "11th recipient", T, T + MINUTE, None, 0.93, 11, "c1", False],
        ),
    ),
    (SeenEvent, 1, b'1["0c9a2f1e33b4d5a6",1700000000000]', "HEAD", dict(digest="0c9a2f1e33b4d5a6", ts=T)),
    (
        SubjectSends,
        1,
        b'1[[["app-c3",1700000000000],["app-c7",1700000060000]]]',
        "HEAD",
        dict(sent=[["app-c3", T], ["app-c7", T + MINUTE]]),
    ),
    (
        RecipientPlace,
        1,
        b'1["America/New_York","US-FL",1700000000000]',
        "HEAD",
        dict(timezone="America/New_York", region="US-FL", ts=T),
    ),
    (
        RecipientSends,
        1,
        b"[1,[1699996400000,1700000000000,1700000060000]]",
        "HEAD",
        dict(times=[T - 3_600_000, T, T + MINUTE]),
    ),
    (
        RecentTexts,
        1,
        b"1[[[3735928559,1699999000000],[42,1700000000000]]]",
        "HEAD",
        dict(sent=[[3735928559, T - 1_000_000], [42, T]]),
    ),
    (
        JunkTemplate,
        1,
        b'["CwAAAAwAAAANAAAADgAAAA==",[7,8,9],1700000000000]',
        "HEAD",
        dict(sketch=SKETCH_1, reporters=[7, 8, 9], last_ts=T),
    ),
    (
        JunkReport,
        1,
        b'[1,"acme\\u001fev-1","FQAAABYAAAAXAAAAGAAAAA==",42,1700000000000]',
        "HEAD",
        dict(template_id="acme\x1fev-1", sketch=SKETCH_3, reporter=42, ts=T),
    ),
    (
        PendingRequest,
        1,
        b'["r1","acme","S1","u1","sms","Sale today",null,1700000000000,1700000060000,"c1",{"type":"decision",'
        b'"request_id":"r1","outcome":"delayed","reason":"burst_paced","deliver_at":1700000060000}]',
        "HEAD (a send without valid_for_s)",
        dict(
            send=Send("r1", "acme", "S1", "u1", "sms", "Sale today", None, T, None),
            deliver_at=T + MINUTE,
            cluster_id="c1",
            decision=DELAYED,
        ),
    ),
    (
        PendingRequest,
        2,
        b'["r2","acme","S1","u2","sms","Sale today","in-3",1700000000000,3600,1700000120000,"c1",{"type":"decision",'
        b'"request_id":"r2","outcome":"delayed","reason":"burst_paced","deliver_at":1700000120000}]',
        "HEAD",
        dict(
            send=Send("r2", "acme", "S1", "u2", "sms", "Sale today", "in-3", T, 3600),
            deliver_at=T + 2 * MINUTE,
            cluster_id="c1",
            decision={**DELAYED, "request_id": "r2", "deliver_at": T + 2 * MINUTE},
        ),
    ),
    (
        PendingRequest,
        2,
        b'2["r2","acme","S1","u2","sms","Sale today","in-3",1700000000000,3600,1700000120000,"c1",{"type":"decision",'
        b'"request_id":"r2","outcome":"delayed","reason":"burst_paced","deliver_at":1700000120000}]',
        "e7ab275",
        dict(
            send=Send("r2", "acme", "S1", "u2", "sms", "Sale today", "in-3", T, 3600),
            deliver_at=T + 2 * MINUTE,
            cluster_id="c1",
            decision={**DELAYED, "request_id": "r2", "deliver_at": T + 2 * MINUTE},
        ),
    ),
    (
        PendingRequest,
        3,
        b'3["r3","acme","S1","u3","sms","Sale today",null,1700000000000,null,"promotional",1700000120000,"app-c1",'
        b'{"type":"decision","request_id":"r3","outcome":"delayed","reason":"quiet_hours","deliver_at":1700000120000}]',
        "HEAD",
        dict(
            send=Send("r3", "acme", "S1", "u3", "sms", "Sale today", None, T, None, "promotional"),
            deliver_at=T + 2 * MINUTE,
            cluster_id="app-c1",
            decision={**DELAYED, "request_id": "r3", "reason": "quiet_hours", "deliver_at": T + 2 * MINUTE},
        ),
    ),
    (LastSent, 1, b'1["promotional",1700000000000]', "HEAD", dict(category="promotional", ts=T)),
    (
        DueBucket,
        1,
        b'[[1700000060000,"r1"],[1700000120000,"r2"]]',
        "HEAD",
        dict(entries=[[T + MINUTE, "r1"], [T + 2 * MINUTE, "r2"]]),
    ),
    (
        ReleaseSchedule,
        1,
        b"[[28333333,28333335],1700000000030]",
        "0baf3ae",
        dict(minutes=[MINUTE_0, MINUTE_0 + 2], next_due=T + 30, chunks=[1, 1], held=0),
    ),
    (
        ReleaseSchedule,
        2,
        b"[2,[28333334,28333335],[1,3],1700000060000,5]",
        "HEAD",
        dict(minutes=[MINUTE_0 + 1, MINUTE_0 + 2], next_due=T + MINUTE, chunks=[1, 3], held=5),
    ),
    (LapseIndex, 1, b"[1,[19675,19676],[1,2]]", "HEAD", dict(days=[19675, 19676], chunks=[1, 2])),
    (
        LapseBucket,
        1,
        b"1\x1eS1\x1fu1\x1eS2\x1fu2",
        "HEAD (already with its version)",
        dict(body=b"\x1eS1\x1fu1\x1eS2\x1fu2"),
    ),
]

# The head of a sender with clusters c1 and c3, in every form; v2 and v3 with their cluster rows
# (the same in both: cluster rows never changed) and sketch rows.
CLUSTER_ROWS = {
    "c1": b"[1700000000000,1700000000005,1700000060000,[101,102],2,0]",
    "c3": b"[1700000000007,1700000000009,0,[103],1,0]",
}
SKETCH_ROWS = {
    "c1": b"\x0b\x00\x00\x00\x0c\x00\x00\x00\r\x00\x00\x00\x0e\x00\x00\x00",
    "c3": b"\x15\x00\x00\x00\x16\x00\x00\x00\x17\x00\x00\x00\x18\x00\x00\x00",
}
SUSPECTED = Reputation(0.5, T + DAY - V2_SUSPICION_MS, [1, 0, 0, 0, 0, 0])  # suspicious until T + DAY
TWO_CLUSTERS = dict(registered_ts=T - 90 * DAY, conversing=4, seq=3, clusters=[C1, C3], sketches=[SKETCH_1, SKETCH_3])
SENDER_FORMS = [
    (
        1,
        b'[null,0,0,0,[],""]',
        "79bc256 (one row, sketches in base64; no clusters)",
        dict(registered_ts=None, conversing=0, reputation=Reputation(), seq=0, clusters=[], sketches=None, stamp=0),
    ),
    (
        1,
        b'[1692224000000,4,1700086400000,3,[["c1",1700000000000,1700000000005,1700000060000,[101,102],2,0],'
        b'["c3",1700000000007,1700000000009,0,[103],1,0]],"CwAAAAwAAAANAAAADgAAABUAAAAWAAAAFwAAABgAAAA="]',
        "79bc256 (one row, sketches in base64)",
        dict(TWO_CLUSTERS, reputation=SUSPECTED, stamp=0),
    ),
    (
        1,
        b"[1692224000000,1,0,0,[]]",
        "d80ccf7 (one row, no clusters: no sketches after it)",
        dict(
            registered_ts=T - 90 * DAY,
            conversing=1,
            reputation=Reputation(),
            seq=0,
            clusters=[],
            sketches=None,
            stamp=0,
        ),
    ),
    (
        1,
        b'[1692224000000,4,1700086400000,3,[["c1",1700000000000,1700000000005,1700000060000,[101,102],2,0],'
        b'["c3",1700000000007,1700000000009,0,[103],1,0]]]\n' + SKETCH_ROWS["c1"] + SKETCH_ROWS["c3"],
        "d80ccf7 (one row, raw sketches after a newline)",
        dict(TWO_CLUSTERS, reputation=SUSPECTED, stamp=0),
    ),
    (
        2,
        b'[2,1692224000000,4,1700086400000,3,17765325016753832769,["c1","c3"]]',
        "4e4409a (head and rows)",
        dict(TWO_CLUSTERS, reputation=SUSPECTED, stamp=17765325016753832769),
    ),
    (
        3,
        b'[3,1692224000000,4,[0.81,1699999997000,[1,0,0,0,2,1]],3,17765325016753832769,["c1","c3"]]',
        "HEAD",
        dict(TWO_CLUSTERS, reputation=Reputation(0.81, T - 3000, [1, 0, 0, 0, 2, 1]), stamp=17765325016753832769),
    ),
]


@pytest.mark.parametrize(
    "kind, version, raw, written_by, expected", FORMS, ids=[f"{f[0].__name__}-v{f[1]}-{f[3].split()[0]}" for f in FORMS]
)
def test_every_stored_form_reads_and_is_rewritten_in_the_current_version(kind, version, raw, written_by, expected):
    row = kind.from_bytes(raw)
    assert fields_of(row) == expected
    again = row.to_bytes()
    assert again[:1] == version_byte(kind)
    assert fields_of(kind.from_bytes(again)) == expected


@pytest.mark.parametrize(
    "version, head, written_by, expected",
    SENDER_FORMS,
    ids=[f"v{f[0]}-{f[2].split()[0]}-{len(f[3]['clusters'])}" for f in SENDER_FORMS],
)
def test_every_stored_form_of_a_sender_reads_and_is_rewritten_in_the_current_version(
    version, head, written_by, expected
):
    stored_clusters, stored_sketches = (dict(CLUSTER_ROWS), dict(SKETCH_ROWS)) if version > 1 else ({}, {})
    state = SenderState.from_rows(head, stored_clusters.get, stored_sketches.get, NUM_PERM)
    assert fields_of(state) == expected
    head, clusters, sketches = state.to_rows()
    assert head[:1] == version_byte(SenderState)
    ids = [c.cluster_id for c in expected["clusters"]]
    # a v1 row held its clusters itself: its first write writes their rows; later forms' rows stay
    assert (sorted(clusters), sorted(sketches)) == ((ids, ids) if version == 1 else ([], []))
    assert all(raw[:1] == version_byte(BurstCluster) for raw in clusters.values())
    stored_clusters.update(clusters)
    stored_sketches.update(sketches)
    again = SenderState.from_rows(head, stored_clusters.get, stored_sketches.get, NUM_PERM)
    assert fields_of(again) == {**expected, "stamp": state.stamp}


def test_every_row_kind_has_a_stored_form_of_every_version():
    covered: dict[str, set[int]] = {}
    for kind, version, *_ in FORMS:
        covered.setdefault(kind.__name__, set()).add(version)
    covered["SenderState"] = {version for version, *_ in SENDER_FORMS}
    covered["BurstCluster"] = {1}  # CLUSTER_ROWS
    kinds = {cls.__name__: cls for cls in Row.__subclasses__() if cls.__module__.startswith("sendgate.models.")}
    assert covered == {name: set(range(1, cls.row_version + 1)) for name, cls in kinds.items()}


@pytest.mark.parametrize(
    "kind",
    [
        Userkey,
        Conversation,
        AppGrant,
        AppClock,
        RecipientSends,
        RecentTexts,
        JunkTemplate,
        JunkReport,
        PendingRequest,
        DueBucket,
        ReleaseSchedule,
        LapseIndex,
        LapseBucket,
        BurstCluster,
        SenderState,
        AnsweredRequest,
        SeenEvent,
        SubjectSends,
        RecipientPlace,
        LastSent,
    ],
    ids=lambda kind: kind.__name__,
)
def test_a_row_of_a_newer_version_is_refused_naming_the_kind_and_both_versions(kind):
    newer = kind.row_version + 1
    with pytest.raises(
        NewerRow, match=f"^{kind.__name__} row of version {newer}, newer than this build's {kind.row_version}"
    ):
        kind.unpack(bytes([ord("0") + newer]) + b"[]")
    assert issubclass(NewerRow, ValueError)  # the worker stalls on it, as on any row it cannot read


def test_an_untagged_row_naming_a_newer_version_is_refused_too():
    with pytest.raises(NewerRow, match="AppClock row of version 4"):
        AppClock.from_bytes(b"[4,1700000000000,0,0,7]")
    with pytest.raises(NewerRow, match="SenderState row of version 4"):
        SenderState.from_rows(b"[4,null,0,[1.0,0,[0,0,0,0,0,0]],0,0,[]]", {}.get, {}.get, NUM_PERM)


def test_a_first_field_that_could_be_a_version_is_read_as_a_field():
    # an untagged Conversation begins with an int, first_ts: `[` tells it from a version, not the int
    untagged = Conversation.from_bytes(b'[3,4,[["in-1",4]],true,null]')
    assert (untagged.first_ts, untagged.last_ts, untagged.inbound_ids) == (3, 4, ["in-1"])
    assert untagged.to_bytes() == b'3[3,4,[["in-1",4]],true,null]'
    assert Conversation.from_bytes(untagged.to_bytes()) == untagged


def test_rows_that_are_no_form_of_their_kind_are_refused():
    with pytest.raises(ValueError, match="Userkey row of 5 fields from before versions; such rows had 4 or 6"):
        Userkey.from_bytes(b'[true,false,1,"x",""]')
    with pytest.raises(ValueError, match="Userkey row of version 0: not a version"):
        Userkey.from_bytes(b'0[true,false,1,"x","",false]')
    with pytest.raises(ValueError, match="LapseBucket row .* neither a version nor a form"):
        LapseBucket.from_bytes(b'["S1","u1"]')


# --- the mechanism, on a kind of its own -----------------------------------------------------------
@dataclass(slots=True)
class Note(Row):
    """v1: [text]; v2 appends who; v3 appends the history of its upcasts."""

    text: str
    who: str = ""
    history: list = field(default_factory=list)

    row_version = 3
    untagged = by_field_count({1: 1})

    @staticmethod
    def upcast_v1_v2(fields: list) -> list:
        return [*fields, "nobody"]

    @staticmethod
    def upcast_v2_v3(fields: list) -> list:
        return [*fields, [f"v3 after who={fields[1]}"]]

    def to_bytes(self) -> bytes:
        return self.pack([self.text, self.who, self.history])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Note":
        return cls(*cls.unpack(raw))


def test_upcasts_run_in_order_from_the_stored_version_to_the_current_one():
    assert Note.from_bytes(b'["hi"]') == Note("hi", "nobody", ["v3 after who=nobody"])  # untagged v1: both
    assert Note.from_bytes(b'1["hi"]') == Note("hi", "nobody", ["v3 after who=nobody"])  # v1: both, v2's first
    assert Note.from_bytes(b'2["hi","ann"]') == Note("hi", "ann", ["v3 after who=ann"])  # v2: the last only
    assert Note.from_bytes(b'3["hi","ann",[]]') == Note("hi", "ann", [])  # current: none
    assert Note("hi", "ann").to_bytes() == b'3["hi","ann",[]]'


def test_a_kind_missing_an_upcast_step_fails_when_it_is_defined_not_when_a_row_is_read():
    with pytest.raises(AttributeError, match="upcast_v1_v2"):

        class Gap(Row):
            row_version = 3

            @staticmethod
            def upcast_v2_v3(fields: list) -> list:
                return fields

    with pytest.raises(TypeError, match="one byte holds versions 1 to 42"):

        class TooMany(Row):
            row_version = 43


def test_the_version_costs_one_byte():
    # one byte tells the version; kinds that wrote their version first in the array save a byte
    assert len(AppClock(T, T).to_bytes()) == len(b"[3,1700000000000,1700000000000,0]") - 1
    assert len(Userkey().to_bytes()) == len(b'[false,false,0,"","",false,7,7]') + 1
    assert rows.UNTAGGED - rows.ZERO == 43  # `[`: never a version
