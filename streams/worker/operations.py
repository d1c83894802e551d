"""Operators' endpoints on the worker's web port: metrics, health, readiness, status and the dashboard.

GET /metrics           Prometheus text format (streams/worker/metrics.py)
GET /livez             200 while the process and its event loop answer
GET /readyz            200 when recovery is done, no rebalance runs and the gate agent runs;
                       503 with the reasons otherwise
GET /sendgate/status   the dashboard's JSON: rates, reasons, consent, pending, senders, lag, batches
GET /dashboard         one static page (HTML, CSS and JS shipped in the package, no CDN)
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client.aiohttp import make_aiohttp_handler

from sendgate.models.decisions import OUTCOMES

from .batch import GateWorker
from .web import OperatorDoor

RISKIEST = 10  # senders the dashboard lists
STATIC = {"dashboard.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def status(worker: GateWorker, per_sender: bool = True) -> dict[str, Any]:
    """What the dashboard polls: the in-process history of the metrics and the scrape-time state;
    without `per_sender` (no operator token), no app, sender or request id."""
    m = worker.metrics
    now = worker.status_now()
    history = [{"t": second, **{o: counts.get(o, 0) for o in OUTCOMES}} for second, counts in m.per_second]
    timings = list(m.timings)
    stages = {
        stage: {
            "last_ms": round(1000 * timings[-1][stage], 2) if timings else None,
            "max_ms": round(1000 * max(t[stage] for t in timings), 2) if timings else None,
        }
        for stage in ("decide", "produce", "checkpoint")
    }
    return {
        "now": time.time(),
        "state": {
            "ready": not now["reasons"],
            "recovering": now["recovering"],
            "rebalancing": now["rebalancing"],
            "reasons": now["reasons"],
        },
        "totals": {o: m.totals.get(o, 0) for o in OUTCOMES},
        "history": history,
        "top_reasons": [{"reason": r, "count": n} for r, n in m.reasons.most_common(8)],
        "consent": {k: m.consent_totals.get(k, 0) for k in ("opt_out", "opt_in", "ambiguous")},
        "pending": {"held": now["pending"], "next_release_ts": now["next_due"]},
        "riskiest_senders": [{"app": a, "sender": s, "paced": n} for (a, s), n in m.risky.most_common(RISKIEST)]
        if per_sender
        else [],
        "partitions": now["partitions"],
        "batches": {"count": m.batch_count, "failed": m.failed_count, "stages": stages},
        # no userkeys: the page is for operators, and the userkey view asks for one explicitly
        "latest": [
            {"ts": ts, "app": a, "sender": s, "request_id": r, "outcome": o, "reason": why}
            for ts, a, s, r, o, why in reversed(m.latest)
        ]
        if per_sender
        else [],
        "per_sender": per_sender,  # false: the operator token is needed for the senders and the latest decisions
        "auth": worker.gate.keyring is not None,  # false: SENDGATE_AUTH=off, every producer taken at its word
    }


def register_operations(faust_app: faust.App, worker: GateWorker, door: OperatorDoor) -> None:
    metrics_handler = make_aiohttp_handler(worker.metrics.registry)

    @faust_app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return await metrics_handler(request)

    @faust_app.page("/livez")
    class Live(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @faust_app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            reasons = worker.not_ready()
            details = (
                {}
                if worker.gate.keyring is not None
                else {
                    "auth": "off: SENDGATE_AUTH=off, records are not verified; any producer may say anything for any app"
                }
            )
            return self.json(
                {"ready": not reasons, "reasons": reasons, "details": details}, status=503 if reasons else 200
            )

    @faust_app.page("/sendgate/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(status(worker, door.allows(request)))

    files = resources.files("sendgate.streams.worker") / "dashboard"

    @faust_app.page("/dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.bytes((files / "dashboard.html").read_bytes(), content_type="text/html")

    @faust_app.page("/dashboard/{name}")
    class DashboardFile(View):
        async def get(self, request: Request, name: str) -> Response:
            if name not in STATIC:
                return self.json({"error": f"no such file {name!r}"}, status=404)
            return self.bytes((files / name).read_bytes(), content_type=STATIC[name])
