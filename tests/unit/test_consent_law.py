"""The consent rules the law adds to STOP: one confirmation after an opt-out (FCC 64.1200(a)(12)),
HELP always answered (CTIA 5.1.3), and an audit record of every consent change."""

from __future__ import annotations

import orjson

from conftest import APP, MINUTE, PARCEL, SECOND, SENDER, Harness, event, recipients, send
from sendgate.models.consent import Conversation, Userkey
from sendgate.models.decisions import ConsentRecord
from sendgate.models.gate import USERKEYS, Gate, MemoryStore
from sendgate.models.events import validate


def audit(h: Harness) -> list[ConsentRecord]:
    return [r for r in h.records if isinstance(r, ConsentRecord)]


def test_one_confirmation_answers_the_opt_out_and_nothing_after_it(gate: Harness):
    gate.feed(event("inbound", 0, event_id="in-stop", userkey="u1", text="Stop texting me"))
    first = gate.decide(
        send("u1", at=30 * SECOND, reply_to="in-stop", text="You're unsubscribed. Reply START to rejoin.")
    )
    assert (first.outcome, first.reason, first.reply) == ("accepted", "opt_out_confirmation", True)
    assert len(gate.last_deliveries) == 1
    second = gate.decide(send("u1", at=MINUTE, reply_to="in-stop"))
    assert (second.outcome, second.reason) == ("rejected", "opted_out")
    assert "already sent" in second.detail


STOP_WORDINGS = (
    "Stop.",
    "STOP",
    "stop",
    "Stop!",
    "unsubscribe",
    "Stop texting me",
    "please stop",
    "STOP ALL",
    "cancel",
    "end",
    "quit",
    "opt out",
    "Remove me",
)


def test_a_send_that_does_not_name_the_stop_is_no_confirmation_however_soon():
    # FCC 64.1200(a)(12) allows one text that confirms the opt-out; the gate cannot read intent,
    # so only a send whose reply_to names the opt-out inbound may be it: not a scheduled reminder
    # that happens to come 2 s after "Stop."
    refused = []
    for wording in STOP_WORDINGS:
        h = Harness()
        h.feed(event("inbound", 0, event_id="in-stop", userkey="u1", text=wording))
        if not Userkey.from_bytes(h.store.get(USERKEYS, f"{APP}\x1fu1".encode())).opted_out:
            continue  # not an opt-out in these words (models/wording.py decides that)
        d = h.decide(send("u1", at=2 * SECOND, text="Reminder: your appointment is tomorrow at 10"))
        assert (d.outcome, d.reason) == ("rejected", "opted_out"), wording
        assert "reply_to names the opt-out" in d.detail
        refused.append(wording)
        confirmed = h.decide(send("u1", at=3 * SECOND, reply_to="in-stop", text="You're unsubscribed."))
        assert (confirmed.outcome, confirmed.reason) == ("accepted", "opt_out_confirmation"), wording
    assert len(refused) >= 10


def test_a_confirmation_13_minutes_later_is_refused(gate: Harness):
    gate.feed(event("inbound", 0, event_id="in-stop", userkey="u1", text="STOP"))
    d = gate.decide(send("u1", at=13 * MINUTE, reply_to="in-stop"))
    assert (d.outcome, d.reason) == ("rejected", "opted_out")
    assert "within 300 s" in d.detail and "780 s after" in d.detail


def test_an_opt_out_event_has_no_inbound_to_confirm(gate: Harness):
    gate.feed(event("inbound", 0, event_id="in1", userkey="u1", text="hi"), event("opt_out", SECOND, userkey="u1"))
    d = gate.decide(send("u1", at=MINUTE, reply_to="in1"))
    assert (d.outcome, d.reason) == ("rejected", "opted_out")


def test_a_send_answering_another_inbound_is_no_confirmation(gate: Harness):
    gate.feed(
        event("inbound", 0, event_id="in1", userkey="u1", text="what is my balance?"),
        event("inbound", SECOND, event_id="in-stop", userkey="u1", text="STOP"),
    )
    d = gate.decide(send("u1", at=MINUTE, reply_to="in1"))
    assert (d.outcome, d.reason) == ("rejected", "opted_out")


