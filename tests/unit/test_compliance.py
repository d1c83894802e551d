"""Compliance by kind of message and by the recipient's clock (issue 32): categories and the
consent each needs, quiet hours in the recipient's local time, and the per-subject cap."""

from __future__ import annotations

from datetime import datetime

import pytest

from conftest import APP, DAY, HOUR, MINUTE, PARCEL, SENDER, T, Harness, established, event, paced_slots, send
from sendgate.models.gate import OverlayStore
from sendgate.models.policy import Policy, PolicyError
from sendgate.models.quiet_hours import zone
from sendgate.models.subjects import MAX_SUBJECT_SENDS, SubjectSends

NY, CHICAGO = "America/New_York", "America/Chicago"
OFFER = "Flash sale at Luigi's: 30% off every pizza this weekend, show this text at the counter"


def at(local: str, tz: str) -> int:
    """Event time (ms after T) of a local wall-clock time ('2026-12-07 22:30') in `tz`."""
    return int(datetime.fromisoformat(local).replace(tzinfo=zone(tz)).timestamp() * 1000) - T


def local(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts / 1000, zone(tz)).strftime("%a %Y-%m-%d %H:%M")


class Gate(Harness):
    def feed(self, *docs, record_ts=None):  # every record written when its event happened
        out = []
        for doc in docs:
            out += super().feed(doc, record_ts=doc.get("ts", T) if record_ts is None else record_ts)
        return out


def opted_in(user: str, when: int, **fields) -> dict:
    return event("opt_in", when, userkey=user, source="web form", **fields)


# --- 1. a kind for every message ------------------------------------------------------------
def test_a_promotional_send_needs_an_opt_in_that_names_marketing():
    g = Gate()
    g.feed(*established(grant=False), event("inbound", -DAY, userkey="talker", text="hi, is the shop open?"))
    refused = g.decide(send("talker", text=OFFER, category="promotional"))
    assert (refused.outcome, refused.reason) == ("rejected", "no_consent_for_category")
    assert "express consent to marketing" in refused.detail and "has written to sender 'S1'" in refused.detail
    # the same user may get an informational text, the default kind
    assert g.decide(send("talker", at=1, text="Your order 48213 has shipped")).reason == "conversation"
    # a stranger with no consent at all is told what a promotion needs, too
    stranger = g.decide(send("stranger", at=2, text=OFFER, category="promotional"))
    assert stranger.reason == "no_consent_for_category" and "has given no consent" in stranger.detail
    assert g.decide(send("stranger", at=3, text="Your order 48213 has shipped")).reason == "no_conversation"


def test_an_opt_in_covers_the_kinds_it_names_and_those_that_need_less():
    g = Gate()
    g.feed(
        *established(grant=False),
        opted_in("info", -HOUR, categories=["informational"]),
        opted_in("all", -HOUR),
        event("inbound", -HOUR, userkey="keyword", text="START"),
    )
    assert g.decide(send("info", text=OFFER, category="promotional")).reason == "no_consent_for_category"
    assert g.decide(send("info", at=1, text="Your order shipped", category="informational")).reason == "opt_in"
    assert g.decide(send("info", at=2, text="Thanks for writing", category="conversational")).reason == "opt_in"
    assert g.decide(send("all", at=3, text=OFFER, category="promotional")).reason == "opt_in"
    assert g.decide(send("keyword", at=4, text=OFFER, category="promotional")).reason == "opt_in"


def test_a_grant_lifts_the_conversation_rule_but_is_no_consent_to_marketing():
    g = Gate()
    g.feed(*established(grant=True))
    assert g.decide(send("anyone", text="Your order shipped")).reason == "unrestricted"
    refused = g.decide(send("anyone", at=1, text=OFFER, category="promotional"))
    assert refused.reason == "no_consent_for_category" and "unrestricted-outbound grant" in refused.detail


