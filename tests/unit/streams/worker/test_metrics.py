"""metrics.py: a batch's tally applied to the Prometheus metrics and the dashboard's history, the
scrape-time gauges, bounded label values, the process and GC collectors and the build info; and
deploy/prometheus/alerts.yml: every rule parses, names only metrics a worker exports and links its
runbook in docs/operations.md."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import orjson
import pytest
import yaml

from sendgate.models.decisions import ConsentRecord, Decision, Delivery
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import Gate
from sendgate.models.events import Refusal
from sendgate.streams.worker.metrics import LATEST, RISKY_SENDERS, BatchTally, GateMetrics

ROOT = Path(__file__).resolve().parents[4]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
STANDARD = ("process_", "python_gc_")  # prometheus_client's process and GC collectors, under their usual names
SCRAPE = {
    "partitions": [{"partition": 0, "end": 5, "committed": 3, "lag": 2}],
    "pending": 1,
    "next_due": None,
    "overdue_s": 0.0,
    "recovering": False,
    "recovery_remaining": 0,
    "rebalancing": False,
    "store_unwritten_rows": 0,
    "store_memory_bytes": 0,
    "standbys": {},
    "reasons": [],
}
T = 1_700_000_000_000


def exported() -> set[str]:
    metrics = GateMetrics(("sms",), lambda: SCRAPE)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        if family.type == "counter":  # a labelled counter has no samples until first counted
            names.add(family.name + "_total")
        if family.type == "histogram":  # nor a labelled histogram until first observed
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_rule_parses_and_uses_exported_metrics():
    assert {r["alert"] for r in rules()} >= {
        "SendgateNoWorkerUp",
        "SendgateWorkerDown",
        "SendgatePartitionsUnassigned",
        "SendgateConsumerStalled",
        "SendgateFallingBehind",
        "SendgateBatchesFailing",
        "SendgateDeadLetters",
        "SendgateReleaseOverdue",
        "SendgateRecoveryStuck",
    }
    names = exported()
    for rule in rules():
        used = set(re.findall(r"\bsendgate_[a-z_]+", rule["expr"]))
        assert used <= names, (rule["alert"], used - names)
        assert used or re.search(r"\bup\{job=\"sendgate\"\}", rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_a_total_outage_and_unheld_partitions_fire():
    by_name = {r["alert"]: r for r in rules()}
    assert 'absent(up{job="sendgate"} == 1)' in by_name["SendgateNoWorkerUp"]["expr"]  # no series at all
    assert by_name["SendgateWorkerDown"]["expr"] == 'up{job="sendgate"} == 0'
    unheld = by_name["SendgatePartitionsUnassigned"]["expr"]
    assert "sendgate_assigned_partitions" in unheld and "sendgate_events_topic_partitions" in unheld
    assert by_name["SendgateBatchesFailing"].get("for"), "one failed attempt is retried: alert on failures that last"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_rule_links_its_runbook_in_the_operations_page():
    page = ROOT / "docs" / "operations.md"
    anchors = {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md" and anchor in anchors, (rule["alert"], url)


def test_names_follow_prometheus_conventions():
    for name in exported():
        assert name.startswith(("sendgate_",) + STANDARD), name
        assert "_ms" not in name and "_total_total" not in name, name


def test_rss_gc_and_the_version_are_exported():
    metrics = GateMetrics(("sms",), lambda: SCRAPE, topic_partitions=12)
    assert sample(metrics, "process_resident_memory_bytes") > 0  # what the bench measures
    assert sample(metrics, "python_gc_collections_total", generation="0") is not None
    assert sample(metrics, "sendgate_events_topic_partitions") == 12
    (build,) = [s for f in metrics.registry.collect() if f.name == "sendgate_build_info" for s in f.samples]
    assert build.value == 1 and build.labels["version"] == importlib.metadata.version("sendgate")


def decision(
    outcome: str, reason: str, *, sender: str = "S1", ts: int = T, deliver_at: int | None = None, request_id: str = "r1"
) -> Decision:
    return Decision(request_id, "app1", sender, "u1", "sms", outcome, reason, "", ts, deliver_at=deliver_at)


def consent(kind: str, source: str) -> ConsentRecord:
    return ConsentRecord("app1", "u1", kind, "rule", source, "e1", "S1", "", "", T)


def sample(metrics: GateMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (b"app1", b"{not json", "not_json"),
        (b"app1", b"[1, 2]", "not_json"),
        (b"app1", None, "no_value"),
        (b"app1", b" " * (64 * 1024 + 1), "too_large"),
        (b"app1", b'{"type": "shout"}', "unknown_type"),
        (b"app1", b'{"type": "opt_in", "app": "app1"}', "missing_field"),
        (b"other", b'{"type": "opt_in", "event_id": "e", "app": "app1", "userkey": "u"}', "wrong_key"),
        (
            b"app1",
            orjson.dumps({"type": "opt_in", "event_id": "e", "app": "app1", "userkey": "u", "ts": T + 86_400_000}),
            "ts_ahead",
        ),
        (b"app1", b'{"type": "opt_in", "event_id": 7, "app": "app1", "userkey": "u"}', "invalid_field"),
    ],
)
def test_each_reason_the_decoder_gives_has_its_own_bounded_code(key, value, expected):
    with pytest.raises(InvalidEvent) as refused:
        Gate().decode(key, value, T)
    assert refused.value.code == expected, str(refused.value)


def test_a_batch_tally_reaches_the_counters_histograms_and_history():
    metrics, tally = GateMetrics(("sms",), lambda: SCRAPE), BatchTally()
    for kind in ("send", "send", "send", "junk_report"):
        tally.count(kind, T)
    tally.output(decision("accepted", "reply"))
    tally.output(decision("delayed", "burst_paced", deliver_at=T + 120_000, request_id="r2"))
    tally.output(decision("released", "due", ts=T + 1_500, deliver_at=T, request_id="r3"))
    tally.output(Delivery("r1", "app1", "S1", "u1", "sms", "hi", None, T, "d1"))
    tally.output(Delivery("r3", "app1", "S1", "u2", "carrier-pigeon", "hi", None, T, "d3"))
    tally.output(consent("opt_out", "inbound"))
    tally.output(consent("opt_in", "opt_in event"))
    tally.dead_letter(Refusal.NO_VALUE)
    tally.skipped = 2
    tally.durations_s = {"decide": 0.002, "produce": 0.004, "checkpoint": 0.001}
    metrics.batch_done(tally, 4)

    assert sample(metrics, "sendgate_events_total", type="send") == 3
    assert sample(metrics, "sendgate_junk_reports_total") == 1
    assert sample(metrics, "sendgate_decisions_total", outcome="delayed", reason="burst_paced") == 1
    assert sample(metrics, "sendgate_deliveries_total", network="sms") == 1
    assert sample(metrics, "sendgate_deliveries_total", network="other") == 1  # not a label of its own
    assert sample(metrics, "sendgate_deliveries_total", network="carrier-pigeon") is None
    assert sample(metrics, "sendgate_dead_letters_total", error="no_value") == 1
    assert sample(metrics, "sendgate_records_skipped_total") == 2
    assert sample(metrics, "sendgate_consent_changes_total", kind="opt_out", source="inbound") == 1
    assert sample(metrics, "sendgate_consent_changes_total", kind="opt_in", source="event") == 1
    assert sample(metrics, "sendgate_delay_seconds_sum") == 120.0
    assert sample(metrics, "sendgate_release_lateness_seconds_sum") == 1.5
    assert sample(metrics, "sendgate_batch_events_sum") == 4
    assert sample(metrics, "sendgate_batch_duration_seconds_count", stage="produce") == 1
    assert sample(metrics, "sendgate_decision_lag_seconds_count") == 4

    assert metrics.totals == {"accepted": 1, "delayed": 1, "released": 1}
    assert metrics.reasons["delayed/burst_paced"] == 1 and metrics.consent_totals == {"opt_out": 1, "opt_in": 1}
    assert metrics.risky == {("app1", "S1"): 1}  # paced by the burst step; a reply or a release is not
    [(_, per_second)] = metrics.per_second
    assert per_second == {"accepted": 1, "delayed": 1, "released": 1}
    assert [row[3] for row in metrics.latest] == ["r1", "r2", "r3"]
    assert metrics.batch_count == 1 and list(metrics.timings) == [tally.durations_s]


def test_a_batch_without_decisions_leaves_the_outcome_history_alone():
    metrics, tally = GateMetrics(("sms",), lambda: SCRAPE), BatchTally()
    tally.count("opt_in", T)
    metrics.batch_done(tally, 1)
    assert not metrics.per_second and sample(metrics, "sendgate_last_decision_timestamp_seconds") == 0
    metrics.batch_failed()
    assert metrics.failed_count == 1 and sample(metrics, "sendgate_batch_failures_total") == 1


def test_the_dashboard_keeps_the_latest_decisions_and_the_most_paced_senders_only():
    metrics = GateMetrics(("sms",), lambda: SCRAPE)
    tally = BatchTally()
    for i in range(LATEST + 5):
        tally.output(decision("delayed", "burst_paced", sender=f"s{i}", request_id=f"r{i}"))
    tally.output(decision("delayed", "burst_limit", sender="s0", request_id="again"))
    metrics.batch_done(tally, 1)
    assert len(metrics.latest) == LATEST and metrics.latest[-1][3] == "again" and metrics.latest[0][3] == "r6"
    crowd = BatchTally()
    for i in range(RISKY_SENDERS + 10):
        crowd.output(decision("rejected", "junk_similar", sender=f"x{i}"))
    metrics.batch_done(crowd, 1)
    assert len(metrics.risky) == RISKY_SENDERS
    assert metrics.risky.most_common(1) == [(("app1", "s0"), 2)]  # the sender paced twice stays


def test_offsets_lag_and_readiness_are_read_when_prometheus_scrapes():
    now = {
        **SCRAPE,
        "partitions": [
            {"partition": 0, "end": 5, "committed": 3, "lag": 2},
            {"partition": 3, "end": 9, "committed": 9, "lag": 0},
        ],
        "pending": 7,
        "overdue_s": 4.5,
        "recovering": True,
        "recovery_remaining": 12,
        "store_unwritten_rows": 41_426,
        "store_memory_bytes": 3 << 20,
        "standbys": {1: 0, 2: 331_249},
        "reasons": ["recovering tables: 12 changelog row(s) left"],
    }
    metrics = GateMetrics(("sms",), lambda: now)
    assert sample(metrics, "sendgate_events_lag", partition="0") == 2
    assert sample(metrics, "sendgate_events_committed_offset", partition="3") == 9
    assert sample(metrics, "sendgate_events_end_offset", partition="3") == 9
    assert sample(metrics, "sendgate_assigned_partitions") == 2
    assert sample(metrics, "sendgate_pending_requests") == 7
    assert sample(metrics, "sendgate_earliest_due_overdue_seconds") == 4.5
    assert sample(metrics, "sendgate_recovery_in_progress") == 1
    assert sample(metrics, "sendgate_recovery_rows_remaining") == 12
    assert sample(metrics, "sendgate_ready") == 0
    assert sample(metrics, "sendgate_store_unwritten_rows") == 41_426
    assert sample(metrics, "sendgate_store_memory_bytes") == 3 << 20
    assert sample(metrics, "sendgate_standby_records_behind", partition="2") == 331_249
    assert sample(metrics, "sendgate_standby_records_behind", partition="1") == 0
    now.update(SCRAPE)  # read again at the next scrape: recovered, ready
    assert sample(metrics, "sendgate_ready") == 1 and sample(metrics, "sendgate_events_lag", partition="3") is None


DASHBOARD = ROOT / "deploy" / "grafana" / "sendgate.json"


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_grafana_dashboard_is_valid_and_queries_only_exported_metrics():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "sendgate-fleet" and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    names = exported() | {"up"}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and "datasource" in variables, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            selected = set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", expr))
            anywhere = set(re.findall(r"\b((?:sendgate|process|python_gc)_[a-z0-9_]+)\b", expr))
            assert anywhere <= selected, f'every metric is selected with job="$job": {expr}'
            assert all('job="$job"' in part for part in re.findall(r"\{[^}]*\}", expr)), expr
            assert selected <= names, (panel["title"], selected - names)


def test_the_dashboard_shows_the_fleet():
    queries = "\n".join(dashboard_queries())
    for needed in (
        "sum by (outcome) (rate(sendgate_decisions_total",
        "sendgate_events_lag",
        "sendgate_batch_failures_total",
        "process_resident_memory_bytes",
        "histogram_quantile(0.99, sum by (le) (rate(sendgate_decision_lag_seconds_bucket",
        "sendgate_assigned_partitions",
        "sendgate_events_topic_partitions",
    ):
        assert needed in queries, needed


def test_compose_provisions_prometheus_with_the_rules_and_grafana_with_the_dashboard():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    assert "../deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["prometheus"]["volumes"]
    mounts = compose["grafana"]["volumes"]
    assert "../deploy/grafana:/var/lib/grafana/dashboards:ro" in mounts
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert sources[0]["uid"] == "prometheus" and sources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "sendgate.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert all(service.get("restart") == "unless-stopped" for service in compose.values())
