"""Platform signals (models/reputation.py, models/consent.py GrantWatch, models/gate/): delivery
results move a sender's reputation, and an abusive unrestricted app loses its grant.

Expected numbers follow from the policy's factors, stated in each test.
"""

from __future__ import annotations

import orjson
import pytest

from conftest import APP, DAY, HOUR, MINUTE, SENDER, T, UNRELATED, Harness, established, event, recipients, send
from sendgate.models.decisions import REVOCATION_ID, GrantRevocation
from sendgate.models.policy import Policy, PolicyError
from sendgate.models.reputation import Reputation

P = Policy()


def status(userkey: str, result: str, at: int = 0, sender: str = SENDER) -> dict:
    return event("delivery_status", at, sender=sender, userkey=userkey, request_id=f"r-{userkey}", status=result)


# --- the reputation ------------------------------------------------------------------------------------------
def test_signals_multiply_the_score_and_the_deficit_halves_with_event_time():
    r = Reputation()
    r.record("not_delivered", T, P)
    r.record("not_delivered", T, P)
    assert r.now(T, P) == pytest.approx(0.81)
    assert r.now(T + DAY, P) == pytest.approx(1 - 0.19 / 2) and r.effect(T + DAY, P) == 0.9
    r.record("delivered", T + DAY, P)  # x 1.02 on the decayed score
    assert r.score == pytest.approx(0.905 * 1.02, abs=1e-6) and r.reasons() == "2 not-delivered result(s), 1 deliveries"
    assert Reputation.from_list(orjson.loads(orjson.dumps(r.to_list()))) == r


def test_a_clean_sender_forgets_old_reasons_and_never_passes_1():
    r = Reputation()
    r.record("junk_report", T, P)
    for _ in range(50):
        r.record("delivered", T + 10 * DAY, P)
    assert r.score == 1.0 and "junk" not in r.reasons()  # the junk report was 10 half-lives ago


def test_mostly_refused_deliveries_tighten_the_limits_and_detail_says_why():
    h = Harness()
    h.feed(*established())
    h.feed(*[status(f"x{i}", "not_delivered", at=i) for i in range(7)], status("y", "delivered", at=8))
    # 0.9 ** 7 * 1.02 = 0.488 -> 0.5: 5 free, intervals x 2
    out = h.sends(recipients(6), at=MINUTE)
    assert [d.outcome for d in out] == ["accepted"] * 5 + ["delayed"]
    assert out[5].deliver_at == T + MINUTE + 2 * MINUTE
    assert "its reputation is 0.50 (7 not-delivered result(s), 1 deliveries)" in out[0].detail


def test_a_delivery_status_of_another_sender_leaves_this_one_alone():
    h = Harness()
    h.feed(*established(), *established(sender="S2"))
    h.feed(*[status(f"x{i}", "failed", sender="S2") for i in range(20)])
    assert [d.outcome for d in h.sends(recipients(10), at=MINUTE)] == ["accepted"] * 10


# --- restricting an abusive unrestricted app ---------------------------------------------------------------------
def revocations(h: Harness) -> list[GrantRevocation]:
    return [r for r in h.records if isinstance(r, GrantRevocation)]


OTHER = (
    "Your appointment is confirmed for Tuesday at 3pm",
    "Thanks for your order, it ships tomorrow",
    "The library book you reserved is ready for pickup",
    "Your password was changed; call us if it was not you",
    "Reminder: the team meeting moved to room 4",
)


