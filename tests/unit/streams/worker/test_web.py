"""web.py check_answer and cli.py format_check: the pre-flight's body, answer and table, on a
MemoryStore (the worker's route and the CLI against a broker: tests/integration/test_kafka_controls.py)."""
from __future__ import annotations

import pytest

from conftest import APP, SENDER, T, Harness, established
from sendgate.streams.cli import format_check
from sendgate.streams.worker.web import MAX_CHECK_RECIPIENTS, check_answer


def answer(h: Harness, body: dict) -> dict:
    return check_answer(h.gate, h.store.get, h.store.junk, APP, body)


def test_a_count_checks_never_seen_userkeys_and_the_summary_adds_up():
    h = Harness()
    h.feed(*established())  # an unrestricted grant: strangers may be messaged
    doc = answer(h, {"sender": SENDER, "text": "Spring sale: 20% off everything", "count": 14, "ts": T})
    assert [r["userkey"] for r in doc["recipients"]][:2] == ["new-recipient-1", "new-recipient-2"]
    assert doc["summary"] == {"now": 10, "paced": 4, "refused": 0, "last_slot": doc["recipients"][-1]["deliver_at"],
                              "refused_by_reason": {}}
    lines = format_check(doc).splitlines()
    assert "10 now, 4 paced (the last at" in lines[0] and len(lines) == 2 + 14
    assert lines[-1].split()[:3] == ["new-recipient-14", "delayed", "burst_paced"]


@pytest.mark.parametrize("body, message", [
    ([], "must be a JSON object"),
    ({"sender": SENDER, "text": "hi"}, "give 'recipients'"),
    ({"sender": SENDER, "text": "hi", "count": 0}, "give 'recipients'"),
    ({"sender": SENDER, "text": "hi", "count": MAX_CHECK_RECIPIENTS + 1}, "at most"),
    ({"sender": SENDER, "text": "hi", "count": 10 ** 12}, "at most"),  # refused before a list is built
    ({"text": "hi", "recipients": ["u1"]}, "field 'sender' must be a string"),
    ({"sender": SENDER, "text": "hi", "recipients": ["u\n1"]}, "control characters"),
    ({"sender": SENDER, "text": "hi", "recipients": ["u1"], "valid_for_s": 0}, "valid_for_s"),
])
def test_a_bad_body_is_refused_with_the_reason(body, message):
    with pytest.raises(ValueError, match=message):
        answer(Harness(), body)
