"""Request controls (models/controls.py and their place in models/gate/): request validity,
per-recipient limits over several windows, the auto-reply loop guard and contact lists.

Expected slots are computed from the rules stated in each test, not copied from the output.
"""

from __future__ import annotations

import pytest

from conftest import (
    APP,
    DAY,
    HOUR,
    MINUTE,
    PARCEL,
    SECOND,
    SENDER,
    T,
    UNRELATED,
    Harness,
    established,
    event,
    recipients,
    send,
)
from sendgate.models.consent import Conversation
from sendgate.models.controls import RecentTexts, RecipientSends, inbound_digest
from sendgate.models.gate import CONTACTS, RECIPIENTS, TEXTS, OverlayStore, key
from sendgate.models.policy import Policy, PolicyError


def summary(decisions) -> list[tuple]:
    return [(d.request_id, d.outcome, d.reason, d.deliver_at) for d in decisions]


# --- 1. request validity ---------------------------------------------------------------------------
def test_a_paced_slot_after_the_requests_validity_is_refused_and_takes_no_slot():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(10))  # the free allowance
    first = h.decide(send("u11", text=PARCEL, valid_for_s=120))  # slot T + 60 s: within 120 s
    late = h.decide(send("u12", text=PARCEL, valid_for_s=90))  # slot T + 120 s: after T + 90 s
    after = h.decide(send("u13", text=PARCEL))  # gets the slot u12 would have had
    assert summary([first, late, after]) == [
        ("r-u11-0", "delayed", "burst_paced", T + MINUTE),
        ("r-u12-0", "rejected", "expired_before_slot", T + 2 * MINUTE),
        ("r-u13-0", "delayed", "burst_paced", T + 2 * MINUTE),
    ]
    assert "valid_for_s" in late.detail and "takes no slot" in late.detail
    assert not [d for d in h.last_deliveries]


def test_the_policy_default_validity_applies_to_sends_without_the_field():
    h = Harness(Policy(default_valid_for_s=30))
    h.feed(*established())
    h.sends(recipients(10))
    assert h.decide(send("u11", text=PARCEL)).reason == "expired_before_slot"  # slot 60 s away, valid 30 s
    assert h.decide(send("u12", text=PARCEL, valid_for_s=600)).outcome == "delayed"  # the field wins


def test_a_pending_request_whose_validity_ends_before_event_time_reaches_its_slot_is_cancelled():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(10))
    assert h.decide(send("u11", text=PARCEL, valid_for_s=90)).deliver_at == T + MINUTE
    h.decide(send("u12", text=PARCEL))  # no validity: waits for its slot at T + 120 s
    # no tick came between the slot (T + 60 s) and the end of validity (T + 90 s): an outage
    out = h.feed(event("tick", 3 * MINUTE))
    assert summary(out) == [
        ("r-u11-0", "cancelled", "expired", T + MINUTE),
        ("r-u12-0", "released", "slot_reached", T + 2 * MINUTE),
    ]
    assert [d.request_id for d in h.last_deliveries] == ["r-u12-0"]


def test_a_pending_request_released_in_time_is_delivered():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(10))
    h.decide(send("u11", text=PARCEL, valid_for_s=90))
    assert summary(h.feed(event("tick", MINUTE + 5 * SECOND))) == [("r-u11-0", "released", "slot_reached", T + MINUTE)]


# --- 2. per-recipient limits -----------------------------------------------------------------------
LIMITS = Policy(recipient_limits=[[3, 3600], [5, 86400]])


def test_recipient_sends_find_the_first_slot_every_window_allows():
    limits = LIMITS.recipient_limits
    sends = RecipientSends()
    slots = []
    for _ in range(7):
        at, _window = sends.slot(0, limits)
        sends.record(at, 0, limits)
        slots.append(at)
    # 3 an hour: three at 0, two at 1 h (then 5 in the day), the 6th and 7th when the day's first leave
    assert slots == [0, 0, 0, HOUR, HOUR, DAY, DAY]
    assert sends.slot(DAY, limits) == (DAY, None)  # windows are (t - w, t]: the first three have left the day
    sends.record(DAY, DAY, limits)
    assert sends.slot(DAY, limits) == (DAY + HOUR, (3, 3600))
    assert RecipientSends.from_bytes(sends.to_bytes()) == sends


