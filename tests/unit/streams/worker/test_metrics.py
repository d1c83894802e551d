"""docker/prometheus/alerts.yml: every rule parses and names only metrics a worker exports."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from sendgate.streams.worker.metrics import GateMetrics

ALERTS = Path(__file__).resolve().parents[3] / "docker" / "prometheus" / "alerts.yml"
SCRAPE = {"partitions": [{"partition": 0, "end": 5, "committed": 3, "lag": 2}], "pending": 1, "next_due": None,
          "overdue_s": 0.0, "recovering": False, "recovery_remaining": 0, "rebalancing": False, "reasons": []}


def exported() -> set[str]:
    metrics = GateMetrics(("sms",), lambda: SCRAPE)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        if family.type == "counter":  # a labelled counter has no samples until first counted
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_every_rule_parses_and_uses_exported_metrics():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"SendgateConsumerStalled", "SendgateFallingBehind", "SendgateBatchesFailing",
                                           "SendgateDeadLetters", "SendgateReleaseOverdue", "SendgateRecoveryStuck"}
    names = exported()
    for rule in rules:
        used = set(re.findall(r"\bsendgate_[a-z_]+", rule["expr"]))
        assert used and used <= names, (rule["alert"], used - names)
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_names_follow_prometheus_conventions():
    for name in exported():
        assert name.startswith("sendgate_"), name
        assert "_ms" not in name and "_total_total" not in name, name