def test_junk_reports_against_an_unrestricted_app_revoke_its_grant_through_the_log():
    h = Harness()
    h.feed(*established())
    assert h.decide(send("stranger", text=OTHER[0])).reason == "unrestricted"
    # reports against another sender name of the app: S1's own reputation stays clean
    h.feed(*[event("junk_report", i, sender="S9", userkey=f"v{i}", text=UNRELATED[i % 4]) for i in range(5)])
    [revoked] = revocations(h)
    assert revoked.counts["junk_reports"] == 5 and "5 junk reports within 24 h" in revoked.reason
    # until its app_policy event is decided, the grant holds; a sixth report makes no second one
    h.feed(event("junk_report", 10, sender="S9", userkey="v9", text=UNRELATED[1]))
    assert len(revocations(h)) == 1
    assert h.decide(send("stranger2", at=11, text=OTHER[1])).reason == "unrestricted"
    # the worker appends it to the app's log; decided, it restricts the app
    h.feed(orjson.loads(revoked.policy_event()))
    refused = h.decide(send("stranger3", at=20, text=OTHER[2]))
    assert (refused.outcome, refused.reason) == ("rejected", "no_conversation")
    assert "the app lost its unrestricted-outbound grant" in refused.detail and "5 junk reports" in refused.detail
    # an operator grants it again; a copy of the revocation decided again later changes nothing
    h.feed(event("app_policy", 30, unrestricted=True, reason="reviewed"))
    h.feed(orjson.loads(revoked.policy_event()))
    assert h.decide(send("stranger4", at=40, text=OTHER[3])).reason == "unrestricted"


def test_a_high_not_delivered_rate_revokes_only_past_the_minimum_of_results():
    h = Harness(Policy(grant_revoke_min_results=10, grant_revoke_not_delivered_rate=0.5))
    h.feed(*established())
    h.feed(*[status(f"x{i}", "not_delivered", at=i) for i in range(4)])  # 4 of 4, but fewer than 10
    assert not revocations(h)
    h.feed(*[status(f"y{i}", "delivered", at=10 + i) for i in range(5)], status("z", "not_delivered", at=20))
    [revoked] = revocations(h)  # 5 of 10
    assert revoked.counts == {"junk_reports": 0, "refused_blasts": 0, "results": 10, "not_delivered": 5}
    assert "5 of 10 delivery results not delivered (50%)" in revoked.reason


def test_refused_blasts_revoke_and_the_count_restarts_each_window():
    h = Harness(Policy(grant_revoke_refused_blasts=3, max_delay_s=120))
    h.feed(*established())
    first = h.sends(recipients(14))  # 10 free, 2 paced within 120 s, 2 refused (burst_limit)
    assert [d.reason for d in first[12:]] == ["burst_limit"] * 2 and not revocations(h)
    h.sends(recipients(2, start=30), at=DAY + HOUR)  # a new window: the count starts again from 0
    assert not revocations(h)
    later = h.sends(recipients(20, start=40), at=DAY + 2 * HOUR, text=UNRELATED[0])
    assert sum(d.reason == "burst_limit" for d in later) == 8  # 10 free, 2 paced, 8 refused
    assert len(revocations(h)) == 1 and "blast sends refused" in revocations(h)[0].reason


def test_the_revocation_event_is_an_app_policy_event_with_a_stable_id():
    r = GrantRevocation(APP, "why", {"junk_reports": 5}, T)
    doc = orjson.loads(r.policy_event())
    assert doc == {
        "type": "app_policy",
        "event_id": f"{REVOCATION_ID}{T}",
        "app": APP,
        "unrestricted": False,
        "reason": "why",
        "ts": T,
    }
    assert r.to_dict()["revocation_id"] == f"{APP}:{REVOCATION_ID}{T}"


def test_an_app_without_a_grant_is_never_revoked():
    h = Harness()
    h.feed(*established(grant=False))
    h.feed(*[event("junk_report", i, userkey=f"v{i}", text=UNRELATED[i % 4]) for i in range(10)])
    assert not revocations(h)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"reputation_junk_report": 1.5}, "lowers a reputation"),
        ({"reputation_delivered": 0.9}, "raises a reputation"),
        ({"grant_revoke_not_delivered_rate": 0}, "grant_revoke_not_delivered_rate"),
    ],
)
def test_bad_signal_settings_are_refused(values, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_mapping(values)
