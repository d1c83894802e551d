"""The holes Faust leaves in the events stream, read from Kafka by the worker itself.

Faust can drop records it fetched while a worker recovered its tables (faust-streaming #596), and
after a rebalance the records a killed worker left undecided may be followed by nothing that shows
the gap. Deciding on as if they had not existed would lose them and change the decisions after
them, and Faust would never commit past them. So the worker keeps how far the stream delivered each
events partition (`Holes.seen`), reads a skipped range from Kafka before the record that shows it
(`fill_hole`), and reads a partition that stays behind its end while the agent is idle
(`check_quiet_partitions`, then `fill_quiet` in the agent's next batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, EventT, TopicT
from faust.types import Message as FaustMessage

from ..config import Settings
from ..kafka import committed_offsets, read_log
from .checkpoint import CheckpointStore
from .faust_internals import assigned, committed_offset, highwater, recovery_state

log = logging.getLogger("sendgate.worker")

QUIET_CHECK_S = 1.0  # how often the worker looks for partitions whose records Faust does not deliver
QUIET_HOLE_S = 2.0  # records that long behind the partition's end, with the agent idle, are read from Kafka
QUIET_FILL_MAX = 10_000  # records read so at most in one batch (the rest at the next check)


@dataclass(eq=False)  # hashed by identity, as Faust's consumer keeps messages in sets
class LoggedMessage:
    """The parts of a Faust message the worker reads, for records read from Kafka directly."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: float  # seconds, as Faust gives it
    headers: tuple = ()
    acked: bool = False

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class LoggedEvent:
    message: LoggedMessage
    value: bytes | None


# a record of the events topic (and where it is), as Faust delivered it or as read from Kafka
Message = FaustMessage | LoggedMessage
Event = EventT | LoggedEvent
# decides one record; returns the futures of what it sent (exactly_once), else nothing
Decide = Callable[[Event], Awaitable[list[Awaitable[Any]]]]


@dataclass(frozen=True)
class QuietHoles:
    """Put in the agent's queue by `Holes.check_quiet_partitions`: events partitions whose
    records after `Holes.seen` Faust has not delivered, to be read from Kafka by the agent itself."""

    partitions: tuple[TP, ...]


@dataclass
class Holes:
    """How far the stream delivered each events partition, and the records it left out."""

    settings: Settings
    faust: faust.App
    store: CheckpointStore
    events: TopicT
    seen: dict[int, int] = field(default_factory=dict)  # partition -> last offset the stream delivered
    queue: asyncio.Queue[Any] | None = None  # the agent's queue (faust_internals.channel_queue), once it runs
    _quiet: dict[int, tuple[int, int, float]] = field(default_factory=dict)  # partition -> (seen, end, since)

    async def seen_before(self, tp: TP) -> int:
        """The last offset of `tp` the stream delivered; for a partition it has delivered nothing
        of since the rebalance, the group's committed offset - 1, where Faust starts it (its commits
        wait until every offset from there on is acked). Faust may not know the committed offset
        of a partition it was just given: then the broker is asked, once (from 0, a fail-over
        round read 15,400 decided records again)."""
        seen = self.seen.get(tp.partition)
        if seen is None:
            committed = committed_offset(self.faust, tp)
            if committed is None:
                committed = (await committed_offsets(self.settings, self.settings.group_id, tp.topic)).get(
                    tp.partition, 0
                )
            seen = self.seen[tp.partition] = committed - 1
        return seen

    async def fill_quiet(
        self, quiet: tuple[TP, ...], decide: Decide, sent: list[Awaitable[Any]]
    ) -> list[LoggedMessage]:
        """Read the `quiet` partitions (`QuietHoles`) up to their end, QUIET_FILL_MAX records at
        most, and decide those not decided yet; returns the messages read (acked with the batch)."""
        filled: list[LoggedMessage] = []
        owned = assigned(self.faust) if quiet else set()
        for tp in quiet:
            if tp not in owned:  # moved since it was found: its new owner reads it
                continue
            seen = await self.seen_before(tp)
            end = min(highwater(self.faust, tp), seen + 1 + QUIET_FILL_MAX)
            if end > seen + 1:
                found = await self.fill_hole(tp, seen + 1, end, decide, sent)
                filled += found
                if found:
                    self.seen[tp.partition] = max(seen, found[-1].offset)
        return filled

    async def fill_hole(
        self, tp: TP, start: int, end: int, decide: Decide, sent: list[Awaitable[Any]]
    ) -> list[LoggedMessage]:
        """Read records [start, end) of a partition that the stream skipped from Kafka, and decide
        those not decided yet. Appends the futures of what it sends to `sent`."""
        found: list[LoggedMessage] = []
        decided = 0
        async for r in read_log(self.settings, tp.topic, {tp.partition: end}, start={tp.partition: start}):
            message = LoggedMessage(tp.topic, r.partition, r.offset, r.key, r.timestamp / 1000, r.headers)
            found.append(message)
            if r.offset > self.store.handled(r.partition):
                decided += 1
                sent += await decide(LoggedEvent(message, r.value))
        log.warning(
            "the stream skipped %s[%s] offsets %s..%s; read %d record(s) from Kafka and decided %d",
            tp.topic,
            tp.partition,
            start,
            end - 1,
            len(found),
            decided,
        )
        return found

    def check_quiet_partitions(self, agent_idle: bool) -> None:
        """Find events partitions with records Faust has not delivered while the agent is idle,
        and have the agent read them from Kafka (`QuietHoles`).

        `fill_hole` reads records Faust dropped (faust-streaming #596) when a later record shows
        the gap. After a rebalance nothing later may come: a survivor then held the killed
        worker's last records undecided until the app's next event (the bench's fail-over round
        saw minutes). So a partition whose end has stayed past the last record seen for
        QUIET_HOLE_S, with the agent idle and nothing queued, is read directly."""
        if (
            not agent_idle
            or self.queue is None
            or not self.queue.empty()
            or self.faust.rebalancing
            or recovery_state(self.faust)[0]
        ):
            self._quiet.clear()
            return
        now, events_topic, holes = time.monotonic(), self.events.get_topic_name(), []
        for tp in assigned(self.faust):
            if tp.topic != events_topic:
                continue
            seen = self.seen.get(tp.partition, (committed_offset(self.faust, tp) or 0) - 1)
            end = highwater(self.faust, tp)
            if end <= seen + 1:
                self._quiet.pop(tp.partition, None)
                continue
            was = self._quiet.get(tp.partition)
            if was is None or was[:2] != (seen, end):
                self._quiet[tp.partition] = (seen, end, now)
            elif now - was[2] >= QUIET_HOLE_S:
                holes.append(tp)
                del self._quiet[tp.partition]
        if holes:
            self.queue.put_nowait(QuietHoles(tuple(sorted(holes))))