def test_a_promotional_reply_needs_marketing_consent_too():
    g = Gate()
    g.feed(*established(grant=False), event("inbound", -MINUTE, userkey="u1", text="what's new?", event_id="in-1"))
    assert g.decide(send("u1", text=OFFER, category="promotional", reply_to="in-1")).reason == "no_consent_for_category"
    assert g.decide(send("u1", at=1, text="We are open until 9", reply_to="in-1")).reason == "reply"


def test_the_policy_default_kind_applies_to_a_send_without_one():
    g = Gate(Policy(default_category="promotional"))
    g.feed(*established(grant=False), event("inbound", -DAY, userkey="talker", text="hi"))
    assert g.decide(send("talker", text="Your order shipped")).reason == "no_consent_for_category"
    assert "default_category" in g.decide(send("talker", at=1, text="Your order 2 shipped")).detail


def test_the_audit_trail_keeps_the_kinds_and_the_evidence_of_an_opt_in():
    g = Gate()
    g.feed(
        opted_in(
            "u1",
            0,
            categories=["promotional", "informational"],
            method="web_form",
            consent_text="Yes, text me offers",
            location="https://shop.example/join",
        ),
        event("inbound", 1, userkey="u2", text="START"),
    )
    trail = [r for r in g.records if type(r).__name__ == "ConsentRecord"]
    assert trail[0].categories == ["informational", "promotional"]
    assert trail[0].evidence == {
        "method": "web_form",
        "consent_text": "Yes, text me offers",
        "location": "https://shop.example/join",
    }
    assert trail[1].categories == ["conversational", "informational", "promotional"] and trail[1].evidence is None


# --- 3. quiet hours --------------------------------------------------------------------------
def profiled(user: str, tz: str, region: str | None, when: int) -> dict:
    return event("recipient_profile", when, userkey=user, timezone=tz, region=region)


@pytest.mark.parametrize(
    "tz, region, sent, opens",
    [
        (NY, "US-NY", "2026-12-07 22:30", "Tue 2026-12-08 08:00"),  # federal: 08:00-21:00
        (NY, "US-FL", "2026-12-07 20:30", "Tue 2026-12-08 08:00"),  # Florida: 08:00-20:00
        (CHICAGO, "US-TX", "2026-12-06 10:00", "Sun 2026-12-06 12:00"),  # Texas: Sunday from noon
    ],
)
def test_a_promotional_send_outside_the_recipients_window_waits_for_its_opening(tz, region, sent, opens):
    g = Gate()
    t = at(sent, tz)
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        opted_in("u1", t - HOUR),
        profiled("u1", tz, region, t - HOUR),
    )
    d = g.decide(send("u1", at=t, text=OFFER, category="promotional"))
    assert (d.outcome, d.reason, local(d.deliver_at, tz)) == ("delayed", "quiet_hours", opens)
    window = region if region in ("US-FL", "US-TX") else "US"  # New York has the federal window
    assert f"quiet hours of {window}" in d.detail and f"{tz}, {region} (from its recipient profile)" in d.detail
    # an informational text is not held (quiet_hours_categories: promotional)
    assert g.decide(send("u1", at=t + 1, text="Your order shipped")).outcome == "accepted"
    # the held send goes out when event time reaches the opening
    released = g.feed(event("tick", d.deliver_at - T))
    assert [(r.request_id, r.outcome) for r in released] == [(d.request_id, "released")]


def test_a_number_places_its_recipient_when_no_profile_says_where_it_is():
    g = Gate()
    t = at("2026-12-07 23:00", NY)
    number = "+12125550123"  # New York City
    g.feed(*[dict(e, ts=e["ts"] + t) for e in established(grant=False)], opted_in(number, t - HOUR))
    d = g.decide(send(number, at=t, text=OFFER, category="promotional"))
    assert (d.reason, local(d.deliver_at, NY)) == ("quiet_hours", "Tue 2026-12-08 08:00")
    assert "(from its number)" in d.detail
    # a profile that says otherwise wins: the user lives in Los Angeles (20:00 there)
    g.feed(profiled(number, "America/Los_Angeles", "US-CA", t + 1))
    assert (
        g.decide(send(number, at=t + 2, text="Weekend menu: 2 for 1 on pasta", category="promotional")).outcome
        == "accepted"
    )


