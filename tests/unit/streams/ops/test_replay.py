"""replay.py: the replay's topic name and the comparison of its decisions with the live ones (a
replay of a log on a broker: tests/integration/test_kafka_replay.py)."""

from __future__ import annotations

import pytest

from sendgate.streams.config import ConfigError, Settings
from sendgate.streams.ops.replay import ReplayResult, compare, replay_topic


def test_a_replay_writes_to_a_topic_of_its_own_name():
    assert replay_topic(Settings(topic_prefix="acme."), "stricter-burst_2") == "acme.replay.stricter-burst_2.decisions"
    for bad in ("", "a.b", "x" * 65, "../decisions", "new policy"):
        with pytest.raises(ConfigError, match="replay name must be 1-64 letters"):
            replay_topic(Settings(), bad)


def d(app: str, request_id: str, outcome: str, reason: str) -> dict:
    return {
        "app": app,
        "request_id": request_id,
        "outcome": outcome,
        "reason": reason,
        "decision_id": f"{app}:{request_id}:{outcome}:{reason}",
    }


def test_requests_are_compared_by_their_chain_of_decisions_within_their_app():
    live = [
        d("acme", "r1", "accepted", "ok"),
        d("acme", "r2", "delayed", "burst_paced"),
        d("acme", "r2", "released", "due"),
        d("globex", "r1", "accepted", "ok"),
        d("acme", "r4", "accepted", "ok"),
    ]
    replayed = [
        d("acme", "r1", "accepted", "ok"),
        d("acme", "r2", "rejected", "burst_limit"),
        d("globex", "r1", "rejected", "opted_out"),
        d("acme", "r3", "accepted", "ok"),
        d("acme", "r4", "accepted", "ok"),
    ]
    summary, changed = compare(live, replayed)
    assert changed == [
        {
            "app": "acme",
            "request_id": "r2",
            "live": [("delayed", "burst_paced"), ("released", "due")],
            "replay": [("rejected", "burst_limit")],
        },
        {"app": "acme", "request_id": "r3", "live": [], "replay": [("accepted", "ok")]},
        {"app": "globex", "request_id": "r1", "live": [("accepted", "ok")], "replay": [("rejected", "opted_out")]},
    ]
    lines = summary.splitlines()
    assert lines[0].split() == ["outcome/reason", "live", "replay"]
    assert lines[1:6] == [
        f"{k:<24} {a:>6} {b:>8}"
        for k, a, b in (
            ("accepted/ok", 3, 3),
            ("delayed/burst_paced", 1, 0),
            ("rejected/burst_limit", 0, 1),
            ("rejected/opted_out", 0, 1),
            ("released/due", 1, 0),
        )
    ]
    assert "requests: 4 live, 5 replayed, 3 changed" in summary
    assert lines[-3].split() == ["delayed/burst_paced", "->", "rejected/burst_limit", "1"]
    assert lines[-2].split() == ["(none)", "->", "accepted/ok", "1"]


def test_identical_runs_change_nothing_and_a_replay_of_nothing_has_no_rate():
    live = [d("acme", "r1", "accepted", "ok")]
    summary, changed = compare(live, list(live))
    assert changed == [] and summary.endswith("requests: 1 live, 1 replayed, 0 changed")
    assert ReplayResult(0, 0, 0, 0.0).rate == 0.0 and ReplayResult(500, 400, 1, 2.0).rate == 250.0


def test_a_decision_repeated_with_its_decision_id_is_one_decision_on_either_side():
    # a batch decided again after a crash writes its decisions twice; a retry gets its first
    # answer again: neither is a change of the policy
    live = [
        d("acme", "r1", "delayed", "burst_paced"),
        d("acme", "r1", "delayed", "burst_paced"),
        d("acme", "r1", "released", "slot_reached"),
        d("acme", "r1", "delayed", "burst_paced"),
    ]
    replayed = [d("acme", "r1", "delayed", "burst_paced"), d("acme", "r1", "released", "slot_reached")]
    summary, changed = compare(live, replayed)
    assert changed == [] and "1 live, 1 replayed, 0 changed" in summary