def test_recipient_sends_fit_a_send_between_delayed_ones_only_where_every_window_allows():
    limits = ((2, 3600),)
    sends = RecipientSends([0, 2 * HOUR])
    assert sends.slot(30 * MINUTE, limits) == (30 * MINUTE, None)  # (0, 30 min) and (30 min, 2 h) hold 2 each
    sends = RecipientSends([0, 0, 2 * HOUR])
    assert sends.slot(30 * MINUTE, limits) == (HOUR, (2, 3600))


def test_recipient_sends_never_forget_a_slot_still_to_come():
    limits = ((1, 60),)
    sends = RecipientSends()
    slots = []
    for _ in range(8):  # more delayed slots than the past is allowed to keep
        at, _window = sends.slot(0, limits)
        sends.record(at, 0, limits)
        slots.append(at)
    assert slots == [i * MINUTE for i in range(8)]


def test_recipient_sends_forget_what_no_window_can_see():
    limits = ((2, 3600),)
    sends = RecipientSends()
    for at in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90):  # replies: counted beyond the limit
        sends.record(at, at, limits)
    assert len(sends.times) == 8  # 4 x the largest count
    sends.record(2 * HOUR, 2 * HOUR, limits)
    assert sends.times == [2 * HOUR]


def test_sends_beyond_a_recipients_window_are_delayed_to_its_next_slot_and_replies_are_never_held():
    h = Harness(LIMITS)
    h.feed(*established())
    out = [h.decide(send("fan", at=i * MINUTE, text=UNRELATED[i])) for i in range(3)]
    assert [d.outcome for d in out] == ["accepted"] * 3  # different texts: no burst pacing
    fourth = h.decide(send("fan", at=10 * MINUTE, text="One more thing about your order"))
    assert (fourth.outcome, fourth.reason, fourth.deliver_at) == ("delayed", "recipient_limit", T + HOUR)
    assert "at most 3 send(s) to this userkey in any 1 h" in fourth.detail
    # a reply goes at once, and counts
    h.feed(event("inbound", 11 * MINUTE, event_id="in-f", userkey="fan", text="ok, what is it?"))
    reply = h.decide(send("fan", at=12 * MINUTE, text="Your parcel is late", reply_to="in-f"))
    assert (reply.outcome, reply.reason) == ("accepted", "reply")
    later = h.decide(send("fan", at=30 * MINUTE, text="A survey about your last order"))  # not a reply
    # 5 a day: 3 at 0-2 min, the delayed one at 1 h, the reply at 12 min fill the day: its slot T + 1 day
    # is more than max_delay_s (6 h) away
    assert (later.outcome, later.reason, later.retry_after_s) == (
        "rejected",
        "recipient_limit",
        (DAY - 30 * MINUTE - 6 * HOUR) // 1000,
    )


def test_a_send_delayed_by_the_recipients_limits_is_released_at_its_slot():
    h = Harness(Policy(recipient_limits=[[1, 3600]]))
    h.feed(*established())
    h.decide(send("fan", text=UNRELATED[0]))
    held = h.decide(send("fan", at=MINUTE, text=UNRELATED[1]))
    assert (held.outcome, held.reason, held.deliver_at) == ("delayed", "recipient_limit", T + HOUR)
    assert summary(h.feed(event("tick", HOUR))) == [(held.request_id, "released", "slot_reached", T + HOUR)]
    assert [d.request_id for d in h.last_deliveries] == [held.request_id]


def test_a_recipients_slot_beyond_max_delay_is_refused_with_retry_after():
    h = Harness(Policy(recipient_limits=[[1, 86400]], max_delay_s=3600))
    h.feed(*established())
    assert h.decide(send("fan", text=UNRELATED[0])).outcome == "accepted"
    refused = h.decide(send("fan", at=MINUTE, text=UNRELATED[1]))
    assert (refused.outcome, refused.reason) == ("rejected", "recipient_limit")
    assert refused.retry_after_s == (DAY - MINUTE - HOUR) // 1000
    # refused: counted nowhere; its text took no burst slot (no cluster for it)
    assert h.store.tables[RECIPIENTS][key(APP, "fan")] and len(h.sender(APP, SENDER).clusters) == 1


