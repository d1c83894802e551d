"""Replay speed: `sendgate replay --name bench` over the throughput run's event log.

The same function the CLI runs (`sendgate.streams.ops.replay.replay`, default policy), in this
process, after the live worker has decided the same log: events/s of both side by side. The
replayed decisions are read back and their outcome counts compared with the live ones and with
the in-process expectation (replay must reproduce the live decisions: the log is the truth).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sendgate.streams.config import Settings
from sendgate.streams.ops.replay import ReplayResult, replay, replay_topic

from .throughput import read_all


@dataclass
class ReplaySpeed:
    result: ReplayResult
    outcomes: Counter
    topic: str


async def run(settings: Settings, name: str = "bench") -> ReplaySpeed:
    result = await replay(settings, name, settings.policy(), quiet=True)
    topic = replay_topic(settings, name)
    records = await read_all(settings, topic)
    outcomes = Counter(f"{d['outcome']}/{d['reason']}" for _, d in records)
    return ReplaySpeed(result, outcomes, topic)
