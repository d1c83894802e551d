"""decisions.py: the output records, their stable ids and their JSON forms."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from conftest import T
from sendgate.models.decisions import OUTCOMES, Decision, Delivery, Outcome, Reason, duration, iso
from sendgate.models.slots import slot_refusal


def decision(**overrides) -> Decision:
    fields = dict(
        request_id="r1",
        app="app1",
        sender="S1",
        userkey="u1",
        network="sms",
        outcome="delayed",
        reason="burst_paced",
        detail="11th recipient",
        ts=T,
        deliver_at=T + 60_000,
        similarity=0.82,
        similar_recipients=11,
        cluster_id="c1",
    )
    return Decision(**{**fields, **overrides})


def test_decision_id_is_request_outcome_and_reason():
    assert decision().decision_id == "app1:r1:delayed:burst_paced"


def test_decision_id_does_not_depend_on_time_or_wording():
    a = decision()
    b = decision(ts=T + 999, detail="other words", deliver_at=T + 5, similarity=0.7)
    assert a.decision_id == b.decision_id


def test_decision_id_differs_per_outcome():
    ids = {
        decision(outcome=o, reason=r).decision_id
        for o, r in [("delayed", "burst_paced"), ("released", "slot_reached"), ("cancelled", "opted_out")]
    }
    assert len(ids) == 3


def test_outcomes():
    assert OUTCOMES == ("accepted", "delayed", "rejected", "released", "cancelled")


def test_to_dict_has_type_and_id_and_omits_unset_fields():
    d = decision(
        outcome="rejected",
        reason="no_conversation",
        deliver_at=None,
        similarity=None,
        similar_recipients=None,
        cluster_id=None,
    )
    assert d.to_dict() == {
        "type": "decision",
        "decision_id": "app1:r1:rejected:no_conversation",
        "request_id": "r1",
        "app": "app1",
        "sender": "S1",
        "userkey": "u1",
        "network": "sms",
        "outcome": "rejected",
        "reason": "no_conversation",
        "detail": "11th recipient",
        "ts": T,
        "reply": False,
    }


def test_decision_json_round_trip():
    for d in (
        decision(),
        decision(
            outcome="accepted",
            reason="reply",
            reply=True,
            deliver_at=None,
            similarity=None,
            similar_recipients=None,
            cluster_id=None,
        ),
        decision(outcome="rejected", reason="burst_limit", retry_after_s=158, deliver_at=None),
    ):
        doc = orjson.loads(d.to_json())
        assert doc["decision_id"] == d.decision_id
        assert Decision.from_dict(doc) == d


def test_delivery_json_round_trip():
    for reply_to in (None, "in-1"):
        x = Delivery("r1", "app1", "S1", "u1", "sms", "Hi ✓", reply_to, T, "r1:accepted:reply")
        doc = orjson.loads(x.to_json())
        assert doc["type"] == "delivery"
        assert Delivery.from_dict(doc) == x


def test_iso_is_utc_to_the_second():
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(T) == "2023-11-14T22:13:20Z"
    assert iso(T + 999) == "2023-11-14T22:13:20Z"


def test_recent_ids_drop_repeats_and_forget_the_oldest():
    from sendgate.streams.client import RecentIds

    recent = RecentIds(size=2)
    # a, b | a again (now most recent) | c evicts b | b is new again and evicts a | a is new again
    assert [recent.first_time(i) for i in ("a", "b", "a", "c", "b", "a")] == [True, True, False, True, True, True]


def test_decision_id_is_scoped_by_app():
    # request ids are unique only within an app: two apps' "order-1" must not share an id
    assert decision(app="shop").decision_id != decision(app="bank").decision_id
    assert decision(app="a:b", request_id="c").decision_id == "a%3Ab:c:delayed:burst_paced"
    assert decision(app="a", request_id="b:c").decision_id == "a:b:c:delayed:burst_paced"
    assert decision(app="50%", request_id="x").decision_id == "50%25:x:delayed:burst_paced"


def test_a_decision_is_built_whole_and_its_json_says_the_enums_values():
    d = decision(outcome=Outcome.DELAYED, reason=Reason.BURST_PACED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.detail += "; a note"  # type: ignore[misc]
    assert orjson.loads(d.to_json())["outcome"] == "delayed" and d.decision_id.endswith(":delayed:burst_paced")
    assert d == decision()  # the enum equals its value, as read back from JSON


def test_durations_are_said_in_the_largest_exact_unit():
    assert [duration(s) for s in (21_600, 86_400, 1_800, 5_400, 90)] == ["6 h", "24 h", "30 min", "90 min", "90 s"]


def test_a_slot_too_far_away_says_how_far_even_under_an_hour():
    # max_delay_s = 1800 once read "more than 0 h away"
    refused = slot_refusal("paced", T + 3_600_000, T, None, 1_800, Reason.BURST_LIMIT)
    assert refused.reason == Reason.BURST_LIMIT and "more than 30 min away; retry in 1800 s" in refused.detail
    late = slot_refusal("paced", T + 60_000, T, T + 30_000, 1_800, Reason.BURST_LIMIT)
    assert late.reason == Reason.EXPIRED_BEFORE_SLOT and late.deliver_at == T + 60_000
    assert slot_refusal("paced", T + 60_000, T, None, 1_800, Reason.BURST_LIMIT) is None