def test_help_is_answered_even_after_an_opt_out(gate: Harness):
    gate.feed(
        event("inbound", 0, userkey="u1", text="STOP"),
        event("inbound", MINUTE, event_id="in-help", userkey="u1", text="HELP"),
    )
    d = gate.decide(
        send("u1", at=2 * MINUTE, reply_to="in-help", text="Acme alerts. Reply STOP to end, START to rejoin.")
    )
    assert (d.outcome, d.reason, d.reply) == ("accepted", "help_reply", True)
    for later in (send("u1", at=3 * MINUTE, text=PARCEL, reply_to="in-help"), send("u1", at=4 * MINUTE, text=PARCEL)):
        d = gate.decide(later)  # one answer per HELP: marketing cannot ride on it
        assert (d.outcome, d.reason) == ("rejected", "opted_out")


def test_help_gives_no_consent(gate: Harness):
    gate.feed(event("inbound", 0, event_id="in-help", userkey="new", text="info?"))
    assert gate.decide(send("new", at=MINUTE)).reason == "help_reply"
    for later in (send("new", at=2 * MINUTE), send("new", at=3 * MINUTE, reply_to="in-help")):
        d = gate.decide(later)  # HELP is no conversation, and its one answer went
        assert (d.outcome, d.reason) == ("rejected", "no_conversation")


def test_help_replies_are_never_paced(gate: Harness):
    users = recipients(15)
    gate.feed(*[event("inbound", 0, event_id=f"h-{u}", userkey=u, text="HELP") for u in users])
    ds = [gate.decide(send(u, at=SECOND, reply_to=f"h-{u}", text=PARCEL)) for u in users]
    assert {(d.outcome, d.reason) for d in ds} == {("accepted", "help_reply")}


def test_every_consent_change_and_every_ambiguous_inbound_is_audited(gate: Harness):
    gate.feed(
        event("inbound", 0, event_id="i-stop", userkey="u1", sender="S2", text="Please stop texting me"),
        event("inbound", SECOND, event_id="i-amb", userkey="u2", text="I will stop by at noon"),
        event("inbound", 2 * SECOND, event_id="i-start", userkey="u1", text="START"),
        event("opt_out", 3 * SECOND, event_id="o-web", userkey="u3", source="web-form"),
        event("inbound", 4 * SECOND, event_id="i-hi", userkey="u4", text="hello"),
    )
    got = [(r.userkey, r.kind, r.rule, r.source, r.source_event_id, r.sender, r.matched) for r in audit(gate)]
    assert got == [
        ("u1", "opt_out", "request", "inbound", "i-stop", "S2", "stop"),
        ("u2", "ambiguous", "other_sense", "inbound", "i-amb", SENDER, "stop"),
        ("u1", "opt_in", "per_se_opt_in", "inbound", "i-start", SENDER, "start"),
        ("u3", "opt_out", "opt_out_event", "opt_out event (web-form)", "o-web", "", ""),
    ]
    first = audit(gate)[0]
    assert first.text == "please stop texting me" and first.scope == "app"
    assert first.record_id == f"{APP}:inbound:i-stop:opt_out"
    assert orjson.loads(first.to_json())["type"] == "consent"


def test_with_a_userkey_secret_the_audit_holds_the_hashed_userkey():
    gate, store = Gate(userkey_secret=b"s3cret"), MemoryStore()
    [record] = gate.handle(validate(event("inbound", 0, userkey="+15550001", text="STOP"), 0), store)
    assert record.userkey == gate.stored_userkey("+15550001") != "+15550001"


def test_rows_written_before_these_rules_still_read():
    old_user = Userkey.from_bytes(b"[true,false,1700000000000,\"keyword STOP to sender 'S1'\"]")
    assert old_user.opted_out and old_user.opt_out_inbound == "" and old_user.confirmed is False
    old_conv = Conversation.from_bytes(b'[1700000000000,1700000000000,[["in1",1700000000000]]]')
    assert old_conv.exists and old_conv.conversed is None and old_conv.inbound_ids == ["in1"]
