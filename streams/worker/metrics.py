"""What a worker is doing, for operators: Prometheus metrics, readiness, and the dashboard's status.

The agent reads its queue itself and produces through its own outbox, so Faust's sensors would
see little. Instead each batch tallies what it decided in a `BatchTally` (plain counters, a few
µs a batch), and `GateMetrics.batch_done` applies the tally to the metrics once per batch.
Offsets and lag are read at scrape time. Names follow Prometheus' conventions: the `sendgate_`
prefix, base units (seconds), counters ending in `_total`, and bounded labels only (never a
userkey, sender or request id; networks outside `SENDGATE_METRICS_NETWORKS` count as `other`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from importlib.metadata import PackageNotFoundError, version as dist_version

from prometheus_client import (
    CollectorRegistry,
    Counter as PromCounter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily

from sendgate.models.decisions import ConsentRecord, Decision, Delivery, Outcome, Reason
from sendgate.models.events import Refusal

STAGES = ("decide", "produce", "checkpoint")
LATEST = 50  # decisions the dashboard's tail shows
HISTORY_S = 300  # seconds of per-second outcome counts the dashboard draws
RISKY_SENDERS = 1000  # senders tracked for "riskiest", the least paced dropped beyond it
PACED = frozenset({Reason.BURST_PACED, Reason.BURST_LIMIT, Reason.JUNK_SIMILAR})  # what "riskiest" counts

disable_created_metrics()  # no `_created` series beside every counter: half the scrape, nothing an alert uses


def build_version() -> str:
    try:
        return dist_version("sendgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@dataclass
class BatchTally:
    """What one batch decided, counted while it is decided, applied to the metrics once."""

    events: Counter = field(default_factory=Counter)  # by type
    decisions: Counter = field(default_factory=Counter)  # by (outcome, reason)
    deliveries: Counter = field(default_factory=Counter)  # by network (raw; mapped when applied)
    dead_letters: Counter = field(default_factory=Counter)  # by models/events.py Refusal
    unauthorized: Counter = field(default_factory=Counter)  # by the source rule broken (models/sources.py)
    consent: Counter = field(default_factory=Counter)  # by (kind, source)
    delays_s: list[float] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    record_ts_ms: list[int] = field(default_factory=list)  # of the decided events: decision lag
    latest: list[tuple] = field(default_factory=list)
    paced: Counter = field(default_factory=Counter)  # by (app, sender): paced or refused by the burst step
    skipped: int = 0  # records delivered again that were decided before (their outputs are out)
    durations_s: dict[str, float] = field(default_factory=dict)

    def count(self, kind: str, record_ts_ms: int) -> None:
        self.events[kind] += 1
        self.record_ts_ms.append(record_ts_ms)

    def output(self, record: Any) -> None:
        if isinstance(record, Decision):
            self.decisions[record.outcome, record.reason] += 1
            if record.outcome == Outcome.DELAYED and record.deliver_at is not None:
                self.delays_s.append((record.deliver_at - record.ts) / 1000)
            elif record.outcome == Outcome.RELEASED and record.deliver_at is not None:
                self.lateness_s.append((record.ts - record.deliver_at) / 1000)
            if record.reason in PACED:
                self.paced[record.app, record.sender] += 1
            self.latest.append((record.ts, record.app, record.sender, record.request_id, record.outcome, record.reason))
        elif isinstance(record, Delivery):
            self.deliveries[record.network] += 1
        elif isinstance(record, ConsentRecord):
            self.consent[record.kind, "inbound" if record.source == "inbound" else "event"] += 1

    def dead_letter(self, code: Refusal, rule: str | None = None) -> None:
        self.dead_letters[code] += 1
        if rule is not None:
            self.unauthorized[rule] += 1


class GateMetrics:
    """The worker's metrics (its own registry) and the in-process history the dashboard draws."""

    def __init__(
        self,
        networks: tuple[str, ...],
        scrape: Callable[[], dict[str, Any]],
        auth: bool = True,
        topic_partitions: int = 0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.networks = frozenset(networks)
        r = self.registry
        # the standard process_* (RSS, CPU, open files) and python_gc_* series, under their usual names
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        Gauge("sendgate_build_info", "Always 1; the sendgate version this worker runs", ["version"], registry=r).labels(
            version=build_version()
        ).set(1)
        # what the topic has, so an alert can see partitions that no worker holds (SENDGATE_PARTITIONS)
        Gauge("sendgate_events_topic_partitions", "Partitions of the events topic the workers declare", registry=r).set(
            topic_partitions
        )
        self.events = PromCounter("sendgate_events", "Events decided, by type", ["type"], registry=r)
        self.decisions = PromCounter(
            "sendgate_decisions", "Decisions, by outcome and reason", ["outcome", "reason"], registry=r
        )
        self.deliveries = PromCounter("sendgate_deliveries", "Deliveries, by network", ["network"], registry=r)
        self.dead_letters = PromCounter(
            "sendgate_dead_letters",
            "Records dead-lettered, by kind of refusal (models/events.py Refusal)",
            ["error"],
            registry=r,
        )
        self.consent = PromCounter(
            "sendgate_consent_changes", "Consent audit records, by kind and source", ["kind", "source"], registry=r
        )
        self.junk_reports = PromCounter("sendgate_junk_reports", "Junk reports decided", registry=r)
        self.skipped = PromCounter(
            "sendgate_records_skipped",
            "Records of the events topic delivered again (after a restart or rebalance) that were "
            "decided before, skipped: their outputs are out",
            registry=r,
        )
        self.unauthorized = PromCounter(
            "sendgate_unauthorized_records",
            "Records refused for their source, by the rule broken (models/sources.py)",
            ["rule"],
            registry=r,
        )
        Gauge(
            "sendgate_auth_enabled",
            "1 when records are verified against the keyring, 0 with SENDGATE_AUTH=off",
            registry=r,
        ).set(int(auth))
        self.delay = Histogram(
            "sendgate_delay_seconds",
            "Delay given to delayed requests (deliver_at - event time)",
            buckets=(60, 120, 300, 600, 1800, 3600, 7200, 21600),
            registry=r,
        )
        self.lateness = Histogram(
            "sendgate_release_lateness_seconds",
            "Release time - deliver_at of released requests (event time)",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.batches = PromCounter("sendgate_batches", "Batches decided", registry=r)
        self.failed_batches = PromCounter("sendgate_batch_failures", "Batch attempts that failed (retried)", registry=r)
        self.batch_size = Histogram(
            "sendgate_batch_events", "Events in a batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r
        )
        self.batch_duration = Histogram(
            "sendgate_batch_duration_seconds",
            "Time a batch spent in each stage",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.lag = Histogram(
            "sendgate_decision_lag_seconds",
            "Wall clock at the batch's end - record timestamp",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.last_decision = Gauge(
            "sendgate_last_decision_timestamp_seconds", "Wall clock of the last decision", registry=r
        )
        self.rebalances = PromCounter("sendgate_rebalances", "Rebalances this worker went through", registry=r)
        r.register(_ScrapeTime(scrape))
        # history for the dashboard (in process: it works without Prometheus)
        self.per_second: deque[tuple[int, Counter]] = deque(maxlen=HISTORY_S)
        self.latest: deque[tuple] = deque(maxlen=LATEST)
        self.timings: deque[dict[str, float]] = deque(maxlen=100)
        self.totals: Counter = Counter()  # decisions by outcome
        self.reasons: Counter = Counter()
        self.consent_totals: Counter = Counter()  # by kind
        self.risky: Counter = Counter()
        self.batch_count = self.failed_count = 0

    def batch_failed(self) -> None:
        self.failed_batches.inc()
        self.failed_count += 1

    def network(self, name: str) -> str:
        return name if name in self.networks else "other"

    def batch_done(self, tally: BatchTally, size: int) -> None:
        now = time.time()
        self.batches.inc()
        self.batch_count += 1
        self.batch_size.observe(size)
        for stage, seconds in tally.durations_s.items():
            self.batch_duration.labels(stage).observe(seconds)
        self.timings.append(tally.durations_s)
        for kind, n in tally.events.items():
            self.events.labels(kind).inc(n)
            if kind == "junk_report":
                self.junk_reports.inc(n)
        self.skipped.inc(tally.skipped)
        for (outcome, reason), n in tally.decisions.items():
            self.decisions.labels(outcome, reason).inc(n)
            self.totals[outcome] += n
            self.reasons[f"{outcome}/{reason}"] += n
        for network, n in tally.deliveries.items():
            self.deliveries.labels(self.network(network)).inc(n)
        for error, n in tally.dead_letters.items():
            self.dead_letters.labels(error).inc(n)
        for rule, n in tally.unauthorized.items():
            self.unauthorized.labels(rule).inc(n)
        for (kind, source), n in tally.consent.items():
            self.consent.labels(kind, source).inc(n)
            self.consent_totals[kind] += n
        for seconds in tally.delays_s:
            self.delay.observe(seconds)
        for seconds in tally.lateness_s:
            self.lateness.observe(seconds)
        for record_ts in tally.record_ts_ms:
            if record_ts:
                self.lag.observe(max(0.0, now - record_ts / 1000))
        if tally.decisions:
            self.last_decision.set(now)
            second = int(now)
            if not self.per_second or self.per_second[-1][0] != second:
                self.per_second.append((second, Counter()))
            bucket = self.per_second[-1][1]
            for (outcome, _), n in tally.decisions.items():
                bucket[outcome] += n
        self.latest.extend(tally.latest[-LATEST:])
        self.risky.update(tally.paced)
        if len(self.risky) > RISKY_SENDERS:
            self.risky = Counter(dict(self.risky.most_common(RISKY_SENDERS)))


class _ScrapeTime:
    """Metrics read when Prometheus scrapes: offsets and lag per partition, assignment, readiness."""

    def __init__(self, scrape: Callable[[], dict[str, Any]]) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.scrape()
        for name, doc, key in (
            ("sendgate_events_end_offset", "End offset of an events partition", "end"),
            ("sendgate_events_committed_offset", "Committed offset of an events partition", "committed"),
            ("sendgate_events_lag", "End offset - committed offset of an events partition", "lag"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["partition"])
            for p in now["partitions"]:
                family.add_metric([str(p["partition"])], p[key])
            yield family
        behind = GaugeMetricFamily(
            "sendgate_standby_records_behind",
            "Changelog records of a standby partition its local copy has not applied yet (a failover reads them first)",
            labels=["partition"],
        )
        for partition, records in now["standbys"].items():
            behind.add_metric([str(partition)], records)
        yield behind
        for name, doc, value in (
            ("sendgate_assigned_partitions", "Events partitions assigned to this worker", len(now["partitions"])),
            ("sendgate_pending_requests", "Delayed requests held on this worker's partitions", now["pending"]),
            (
                "sendgate_earliest_due_overdue_seconds",
                "Wall clock - the earliest deliver_at due, 0 if none is",
                now["overdue_s"],
            ),
            ("sendgate_recovery_in_progress", "1 while tables are recovering", int(now["recovering"])),
            ("sendgate_recovery_rows_remaining", "Changelog rows left to recover", now["recovery_remaining"]),
            ("sendgate_ready", "1 when /readyz would answer 200", int(not now["reasons"])),
            (
                "sendgate_store_unwritten_rows",
                "Rows the local store refused (a full disk), held in memory over it until it takes them; "
                "above 0 the store is unwritable",
                now["store_unwritten_rows"],
            ),
            (
                "sendgate_store_memory_bytes",
                "Memory RocksDB holds for the state table outside Python: memtables, table readers, block cache",
                now["store_memory_bytes"],
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