def test_without_recipient_limits_no_row_is_written():
    h = Harness()
    h.feed(*established())
    h.sends(recipients(3))
    assert not h.store.tables[RECIPIENTS]


# --- 3. the auto-reply loop guard --------------------------------------------------------------------
def loop(
    h: Harness, n: int, text: str = "Thanks for your message! We will reply soon. (auto-reply #{i})", start: int = 0
) -> list:
    """The user's bot sends the same text n times, a minute apart; the app answers each one."""
    out = []
    for i in range(n):
        at = start + i * MINUTE
        h.feed(event("inbound", at, event_id=f"in-{start}-{i}", userkey="bot", text=text.format(i=i)))
        out.append(h.decide(send("bot", at=at + SECOND, text=f"We got your message {i}", reply_to=f"in-{start}-{i}")))
    return out


def test_replies_to_a_repeating_inbound_text_are_delayed_then_refused():
    h = Harness()
    h.feed(*established())
    out = loop(h, 11)
    # policy: more than 3 repeats within an hour, each answered: held 300 s; 10 and more: refused
    assert [d.reason for d in out] == ["reply"] * 3 + ["loop_suspected"] * 8
    assert [d.outcome for d in out[3:]] == ["delayed"] * 6 + ["rejected"] * 2
    assert out[3].deliver_at == T + 3 * MINUTE + SECOND + 300 * SECOND
    assert "same text 4 times within 60 min and the app replied to 2 of the repeats" in out[3].detail
    assert "same text 10 times" in out[9].detail


def test_a_different_inbound_message_ends_the_loop():
    h = Harness()
    h.feed(*established())
    assert loop(h, 5)[-1].reason == "loop_suspected"
    h.feed(event("inbound", 10 * MINUTE, event_id="in-human", userkey="bot", text="Can I talk to a person?"))
    assert h.decide(send("bot", at=10 * MINUTE + SECOND, text="Sure", reply_to="in-human")).reason == "reply"


def test_the_same_text_spread_over_more_than_the_loop_window_is_no_loop():
    h = Harness()
    h.feed(*established())
    out = loop(h, 3) + loop(h, 3, start=2 * HOUR)  # two runs of 3, two hours apart
    assert [d.reason for d in out] == ["reply"] * 6


def test_the_loop_state_is_a_few_bytes_and_older_rows_read():
    conv = Conversation()
    conv.record_text(inbound_digest("hello"), T, HOUR)
    conv.record_inbound("in-1", T)
    assert conv.loop == [inbound_digest("hello")] and conv.loop_counts == (1, 0)
    assert Conversation.from_bytes(conv.to_bytes()) == conv
    old = Conversation.from_bytes(b'[1700000000000,1700000000000,[["in-1",1700000000000]],true]')
    assert old.loop is None and old.loop_counts == (0, 0)
    assert inbound_digest("Auto-reply #12, sent 10:31") == inbound_digest("auto-reply  #13, sent 10:32")


# --- 4. contact lists ----------------------------------------------------------------------------------
IM = Policy(contact_list_networks=["xmpp"])


def test_a_send_on_a_contact_list_network_needs_the_users_authorization():
    h = Harness(IM)
    h.feed(*established())
    refused = h.decide(send("u1", network="xmpp"))
    assert (refused.outcome, refused.reason) == ("rejected", "not_in_contacts")
    assert "contact event with authorized: true" in refused.detail
    assert h.decide(send("u1", at=1, network="sms")).outcome == "accepted"  # other networks: unaffected
    h.feed(event("contact", 2, userkey="u1", network="xmpp", authorized=True))
    assert h.decide(send("u1", at=3, network="xmpp")).outcome == "accepted"
    h.feed(event("contact", 4, userkey="u1", network="xmpp", authorized=False))
    assert h.decide(send("u1", at=5, network="xmpp")).reason == "not_in_contacts"


