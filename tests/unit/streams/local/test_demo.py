"""local/demo.py scenario: the decisions `sendgate demo` waits for are the ones the gate makes (the
demo end to end, with a broker and a worker: `sendgate demo`)."""

from __future__ import annotations

from collections import Counter

from sendgate.models.decisions import Decision
from sendgate.models.events import validate
from sendgate.models.gate import Gate, MemoryStore
from sendgate.streams.local.demo import APP, scenario

NOW = 1_700_000_000_000


def test_the_demo_waits_for_exactly_the_decisions_its_events_and_the_ticker_make():
    events, expected = scenario(NOW)
    gate, store, decided = Gate(), MemoryStore(), []
    for doc in [*events, {"type": "tick", "app": APP, "ts": NOW}]:  # the worker's ticker, a second later
        decided += [r for r in gate.handle(validate(doc, NOW), store) if isinstance(r, Decision)]
    assert len(decided) == expected
    outcome = {d.request_id: d.outcome for d in decided if d.outcome != "released"}
    assert (outcome["reply-alice"], outcome["cold-bob"], outcome["news-carol"], outcome["after-stop-dave"]) == (
        "accepted",
        "rejected",
        "accepted",
        "rejected",
    )
    assert {d.request_id: d.reason for d in decided}["after-stop-dave"] == "opted_out"
    blast = Counter(d.outcome for d in decided if d.request_id.startswith("blast-"))
    assert blast == {"accepted": 10, "delayed": 4, "released": 4}  # as the scenario's comment says
