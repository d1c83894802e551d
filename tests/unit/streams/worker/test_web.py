"""web.py: the pre-flight's body and answer (`check_answer`), and a sender's delayed requests as the
sender view lists them, on a MemoryStore (the routes on a worker, and `sendgate check` against
one: tests/integration/test_kafka_controls.py)."""

from __future__ import annotations

import pytest

from conftest import APP, PARCEL, SENDER, T, Harness, established, recipients
from sendgate.streams.worker.web import MAX_CHECK_RECIPIENTS, _pending_of, check_answer


def answer(h: Harness, body: dict) -> dict:
    return check_answer(h.gate, h.store.get, h.store.junk, APP, body)


def test_a_count_checks_never_seen_userkeys_and_the_summary_adds_up():
    h = Harness()
    h.feed(*established())  # an unrestricted grant: strangers may be messaged
    doc = answer(h, {"sender": SENDER, "text": "Spring sale: 20% off everything", "count": 14, "ts": T})
    assert [r["userkey"] for r in doc["recipients"]][:2] == ["new-recipient-1", "new-recipient-2"]
    assert doc["summary"] == {
        "now": 10,
        "paced": 4,
        "refused": 0,
        "last_slot": doc["recipients"][-1]["deliver_at"],
        "refused_by_reason": {},
    }
    assert [r["outcome"] for r in doc["recipients"]] == ["accepted"] * 10 + ["delayed"] * 4
    assert (doc["app"], doc["sender"], doc["network"], doc["ts"]) == (APP, SENDER, "sms", T)


def test_a_check_writes_nothing():
    h = Harness()
    h.feed(*established())
    before = {table: dict(rows) for table, rows in h.store.tables.items()}
    answer(h, {"sender": SENDER, "text": "Spring sale: 20% off everything", "recipients": ["u1", "u2"], "ts": T})
    assert h.store.tables == before


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "must be a JSON object"),
        ({"sender": SENDER, "text": "hi"}, "give 'recipients'"),
        ({"sender": SENDER, "text": "hi", "count": 0}, "give 'recipients'"),
        ({"sender": SENDER, "text": "hi", "count": MAX_CHECK_RECIPIENTS + 1}, "at most"),
        ({"sender": SENDER, "text": "hi", "count": 10**12}, "at most"),  # refused before a list is built
        ({"text": "hi", "recipients": ["u1"]}, "field 'sender' must be a string"),
        ({"sender": SENDER, "text": "hi", "recipients": ["u\n1"]}, "control characters"),
        ({"sender": SENDER, "text": "hi", "recipients": ["u1"], "valid_for_s": 0}, "valid_for_s"),
    ],
)
def test_a_bad_body_is_refused_with_the_reason(body, message):
    with pytest.raises(ValueError, match=message):
        answer(Harness(), body)


def test_the_sender_view_lists_its_delayed_requests_through_the_apps_schedule():
    h = Harness()
    h.feed(*established(), *established(sender="S2", grant=False))
    paced = [d for d in h.sends(recipients(14), text=PARCEL) if d.outcome == "delayed"]
    other = [d for d in h.sends(recipients(12, start=50), sender="S2", text=PARCEL) if d.outcome == "delayed"]
    assert len(paced) == 4 and other  # the other sender's delayed requests are not listed
    listed = _pending_of(h.store.get, APP, SENDER)
    assert sorted((p["request_id"], p["userkey"], p["deliver_at"]) for p in listed) == sorted(
        (d.request_id, d.userkey, d.deliver_at) for d in paced
    )
    assert {p["cluster_id"] for p in listed} == {d.cluster_id for d in paced}
    assert _pending_of(h.store.get, APP, "nobody") == []