def test_an_inbound_on_the_network_authorizes_the_bot_there_only():
    h = Harness(IM)
    h.feed(*established(grant=False))
    h.feed(event("inbound", 0, event_id="in-x", userkey="pal", network="xmpp", text="hi bot"))
    assert h.decide(send("pal", at=SECOND, network="xmpp", reply_to="in-x")).reason == "reply"
    h.feed(event("inbound", 0, event_id="in-s", userkey="texter", network="sms", text="hi"))
    assert h.decide(send("texter", at=SECOND, network="xmpp", reply_to="in-s")).reason == "not_in_contacts"
    assert set(h.store.tables[CONTACTS]) == {key(APP, "pal", "xmpp")}


def test_an_opt_out_still_wins_on_a_contact_list_network():
    h = Harness(IM)
    h.feed(*established(), event("opt_out", 0, userkey="u1"))
    assert h.decide(send("u1", at=1, network="xmpp")).reason == "opted_out"


# --- 4b. the same text again and again (a runaway job) ---------------------------------------------------
REMINDER = "Reminder: your appointment is tomorrow at 10:00. Reply C to confirm"


def test_the_same_text_to_one_userkey_beyond_the_limit_is_refused_saying_how_often_and_since_when():
    h = Harness()  # duplicate_text_limit 5 in duplicate_text_window_s 1800
    h.feed(*established())
    out = [h.decide(send("u1", at=i * MINUTE, text=REMINDER, request_id=f"again-{i}")) for i in range(7)]
    assert [d.outcome for d in out] == ["accepted"] * 5 + ["rejected"] * 2
    refused = out[5]
    assert refused.reason == "duplicate_text" and not refused.reply
    assert "5 times since 2023-11-14T22:13:20" in refused.detail and "duplicate_text_limit" in refused.detail
    # one more fits when the first of the five leaves the 30-minute window: at T + 30 min
    assert refused.retry_after_s == 30 * 60 - 5 * 60
    assert [d.request_id for d in h.last_deliveries] == []
    later = h.decide(send("u1", at=30 * MINUTE + 1, text=REMINDER, request_id="later"))
    assert later.outcome == "accepted"


def test_the_same_text_disguised_counts_as_the_same_and_other_texts_or_userkeys_do_not():
    h = Harness(Policy(duplicate_text_limit=2))
    h.feed(*established())
    assert h.decide(send("u1", at=0, text=REMINDER)).outcome == "accepted"
    assert (
        h.decide(
            send("u1", at=1, text="Rеmіndеr:\u200b your appointment is tomorrow at 10:00. Reply C to confirm")
        ).outcome
        == "accepted"
    )  # look-alikes
    assert h.decide(send("u2", at=2, text=REMINDER)).outcome == "accepted"  # another userkey
    assert h.decide(send("u1", at=3, text=REMINDER.replace("10:00", "11:00"))).outcome == "accepted"  # new time
    assert h.decide(send("u1", at=4, text=REMINDER.upper())).reason == "duplicate_text"


def test_replies_are_not_counted_and_a_refused_duplicate_takes_no_burst_slot():
    h = Harness(Policy(duplicate_text_limit=1))
    h.feed(*established())
    for i in range(3):  # the loop guard, not this rule, watches replies
        h.feed(event("inbound", i, event_id=f"q{i}", userkey="u1", text=f"question {i}"))
        assert h.decide(send("u1", at=i, text=REMINDER, reply_to=f"q{i}")).reason == "reply"
    assert h.decide(send("u2", at=5, text=PARCEL)).outcome == "accepted"
    assert h.decide(send("u2", at=6, text=PARCEL)).reason == "duplicate_text"
    # u2 was counted once for the text's cluster: nine more recipients still go at once
    assert [d.outcome for d in h.sends(recipients(9, start=10), at=7)] == ["accepted"] * 9
    assert h.decide(send("u99", at=8, text=PARCEL)).outcome == "delayed"


def test_no_limit_when_the_policy_sets_none():
    h = Harness(Policy(duplicate_text_limit=0))
    h.feed(*established())
    assert {h.decide(send("u1", at=i, text=REMINDER)).outcome for i in range(8)} == {"accepted"}
    assert not h.store.tables[TEXTS]