def test_a_send_whose_validity_ends_before_the_window_opens_is_refused():
    g = Gate()
    t = at("2026-12-07 22:30", NY)
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        opted_in("u1", t - HOUR),
        profiled("u1", NY, "US-NY", t - HOUR),
    )
    d = g.decide(send("u1", at=t, text=OFFER, category="promotional", valid_for_s=3600))
    assert (d.outcome, d.reason) == ("rejected", "quiet_hours") and "stops being valid" in d.detail
    assert d.retry_after_s == (at("2026-12-08 08:00", NY) - t) // 1000


def test_a_nights_blast_is_paced_from_the_windows_opening_not_released_at_once():
    g = Gate()
    t = at("2026-12-07 23:00", NY)
    users = [f"u{i:02d}" for i in range(25)]
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        *[opted_in(u, t - HOUR) for u in users],
        *[profiled(u, NY, "US-NY", t - HOUR) for u in users],
    )
    decided = [
        g.decide(send(u, at=t + i, text=PARCEL.replace("Anna", u), category="promotional")) for i, u in enumerate(users)
    ]
    opening = at("2026-12-08 08:00", NY) + T
    assert [(d.reason, d.deliver_at) for d in decided[:10]] == [("quiet_hours", opening)] * 10
    assert [d.reason for d in decided[10:]] == ["burst_paced"] * 15
    assert [d.deliver_at for d in decided[10:]] == paced_slots(opening + MINUTE, 15)
    assert all(d.outcome == "delayed" and "quiet hours of US:" in d.detail for d in decided)


def test_the_recipients_limits_place_a_held_send_from_the_windows_opening():
    g = Gate(Policy(recipient_limits=((1, 3600),)))
    t = at("2026-12-07 22:30", NY)
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        opted_in("u1", t - 2 * HOUR),
        profiled("u1", NY, "US-NY", t - 2 * HOUR),
    )
    assert g.decide(send("u1", at=t - 2 * HOUR, text="Your order shipped")).outcome == "accepted"  # 20:30
    first = g.decide(send("u1", at=t, text=OFFER, category="promotional"))
    second = g.decide(send("u1", at=t + 1, text="Weekend menu: 2 for 1 on pasta", category="promotional"))
    opening = at("2026-12-08 08:00", NY) + T
    assert (first.reason, first.deliver_at) == ("quiet_hours", opening)
    # the limit's next slot is an hour after the opening: 10.5 h after the send, yet within
    # max_delay_s (6 h) of the opening, so it waits rather than being refused
    assert (second.outcome, second.reason, second.deliver_at) == ("delayed", "recipient_limit", opening + HOUR)


def test_a_reply_is_not_held_by_quiet_hours():
    g = Gate()
    t = at("2026-12-07 23:30", NY)
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        opted_in("u1", t - HOUR),
        profiled("u1", NY, "US-NY", t - HOUR),
        event("inbound", t - MINUTE, userkey="u1", text="any deals?", event_id="late"),
    )
    assert g.decide(send("u1", at=t, text=OFFER, category="promotional", reply_to="late")).reason == "reply"


def test_quiet_hours_windows_of_the_policy_override_and_extend_the_defaults():
    g = Gate(
        Policy(quiet_hours_windows=(("GB", "09:00-20:00"),), quiet_hours_categories=("promotional", "informational"))
    )
    t = at("2026-12-07 08:30", "Europe/London")
    g.feed(
        *[dict(e, ts=e["ts"] + t) for e in established(grant=False)],
        opted_in("u1", t - HOUR),
        profiled("u1", "Europe/London", "GB", t - HOUR),
    )
    d = g.decide(send("u1", at=t, text="Your order shipped"))  # informational, held by this policy
    assert (d.reason, local(d.deliver_at, "Europe/London")) == ("quiet_hours", "Mon 2026-12-07 09:00")
    with pytest.raises(PolicyError, match="quiet_hours_windows"):
        Policy(quiet_hours_windows=(("GB", "9-20"),))
    with pytest.raises(PolicyError, match="default_category"):
        Policy(default_category="marketing")


