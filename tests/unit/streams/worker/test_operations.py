"""operations.py status: the dashboard's JSON, from a worker's metrics and what it reads at scrape
time (the routes themselves, on a running worker: tests/integration/test_kafka_dashboard.py)."""

from __future__ import annotations

from types import SimpleNamespace

from sendgate.models.decisions import OUTCOMES, Decision
from sendgate.streams.worker.metrics import BatchTally, GateMetrics
from sendgate.streams.worker.operations import status

T = 1_700_000_000_000


def worker_with(scrape: dict, *tallies: BatchTally) -> SimpleNamespace:
    """What `status` reads of a GateWorker: its metrics and `status_now`."""
    metrics = GateMetrics(("sms",), lambda: scrape)
    for tally in tallies:
        metrics.batch_done(tally, 1)
    return SimpleNamespace(metrics=metrics, status_now=lambda: scrape, gate=SimpleNamespace(keyring=object()))


def tally_of(*decided: tuple[str, str, str], durations: dict[str, float]) -> BatchTally:
    """A batch's tally of decisions given as (sender, outcome, reason), for user 'secret-user'."""
    tally = BatchTally(durations_s=durations)
    for i, (sender, outcome, reason) in enumerate(decided):
        tally.output(Decision(f"r{i}", "shop", sender, "secret-user", "sms", outcome, reason, "", T + i))
    return tally


def test_the_status_adds_up_the_batches_and_shows_no_userkey():
    scrape = {
        "partitions": [{"partition": 1, "end": 4, "committed": 4, "lag": 0}],
        "pending": 3,
        "next_due": T + 60_000,
        "overdue_s": 0.0,
        "recovering": False,
        "recovery_remaining": 0,
        "rebalancing": False,
        "store_unwritten_rows": 0,
        "store_memory_bytes": 0,
        "standbys": {},
        "reasons": [],
    }
    first = tally_of(
        ("s1", "accepted", "reply"),
        ("s1", "delayed", "burst_paced"),
        durations={"decide": 0.001, "produce": 0.010, "checkpoint": 0.002},
    )
    second = tally_of(
        ("s2", "delayed", "burst_paced"),
        ("s2", "rejected", "burst_limit"),
        ("s1", "delayed", "burst_paced"),
        durations={"decide": 0.003, "produce": 0.005, "checkpoint": 0.001},
    )
    doc = status(worker_with(scrape, first, second))
    assert doc["state"] == {"ready": True, "recovering": False, "rebalancing": False, "reasons": []}
    assert set(doc["totals"]) == set(OUTCOMES) and doc["totals"]["delayed"] == 3 and doc["totals"]["cancelled"] == 0
    assert doc["top_reasons"][0] == {"reason": "delayed/burst_paced", "count": 3}
    assert doc["riskiest_senders"] == [
        {"app": "shop", "sender": "s1", "paced": 2},
        {"app": "shop", "sender": "s2", "paced": 2},
    ]
    assert doc["pending"] == {"held": 3, "next_release_ts": T + 60_000}
    assert doc["batches"]["count"] == 2 and doc["batches"]["failed"] == 0
    assert doc["batches"]["stages"]["produce"] == {"last_ms": 5.0, "max_ms": 10.0}
    assert [row["request_id"] for row in doc["latest"]] == ["r2", "r1", "r0", "r1", "r0"]  # the newest first
    assert "secret-user" not in repr(doc)
    assert doc["partitions"] == scrape["partitions"] and sum(h["delayed"] for h in doc["history"]) == 3


def test_before_the_first_batch_the_stages_have_no_times_and_the_reasons_say_why_not_ready():
    scrape = {
        "partitions": [],
        "pending": 0,
        "next_due": None,
        "overdue_s": 0.0,
        "recovering": True,
        "recovery_remaining": 5,
        "rebalancing": False,
        "reasons": ["recovering tables: 5 changelog row(s) left"],
    }
    doc = status(worker_with(scrape))
    assert doc["state"]["ready"] is False and doc["state"]["reasons"] == scrape["reasons"]
    assert doc["batches"]["stages"] == {
        stage: {"last_ms": None, "max_ms": None} for stage in ("decide", "produce", "checkpoint")
    }
    assert doc["history"] == [] and doc["latest"] == [] and doc["riskiest_senders"] == []