def test_the_recent_texts_row_stays_small():
    h = Harness()
    h.feed(*established())
    for i in range(200):  # a busy userkey: two hundred different texts in 30 minutes
        h.decide(send("u1", at=i * 5 * SECOND, text=f"{UNRELATED[i % 4]} #{chr(0x41 + i % 26)}{i}"))
    row = h.store.tables[TEXTS][key("app1", "u1")]
    assert len(RecentTexts.from_bytes(row).sent) == 4 * 5 and len(row) < 600


# --- the policy settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, message",
    [
        ({"recipient_limits": [[3]]}, "recipient_limits"),
        ({"recipient_limits": [[0, 60]]}, "recipient_limits"),
        ({"contact_list_networks": ["XMPP"]}, "contact_list_networks"),
        ({"default_valid_for_s": 36_001}, "default_valid_for_s"),
        ({"loop_repeats": 5, "loop_reject_repeats": 5}, "loop_reject_repeats"),
        ({"duplicate_text_limit": -1}, "duplicate_text_limit"),
        ({"duplicate_text_window_s": 0}, "duplicate_text_window_s"),
    ],
)
def test_bad_control_settings_are_refused_with_the_key(values, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_mapping(values)


# --- 5. campaign pre-flight (Gate.check) --------------------------------------------------------------------
def campaign_history(h: Harness) -> list[str]:
    """An app with some consenting userkeys, an opted-out one, a pending paced send, and a
    campaign list of 40 that mixes them with strangers."""
    h.feed(*established(grant=False))
    fans = [f"fan{i}" for i in range(30)]
    h.feed(*[event("inbound", -HOUR, userkey=u, text="hi") for u in fans])
    h.feed(event("opt_out", -HOUR, userkey="fan3"))
    h.sends(fans[20:28], at=-MINUTE)  # 8 of the allowance of 10 used a minute ago
    return fans + [f"stranger{i}" for i in range(10)]


def test_check_answers_what_the_gate_then_decides_and_writes_nothing():
    h = Harness()
    audience = campaign_history(h)
    before = {name: dict(rows) for name, rows in h.store.tables.items()}
    checked = h.gate.check(APP, SENDER, PARCEL, audience, T, OverlayStore(h.store.get, h.store.junk))
    assert {name: dict(rows) for name, rows in h.store.tables.items()} == before  # nothing live changed
    real = h.sends(audience, at=0)
    assert [(d.userkey, d.outcome, d.reason, d.deliver_at, d.detail) for d in checked] == [
        (d.userkey, d.outcome, d.reason, d.deliver_at, d.detail) for d in real
    ]
    outcomes = {d.outcome for d in checked}
    assert outcomes == {"accepted", "delayed", "rejected"}  # the list exercises every answer
    assert all(d.request_id == "" for d in checked)


def test_check_does_not_touch_the_live_gates_decoded_rows():
    h = Harness()
    audience = campaign_history(h)
    decoded = h.gate.decoded
    cached = {kind: dict(held.held) for kind, held in (("rows", decoded.rows), ("senders", decoded.senders))}
    h.gate.check(APP, SENDER, PARCEL, audience, T, OverlayStore(h.store.get, h.store.junk))
    for kind, held in (("rows", decoded.rows), ("senders", decoded.senders)):
        assert held.held.keys() == cached[kind].keys()
        assert all(held.held[k][0] == cached[kind][k][0] for k in cached[kind])


def test_a_send_refused_after_the_burst_step_takes_no_slot_in_its_senders_count():
    h = Harness()
    h.feed(*established(), *established(sender="S2"))
    h.sends(recipients(10))  # S1: the app's 10 free recipients of the text
    refused = [h.decide(send(f"v{i}", text=PARCEL, sender="S2", valid_for_s=30)) for i in range(3)]
    # S2's own count had room, the app-wide slot (60 s away) comes after the validity: refused
    assert {(d.outcome, d.reason) for d in refused} == {("rejected", "expired_before_slot")}
    s2 = h.sender(APP, "S2")
    assert [c.count for c in s2.clusters] == [0] and [c.paced for c in s2.clusters] == [0]
    ok = h.decide(send("w1", text=PARCEL, sender="S2"))
    assert (ok.outcome, ok.deliver_at) == ("delayed", T + MINUTE)  # the first free app-wide slot