# --- 4. no more than N on one subject --------------------------------------------------------
def test_the_fourth_promotional_message_on_one_subject_in_24_hours_is_refused():
    g = Gate()
    g.feed(*established(grant=False), opted_in("u1", -HOUR))
    texts = [OFFER.replace("30%", f"{n}%") for n in (30, 35, 40, 45)]
    decided = [g.decide(send("u1", at=i * 2 * HOUR, text=text, category="promotional")) for i, text in enumerate(texts)]
    assert [d.outcome for d in decided[:3]] == ["accepted"] * 3
    fourth = decided[3]
    assert (fourth.outcome, fourth.reason) == ("rejected", "subject_limit")
    assert fourth.retry_after_s == (T + DAY - (T + 6 * HOUR)) // 1000
    assert "at most 3" in fourth.detail
    # another subject is not counted against it; informational texts are not counted at all
    assert (
        g.decide(
            send(
                "u1",
                at=6 * HOUR + 1,
                text="Your table for two at Luigi's is confirmed for Friday",
                category="promotional",
            )
        ).outcome
        == "accepted"
    )
    assert g.decide(send("u1", at=6 * HOUR + 2, text=texts[3])).outcome == "accepted"
    # once the first has left the window, the subject may be sent again
    assert (
        g.decide(send("u1", at=DAY + 1, text=texts[3].replace("45", "50"), category="promotional")).outcome
        == "accepted"
    )


def test_a_refused_promotion_takes_no_burst_slot():
    g = Gate()
    g.feed(*established(grant=False), opted_in("u1", -HOUR), opted_in("u2", -HOUR))
    for i in range(3):
        g.decide(send("u1", at=i * MINUTE, text=OFFER.replace("30", str(30 + i)), category="promotional"))

    def clusters() -> list[tuple[int, list[int], int]]:
        return [(c.count, list(c.recipients), c.next_slot) for c in g.sender(APP, SENDER).clusters]

    before = clusters()
    assert g.decide(send("u2", at=3 * MINUTE, text=OFFER, category="promotional")).outcome == "accepted"
    assert clusters() != before  # a send that goes takes its place in the cluster
    before = clusters()
    assert (
        g.decide(send("u1", at=4 * MINUTE, text=OFFER.replace("30", "39"), category="promotional")).reason
        == "subject_limit"
    )
    assert clusters() == before


def test_the_subject_row_is_bounded():
    row = SubjectSends()
    for i in range(3 * MAX_SUBJECT_SENDS):
        row.record(f"app-c{i}", T + i, T + i, 86_400)
    assert len(row.sent) == MAX_SUBJECT_SENDS and row.sent[-1] == [
        f"app-c{3 * MAX_SUBJECT_SENDS - 1}",
        T + 3 * MAX_SUBJECT_SENDS - 1,
    ]
    row.record("app-c0", T + 2 * DAY, T + 2 * DAY, 86_400)  # a day later the others have left the window
    assert row.sent == [["app-c0", T + 2 * DAY]]


def test_the_pre_flight_check_decides_the_kind_of_message_as_the_worker_does():
    g = Gate()
    g.feed(*established(grant=False), event("inbound", -DAY, userkey="talker", text="hi"), opted_in("fan", -DAY))
    decided = g.gate.check(
        APP, SENDER, OFFER, ["talker", "fan"], T, OverlayStore(g.store.get, g.store.junk), category="promotional"
    )
    assert [d.reason for d in decided] == ["no_consent_for_category", "opt_in"]
    assert [
        d.reason for d in g.gate.check(APP, SENDER, OFFER, ["talker"], T, OverlayStore(g.store.get, g.store.junk))
    ] == ["conversation"]


