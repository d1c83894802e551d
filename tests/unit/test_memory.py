"""What an app said before (models/memory.py): a retried request gets its first answer and is
delivered once; an id reused for another request is refused; a repeated inbound or consent event
counts once; and what is remembered is forgotten by event time, so the rows stay bounded."""

from __future__ import annotations

from conftest import APP, DAY, MINUTE, PARCEL, SECOND, SENDER, T, Harness, event, established, recipients, send
from sendgate.models.consent import Conversation, Userkey
from sendgate.models.decisions import Decision, Delivery
from sendgate.models.gate import CONVERSATIONS, SEEN, SEEN_LISTS, USERKEYS, key
from sendgate.models.policy import Policy


def deliveries(h: Harness) -> list[str]:
    return [r.request_id for r in h.records if isinstance(r, Delivery)]


def test_paced_requests_retried_after_their_release_get_their_first_answer_and_no_second_delivery():
    h = Harness()
    h.feed(event("opt_in", -DAY, userkey="u01", source="form"), *established())
    first = h.sends(recipients(14), text=PARCEL)
    assert [d.outcome for d in first[10:]] == ["delayed"] * 4
    h.feed(event("tick", 10 * MINUTE))  # all four released and delivered
    assert len(deliveries(h)) == 14
    # the producer retries them (the same request ids)
    again = [h.decide(send(u, at=11 * MINUTE, text=PARCEL, request_id=f"r-{u}-0")) for u in recipients(4, start=11)]
    assert [d.to_dict() for d in again] == [d.to_dict() for d in first[10:]]  # same decision_id, same fields
    assert len(deliveries(h)) == 14


def test_a_reply_retried_past_the_reply_window_keeps_its_decision():
    h = Harness()
    h.feed(event("inbound", 0, event_id="in-1", userkey="u1", text="where is my parcel?"))
    reply = h.decide(send("u1", at=MINUTE, reply_to="in-1", request_id="rep-1", text="On its way."))
    assert (reply.outcome, reply.reason) == ("accepted", "reply")
    retry = h.decide(send("u1", at=18 * MINUTE, reply_to="in-1", request_id="rep-1", text="On its way."))
    assert retry.decision_id == reply.decision_id and retry.to_dict() == reply.to_dict()
    assert deliveries(h) == ["rep-1"]


def test_an_invoice_accepted_before_stop_is_not_delivered_again_when_retried_after_it():
    h = Harness()
    h.feed(event("inbound", 0, event_id="in-1", userkey="u1", text="send me the invoice"))
    invoice = h.decide(send("u1", at=30 * SECOND, request_id="inv-7", text="Invoice #7: $20"))
    h.feed(event("inbound", MINUTE, event_id="in-stop", userkey="u1", text="STOP"))
    retry = h.decide(send("u1", at=MINUTE + 100 * SECOND, request_id="inv-7", text="Invoice #7: $20"))
    assert retry.to_dict() == invoice.to_dict()  # its first answer, not "the one confirmation"
    assert deliveries(h) == ["inv-7"]
    assert Userkey.from_bytes(h.store.get(USERKEYS, key(APP, "u1"))).confirmed is False


def test_a_request_id_reused_for_another_request_is_refused():
    h = Harness()
    h.feed(event("opt_in", 0, userkey="u1", source="form"))
    h.decide(send("u1", at=SECOND, request_id="r-1", text="Your code is 1234"))
    other = h.decide(send("u2", at=2 * SECOND, request_id="r-1", text="Your code is 1234"))
    assert (other.outcome, other.reason) == ("rejected", "request_id_reused")
    assert "a new request needs a new request_id" in other.detail
    assert deliveries(h) == ["r-1"]


