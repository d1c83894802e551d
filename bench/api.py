"""The HTTP API under load: POST /v1/messages at fixed offered rates, against a real worker.

    python -m bench.api [--rates 200,1000] [--seconds 20] [--out bench/results/api.md]

A local broker (or SENDGATE_BOOTSTRAP), one worker and one `sendgate api` process; `hey` (a Go
HTTP load generator: `go install github.com/rakyll/hey@latest`, or HEY=path) offers each rate for
`--seconds` (open loop within hey's limit: -c connections each at -q requests a second). Every
request is the same send of an app holding an unrestricted grant (so each is accepted: the
measure is the path, not the rules), with its own request_id (the API makes one). Next to hey's
latency (client send -> HTTP answer), the worker's own decision latency in the same run: each
decision's record timestamp minus its send's event time (which the API stamps when it publishes).
`undecided` = 202 answers (no send here can be delayed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from sendgate.streams.api.keys import add_api_key
from sendgate.streams.kafka import end_offsets, read_log
from sendgate.streams.local.broker import LocalKafka, free_port
from sendgate.streams.local.process import ApiProcess, WorkerProcess

from ._common import ROOT
from .throughput import bench_settings

APP = "bench"
SEND = {"sender": "bench-sms", "userkey": "+15550001", "network": "sms", "text": "Your code is 4242"}


def hey_path() -> str:
    found = os.environ.get("HEY") or shutil.which("hey") or str(Path.home() / "go" / "bin" / "hey")
    if not Path(found).exists():
        raise SystemExit("hey not found: go install github.com/rakyll/hey@latest (or set HEY=path)")
    return found


def run_hey(url: str, key: str, rate: int, seconds: int) -> dict:
    # hey waits for each answer before a connection sends again: enough connections that each offers
    # 5 a second keep the offered rate up to 200 ms of latency (open loop within that)
    connections = max(10, rate // 5)
    out = subprocess.run(
        [
            hey_path(),
            "-z",
            f"{seconds}s",
            "-c",
            str(connections),
            "-q",
            str(rate / connections),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-H",
            f"Authorization: Bearer {key}",
            "-d",
            orjson.dumps(SEND).decode(),
            f"{url}/v1/messages",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = re.search(r"Error distribution:(.*)", out, re.S)
    return {
        "rate": rate,
        "connections": connections,
        "achieved": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50": pct.get(50),
        "p90": pct.get(90),
        "p99": pct.get(99),
        "codes": codes,
        "errors": errors[1].strip() if errors else "",
    }


async def worker_latency(settings, since_ms: int, until_ms: int) -> np.ndarray:
    """Decision record time - send event time (ms) of the app's decisions of sends made in the window."""
    topic = settings.topic("decisions")
    lat = [
        r.timestamp - doc["ts"]
        async for r in read_log(settings, topic, await end_offsets(settings, topic))
        for doc in [orjson.loads(r.value)]
        if doc["app"] == APP and since_ms <= doc["ts"] < until_ms
    ]
    return np.array(lat, dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="200,1000")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.md"))
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"sendgate-bench-api-{os.getpid()}"
    work.mkdir(parents=True)
    kafka = None if os.environ.get("SENDGATE_BOOTSTRAP") else LocalKafka()
    if kafka:
        kafka.start()
    bootstrap = os.environ.get("SENDGATE_BOOTSTRAP") or kafka.bootstrap
    settings = bench_settings(bootstrap, work, "api", log_level="info")  # info: the worker logs when it is ready
    key = add_api_key(settings.keyring_file, APP)
    worker = WorkerProcess(settings, work / "worker.log").start()
    # the API at warning: no access log line per request
    api = ApiProcess(
        settings.with_(log_level="warning", api_rate=1e6, api_burst=1_000_000), work / "api.log", free_port()
    ).start()
    rows = []
    try:
        worker.wait_ready()
        api.wait_ready(60)
        grant = {"type": "app_policy", "event_id": "grant", "app": APP, "unrestricted": True}
        subprocess.run(
            [sys.executable, "-m", "sendgate.streams.cli", "publish", "-"],
            input=orjson.dumps(grant),
            env={**os.environ, **settings.to_env()},
            check=True,
            capture_output=True,
        )
        run_hey(api.url, key, 50, 5)  # warm-up: connections, the worker's caches and the app's rows
        for rate in rates:
            start = int(time.time() * 1000)
            result = run_hey(api.url, key, rate, args.seconds)
            result["worker"] = asyncio.run(worker_latency(settings, start, int(time.time() * 1000)))
            rows.append(result)
            print(result["rate"], result["achieved"], result["p50"], result["p99"], result["codes"], flush=True)
    finally:
        api.stop()
        worker.stop()
        if kafka:
            kafka.close()
    write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "# HTTP API latency (bench/api.py)",
        "",
        f"`python -m bench.api --rates {args.rates} --seconds {args.seconds}` on {platform.node()} "
        f"({os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one local "
        f"broker, one worker, one API process, and hey, all on this machine. HTTP = hey's send -> answer; "
        f"worker = decision record time - the send's event time (stamped by the API as it publishes).",
        "",
        "| offered req/s | achieved req/s | HTTP p50 ms | HTTP p90 ms | HTTP p99 ms | worker p50 ms "
        "| worker p99 ms | 201 | 202 (undecided) | other | hey errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["worker"]
        other = {c: n for c, n in r["codes"].items() if c not in (201, 202)}
        lines.append(
            f"| {r['rate']} | {r['achieved']:.0f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
            f"{np.percentile(w, 50) if len(w) else float('nan'):.1f} | "
            f"{np.percentile(w, 99) if len(w) else float('nan'):.1f} | {r['codes'].get(201, 0)} | "
            f"{r['codes'].get(202, 0)} | {other or '-'} | {r['errors'][:80] or '-'} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
