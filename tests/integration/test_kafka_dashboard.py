"""The operators' endpoints on a real worker: /metrics, /livez, /readyz, and /dashboard in a real
browser (headless Chromium), whose rendered numbers must be the ones /metrics reports."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import MIN, T0, decisions, ev, produce_raw, publish


def get(settings, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}{path}", timeout=5) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def samples(settings) -> dict[tuple[str, tuple], float]:
    _, body, _ = get(settings, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items() if n == name and set(labels.items()) <= set(ls))


class Texts(HTMLParser):
    """The text of every element with an id, and the body's attributes, from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        self._open.append(attrs.get("id"))
        if attrs.get("id"):
            self.by_id.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.by_id[element_id] += data


def render(settings) -> Texts:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.fail("this test needs Chromium: apt-get install chromium (.ci/run installs it)")
    dom = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"http://127.0.0.1:{settings.web_port}/dashboard",
        ],
        capture_output=True,
        timeout=90,
        check=True,
    ).stdout.decode()
    page = Texts()
    page.feed(dom)
    return page


SCENARIO = [
    *[
        ev("inbound", event_id=f"i{i}", app="shop", sender="s1", userkey=f"u{i}", network="sms", text="hi", ts=T0 + i)
        for i in range(14)
    ],
    ev(
        "inbound",
        event_id="stop",
        app="shop",
        sender="s1",
        userkey="u0",
        network="sms",
        text="please stop texting me",
        ts=T0 + 20 * MIN,
    ),
    ev(
        "inbound",
        event_id="amb",
        app="shop",
        sender="s1",
        userkey="u13",
        network="sms",
        text="I will stop by at noon",
        ts=T0 + 20 * MIN,
    ),
    *[
        ev(
            "send",
            request_id=f"b{i}",
            app="shop",
            sender="s1",
            userkey=f"u{i}",
            network="sms",
            text=f"Hi u{i}, our summer sale starts now: 30% off at shop.example",
            ts=T0 + 40 * MIN,
        )
        for i in range(13)
    ],
]


def published(settings) -> None:
    """Publish the scenario and wait until the worker's metrics count its 13 decisions."""
    publish(settings, SCENARIO)
    decisions(settings, 13)
    deadline = time.monotonic() + 30
    while total(samples(settings), "sendgate_decisions_total") < 13:
        assert time.monotonic() < deadline, "metrics never counted the 13 decisions"
        time.sleep(0.2)  # poll interval


def test_health_readiness_and_metrics(settings, worker):
    status, body, _ = get(settings, "/livez")
    assert status == 200 and orjson.loads(body) == {"status": "alive"}
    status, body, _ = get(settings, "/readyz")
    assert status == 200 and orjson.loads(body) == {"ready": True, "reasons": [], "details": {}}
    status, body, _ = get(settings, "/table")
    assert status == 404  # Faust's raw table view (rows hold userkeys) is off
    publish(settings, SCENARIO)
    produce_raw(settings, [(b"shop", b"not json")])  # a producer that skips validation
    decisions(settings, 13)
    deadline = time.monotonic() + 30
    while total(samples(settings), "sendgate_dead_letters_total") < 1:
        assert time.monotonic() < deadline, "metrics never counted the 13 decisions"
        time.sleep(0.2)  # poll interval
    status, _, content_type = get(settings, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    m = samples(settings)
    assert total(m, "sendgate_decisions_total", outcome="rejected", reason="opted_out") == 1
    assert total(m, "sendgate_decisions_total", outcome="accepted") == 5  # a young sender's allowance
    assert total(m, "sendgate_decisions_total", outcome="delayed", reason="burst_paced") == 7
    assert total(m, "sendgate_deliveries_total", network="sms") == 5
    assert (
        total(m, "sendgate_events_total", type="inbound") == 16 and total(m, "sendgate_events_total", type="send") == 13
    )
    assert total(m, "sendgate_consent_changes_total", kind="opt_out", source="inbound") == 1
    assert total(m, "sendgate_consent_changes_total", kind="ambiguous", source="inbound") == 1
    assert total(m, "sendgate_pending_requests") == 7
    assert total(m, "sendgate_delay_seconds_count") == 7
    assert total(m, "sendgate_dead_letters_total", error="not_json") == 1
    assert total(m, "sendgate_ready") == 1 and total(m, "sendgate_assigned_partitions") == settings.partitions
    assert total(m, "sendgate_events_lag") == 0 or total(m, "sendgate_events_end_offset") > 0
    assert total(m, "sendgate_batches_total") >= 1 and total(m, "sendgate_batch_duration_seconds_count") >= 3
    assert total(m, "process_resident_memory_bytes") > 0 and total(m, "sendgate_build_info") == 1
    for (name, labels), _ in m.items():
        if name.startswith(("process_", "python_")):  # prometheus-client's process, GC and platform collectors
            continue
        assert name.startswith("sendgate_") and all(
            k
            in (
                "outcome",
                "reason",
                "network",
                "type",
                "error",
                "kind",
                "source",
                "stage",
                "partition",
                "le",
                "version",
            )
            for k, _ in labels
        ), (name, labels)


def test_the_dashboard_in_a_browser_shows_what_metrics_report(settings, worker):
    published(settings)
    m = samples(settings)
    page = render(settings)
    assert page.body.get("data-loaded") == "true", "the page's script never drew a status"
    assert page.by_id["state"].strip() == "ready"
    for outcome in ("accepted", "delayed", "rejected", "released", "cancelled"):
        shown = int(page.by_id[f"total-{outcome}"])
        assert shown == total(m, "sendgate_decisions_total", outcome=outcome), outcome
    for kind in ("opt_out", "opt_in", "ambiguous"):
        assert int(page.by_id[f"consent-{kind}"]) == total(m, "sendgate_consent_changes_total", kind=kind), kind
    assert int(page.by_id["pending-held"]) == total(m, "sendgate_pending_requests") == 7
    assert int(page.by_id["batches-count"]) == total(m, "sendgate_batches_total")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", page.by_id["pending-next"].strip())
    assert "delayed/burst_paced: 7" in page.by_id["reasons-list"]
    assert "shop" in page.by_id["senders"] and "b12" in page.by_id["latest"]


def test_sendgate_status_prints_the_worker_state_for_a_terminal(settings, worker):
    published(settings)
    import os
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", "status", "--url", f"http://127.0.0.1:{settings.web_port}"],
        capture_output=True,
        timeout=30,
        env={**os.environ, **settings.to_env()},
    )
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "worker: ready" in text and "pending: 7 delayed request(s)" in text, text
    assert "accepted 5" in text and "opt_out 1" in text and "lag: p0 " in text, text