def test_past_the_memory_a_request_is_decided_anew():
    h = Harness(Policy(request_memory_s=3600))
    h.feed(event("opt_in", 0, userkey="u1", source="form"))
    h.decide(send("u1", at=SECOND, request_id="r-1"))
    assert h.decide(send("u1", at=SECOND + 3600 * SECOND, request_id="r-1")).ts == T + SECOND  # at the edge
    later = h.decide(send("u1", at=2 * SECOND + 3600 * SECOND, request_id="r-1"))
    assert later.ts == T + 2 * SECOND + 3600 * SECOND and deliveries(h) == ["r-1", "r-1"]


def test_without_memory_every_send_is_decided_as_new():
    h = Harness(Policy(request_memory_s=0))
    h.feed(event("opt_in", 0, userkey="u1", source="form"))
    h.decide(send("u1", at=SECOND, request_id="r-1"))
    h.decide(send("u1", at=2 * SECOND, request_id="r-1"))
    assert deliveries(h) == ["r-1", "r-1"] and not h.store.tables[SEEN]


def test_a_repeated_inbound_counts_once_in_the_loop_guard_and_the_senders_conversations():
    once, twice = Harness(), Harness()
    inbound = event("inbound", 0, event_id="in-1", userkey="u1", text="ok")
    once.feed(inbound)
    twice.feed(inbound, {**inbound, "ts": T + MINUTE})  # the connector delivered it again
    assert twice.store.tables[CONVERSATIONS] == once.store.tables[CONVERSATIONS]
    conv = Conversation.from_bytes(twice.store.get(CONVERSATIONS, key(APP, SENDER, "u1")))
    assert conv.inbound_ids == ["in-1"]


def test_the_same_event_id_with_other_content_is_another_event():
    # an id clash (or one made on purpose to suppress a user's STOP) does not swallow the event
    h = Harness()
    h.feed(
        event("opt_in", 0, event_id="e-1", userkey="u1", source="form"),
        event("inbound", SECOND, event_id="e-1", userkey="u1", text="STOP"),
    )
    assert Userkey.from_bytes(h.store.get(USERKEYS, key(APP, "u1"))).opted_out


def test_a_repeated_opt_out_does_not_move_when_the_user_opted_out():
    h = Harness()
    h.feed(
        event("inbound", 0, event_id="in-1", userkey="u1", text="hi"),
        event("opt_out", MINUTE, event_id="o-1", userkey="u1", source="call"),
        event("opt_out", 9 * MINUTE, event_id="o-1", userkey="u1", source="call"),
    )
    assert Userkey.from_bytes(h.store.get(USERKEYS, key(APP, "u1"))).changed_ts == T + MINUTE


def test_what_is_remembered_is_forgotten_by_event_time_and_the_rows_stay_bounded():
    h = Harness(Policy(request_memory_s=3600))
    h.feed(event("opt_in", 0, userkey="u1", source="form"))
    for day in range(5):
        for i in range(300):
            h.feed(send("u1", at=day * DAY + i * SECOND, request_id=f"r-{day}-{i}", text=f"code {i}"))
        remembered = len(h.store.tables[SEEN])
        assert remembered <= 2 * 301, remembered  # at most the memory plus one day's rows
    assert not any("r-0-" in k.decode() for k in h.store.tables[SEEN])
    assert all(int(k.split(b"\x1f")[1]) >= (T + 3 * DAY) // DAY for k in h.store.tables[SEEN_LISTS])


def test_replay_of_retries_decides_the_same():
    docs = [
        event("opt_in", 0, userkey="u1", source="form"),
        send("u1", at=SECOND, request_id="r-1"),
        send("u1", at=MINUTE, request_id="r-1"),
        send("u2", at=2 * MINUTE, request_id="r-1"),
    ]
    a, b = Harness(), Harness()
    a.feed(*docs)
    b.feed(*docs)
    assert [r.to_json() for r in a.records] == [r.to_json() for r in b.records]
    assert [d.reason for d in a.records if isinstance(d, Decision)] == ["opt_in", "opt_in", "request_id_reused"]
