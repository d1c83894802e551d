"""`sendgate replay`: run the gate over the event log again, optionally under another policy,
write the decisions to `<prefix>replay.<name>.decisions` and compare them with the live ones."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from sendgate.models.decisions import Decision
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import MemoryStore
from sendgate.models.policy import Policy

from ..kafka import ensure_topics
from ..config import ConfigError, Settings
from ..identity import check_userkey_secret
from ..kafka import end_offsets, read_log
from ..progress import Progress

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def replay_topic(settings: Settings, name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"replay name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    return settings.topic(f"replay.{name}.decisions")


@dataclass
class ReplayResult:
    events: int
    decisions: int
    deadlettered: int
    seconds: float
    # where this run's decisions begin in the output topic: an earlier run of the same name stays
    # before them, and `read_decisions(..., start=...)` reads this run's alone
    start: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def replay(
    settings: Settings, name: str, policy: Policy, until: dict[int, int] | None = None, quiet: bool = False
) -> ReplayResult:
    """Decide every event of the log up to `until` (default: the end offsets now) with `policy`."""
    await check_userkey_secret(settings, "replay", adopt=False)  # its consent records must match the live ones
    out_topic = replay_topic(settings, name)
    events_topic = settings.topic("events")
    until = until if until is not None else await end_offsets(settings, events_topic)
    await ensure_topics(settings, [out_topic])
    start = await end_offsets(settings, out_topic)
    gate, store = settings.gate(policy), MemoryStore()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=20,
        enable_idempotence=True,
        **settings.kafka_options(),
    )
    await producer.start()
    started = time.monotonic()
    events = decisions = dead = 0
    bar = Progress("replay", sum(until.values()))
    progress = None if quiet else (lambda done, total: bar.update(done))
    try:
        homes: dict[str, int] = {}  # app -> the partition its log lives on, as the worker keeps it
        async for record in read_log(settings, events_topic, until, progress):
            events += 1
            store.partition = record.partition  # each partition's junk index is its own, as in the worker
            try:
                event = gate.admit(
                    record.key,
                    record.value,
                    record.timestamp,
                    record.partition,
                    homes.setdefault,
                    record.headers,
                    store,
                )
            except InvalidEvent:
                dead += 1  # the live worker dead-lettered it too; replay writes no dead letters
                continue
            outputs = gate.handle(event, store, record.timestamp)
            for output in outputs:
                if isinstance(output, Decision):
                    decisions += 1
                    await producer.send(out_topic, key=output.app.encode(), value=output.to_json())
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        bar.finish()
    return ReplayResult(events, decisions, dead, time.monotonic() - started, start)


async def read_decisions(settings: Settings, topic: str, start: dict[int, int] | None = None) -> list[dict]:
    """The decisions of `topic` up to its end now, from `start` (partition -> offset; default 0)."""
    return [
        orjson.loads(r.value) async for r in read_log(settings, topic, await end_offsets(settings, topic), start=start)
    ]


def _by_request(decisions: list[dict]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Each request's chain of decisions, each decision once: a decision repeated with its
    decision_id (a batch decided again after a crash, a retry's first answer) is one decision."""
    chains: dict[tuple[str, str], list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for d in decisions:  # a request_id is unique only within its app
        if d["decision_id"] in seen:
            continue
        seen.add(d["decision_id"])
        chains.setdefault((d["app"], d["request_id"]), []).append((d["outcome"], d["reason"]))
    return chains


def _first(chain: list[tuple[str, str]]) -> str:
    return f"{chain[0][0]}/{chain[0][1]}" if chain else "(none)"


def compare(live: list[dict], replayed: list[dict]) -> tuple[str, list[dict[str, Any]]]:
    """A summary table of both sides and of what changed, and the changed requests."""
    live_chains, replay_chains = _by_request(live), _by_request(replayed)
    lines = ["outcome/reason            live   replay"]
    counts_live = Counter(f"{o}/{r}" for o, r in (c for chain in live_chains.values() for c in chain))
    counts_replay = Counter(f"{o}/{r}" for o, r in (c for chain in replay_chains.values() for c in chain))
    for key in sorted(set(counts_live) | set(counts_replay)):
        lines.append(f"{key:<24} {counts_live[key]:>6} {counts_replay[key]:>8}")
    changed: list[dict[str, Any]] = []
    transitions: Counter = Counter()
    for app, request_id in sorted(set(live_chains) | set(replay_chains)):
        a, b = live_chains.get((app, request_id), []), replay_chains.get((app, request_id), [])
        if a != b:
            changed.append({"app": app, "request_id": request_id, "live": a, "replay": b})
            transitions[(_first(a), _first(b))] += 1
    lines.append(f"\nrequests: {len(live_chains)} live, {len(replay_chains)} replayed, {len(changed)} changed")
    if transitions:
        lines.append("changed (first decision)   live -> replay                         count")
        for (a, b), n in transitions.most_common():
            lines.append(f"  {a:<28} -> {b:<32} {n:>6}")
    return "\n".join(lines), changed