# --- 2. opt-out scope ------------------------------------------------------------------------
def stop(user: str, when: int, text: str = "Stop.") -> dict:
    return event("inbound", when, userkey=user, text=text, event_id=f"stop-{user}-{when}")


def test_with_the_default_scope_a_stop_stops_every_kind_of_message():
    g = Gate()
    g.feed(*established(grant=False), opted_in("u1", -HOUR))
    assert g.decide(send("u1", text=OFFER, category="promotional")).outcome == "accepted"
    g.feed(stop("u1", MINUTE))
    for at, category in ((2 * MINUTE, "informational"), (3 * MINUTE, "conversational")):
        d = g.decide(send("u1", at=at, text=f"Your order shipped ({at})", category=category))
        assert (d.outcome, d.reason) == ("rejected", "opted_out") and "nothing may be sent" in d.detail
    opt_out = [r for r in g.records if type(r).__name__ == "ConsentRecord"][-1]
    assert opt_out.kind == "opt_out" and opt_out.categories == ["conversational", "informational", "promotional"]


def test_with_scope_category_a_stop_stops_the_kind_of_the_message_it_answers_and_those_needing_more():
    g = Gate(Policy(opt_out_scope="category"))
    g.feed(*established(grant=False), *[opted_in(u, -HOUR) for u in ("promo", "info", "all", "none")])
    assert g.decide(send("promo", text=OFFER, category="promotional")).outcome == "accepted"
    assert g.decide(send("info", text="Your order 48213 has shipped")).outcome == "accepted"
    assert g.decide(send("all", text=OFFER, category="promotional")).outcome == "accepted"
    g.feed(stop("promo", MINUTE), stop("info", MINUTE), stop("all", MINUTE, "stop all"), stop("none", MINUTE))
    trail = {r.userkey: r.categories for r in g.records if type(r).__name__ == "ConsentRecord" and r.kind == "opt_out"}
    assert trail == {
        "promo": ["promotional"],
        "info": ["informational", "promotional"],
        "all": ["conversational", "informational", "promotional"],
        "none": ["conversational", "informational", "promotional"],
    }  # it answered nothing known

    def outcome(user: str, at: int, category: str) -> str:
        return g.decide(send(user, at=at, text=f"A message for you, {at}", category=category)).outcome

    assert outcome("promo", 2 * MINUTE, "promotional") == "rejected"
    assert outcome("promo", 3 * MINUTE, "informational") == "accepted"
    assert outcome("info", 4 * MINUTE, "informational") == "rejected"
    assert outcome("info", 5 * MINUTE, "promotional") == "rejected"
    assert outcome("info", 6 * MINUTE, "conversational") == "accepted"
    assert outcome("all", 7 * MINUTE, "conversational") == "rejected"
    assert outcome("none", 8 * MINUTE, "conversational") == "rejected"
    refused = g.decide(send("promo", at=9 * MINUTE, text=OFFER.replace("30", "20"), category="promotional"))
    assert (
        "no promotional message may be sent" in refused.detail and "answering a promotional message" in refused.detail
    )
    # START restores every kind
    g.feed(event("inbound", 10 * MINUTE, userkey="promo", text="START"))
    assert outcome("promo", 11 * MINUTE, "promotional") == "accepted"


def test_with_scope_category_a_held_request_of_a_kind_the_stop_spared_still_goes():
    g = Gate(Policy(opt_out_scope="category", recipient_limits=((1, 3600),)))
    g.feed(*established(grant=False), opted_in("u1", -HOUR))
    assert g.decide(send("u1", text=OFFER, category="promotional")).outcome == "accepted"
    held = g.decide(send("u1", at=MINUTE, text="Your order 48213 has shipped"))  # waits for the hourly limit
    assert (held.outcome, held.reason) == ("delayed", "recipient_limit")
    g.feed(stop("u1", 2 * MINUTE))  # answers the promotion (the last that went), not the held one
    released = g.feed(event("tick", HOUR + MINUTE))
    assert [(d.request_id, d.outcome) for d in released] == [(held.request_id, "released")]
