"""The Faust application: topics, tables, the gate agent, the ticker and the junk-index refresh.

`build_app` wires the pure `Gate` (sendgate.models.gate) to Kafka. It holds no rule of its own.
"""
from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.tables.globaltable import GlobalTable
import orjson

from sendgate.models.decisions import Decision, Delivery
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import JUNK, SCHEDULES, TABLES, Gate
from sendgate.models.junk import JunkIndex, JunkTemplate
from sendgate.models.pending import ReleaseSchedule

from .client import partitions_of
from .config import Settings
from .web import register_views

log = logging.getLogger("sendgate.worker")

RAW = dict(key_type=bytes, value_type=bytes)  # the app's default serializers are "raw"


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class JunkTable(GlobalTable):
    """The junk index's global table: one changelog partition, written to partition 0.

    Faust's `use_partitioner=True` would pick the partition from producer metadata that may not
    list the changelog yet (TypeError on the first write), and the default writes to the
    partition of the current event, which a one-partition changelog does not have.
    """

    def partition_for_key(self, key: Any) -> int:
        return 0


class TableStore:
    """The gate's `Store` over Faust tables; writes go to each table's changelog partition of
    the event being processed, which keeps every row co-partitioned with its app's events."""

    def __init__(self, tables: dict[str, Any], junk_table: Any) -> None:
        self.tables = {**tables, JUNK: junk_table}
        self.junk = JunkIndex()
        self._junk_seen: dict[bytes, bytes] = {}
        self._junk_loaded = False

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.tables[table].get(key)

    def set(self, table: str, key: bytes, value: bytes) -> None:
        self.tables[table][key] = value
        if table == JUNK:
            self._junk_seen[key] = value

    def delete(self, table: str, key: bytes) -> None:
        self.tables[table].pop(key, None)
        if table == JUNK:
            self._junk_seen.pop(key, None)

    def refresh_junk(self) -> None:
        """Bring the in-memory junk index up to date with the global table (other workers' reports)."""
        current = dict(self.tables[JUNK].items())
        for key in set(self._junk_seen) - set(current):
            self.junk.remove(key.decode())
        for key, raw in current.items():
            if self._junk_seen.get(key) != raw:
                self.junk.put(key.decode(), JunkTemplate.from_bytes(raw))
        self._junk_seen = current
        self._junk_loaded = True

    def ensure_junk_loaded(self) -> None:
        if not self._junk_loaded:
            self.refresh_junk()


@dataclass
class GateApp:
    settings: Settings
    app: faust.App
    gate: Gate
    store: TableStore
    events: Any
    decisions: Any
    deadletter: Any
    emit_deliveries: bool = True
    emit_outputs: bool = True
    counts: dict[str, int] = field(default_factory=lambda: {"events": 0, "decisions": 0, "deadlettered": 0,
                                                              "redelivered": 0})
    _delivery_topics: dict[str, Any] = field(default_factory=dict)
    _last_offset: dict[int, int] = field(default_factory=dict)

    async def process(self, message: Any, value: bytes | None) -> None:
        """Decide one record of sendgate.events; never raises for bad input."""
        if message.offset <= self._last_offset.get(message.partition, -1):
            # Faust occasionally hands the same record to the agent twice (seen right after a
            # worker start); its effects are already in the tables, so deciding it again would
            # emit a duplicate decision.
            self.counts["redelivered"] += 1
            log.warning("skipped redelivered record %s[%s]@%s", message.topic, message.partition, message.offset)
            return
        self._last_offset[message.partition] = message.offset
        self.counts["events"] += 1
        record_ts = round(message.timestamp * 1000) if message.timestamp else 0  # Faust gives float seconds
        try:
            self.store.ensure_junk_loaded()
            records = self.gate.handle_record(message.key, value, record_ts, self.store)
        except InvalidEvent as exc:
            await self.dead_letter(message, value, str(exc))
            return
        except Exception as exc:  # a bug must not stop the stream: park the record with the reason
            log.exception("internal error on %s[%s]@%s", message.topic, message.partition, message.offset)
            await self.dead_letter(message, value, f"internal error: {type(exc).__name__}: {exc}")
            return
        if not self.emit_outputs:
            return
        for record in records:
            if isinstance(record, Decision):
                self.counts["decisions"] += 1
                await self.decisions.send(key=record.app.encode(), value=record.to_json())
            elif self.emit_deliveries:
                topic = await self.delivery_topic(record.network)
                await topic.send(key=record.app.encode(), value=record.to_json())

    async def delivery_topic(self, network: str) -> Any:
        topic = self._delivery_topics.get(network)
        if topic is None:
            # `network` is validated ([a-z0-9_-]{1,32}) so it cannot name an unexpected topic.
            topic = self.app.topic(self.settings.topic(f"deliveries.{network}"),
                                   partitions=self.settings.partitions, **RAW)
            await topic.maybe_declare()
            await partitions_of(self.settings, topic.get_topic_name(), 60)
            self._delivery_topics[network] = topic
        return topic

    async def dead_letter(self, message: Any, value: bytes | None, error: str) -> None:
        self.counts["deadlettered"] += 1
        doc: dict[str, Any] = {"error": error, "topic": message.topic, "partition": message.partition,
                               "offset": message.offset}
        for name, data in (("key", message.key), ("raw", value)):
            text, is_base64 = _text_or_b64(data)
            doc[name] = text
            if is_base64:
                doc[f"{name}_encoding"] = "base64"  # bytes that are not UTF-8 are kept, not mangled
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)
        await self.deadletter.send(key=message.key, value=orjson.dumps(doc))


def _text_or_b64(data: bytes | None) -> tuple[str | None, bool]:
    if data is None:
        return None, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), True


def build_app(settings: Settings, *, decisions_topic: str | None = None, emit_deliveries: bool = True,
              emit_outputs: bool = True, ticker: bool = True) -> GateApp:
    policy = settings.policy()
    os.makedirs(settings.data_dir, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings.bootstrap),
        broker_credentials=settings.broker_credentials(),  # Faust's producer, consumers and topic admin
        store=settings.store,
        datadir=os.path.join(settings.data_dir, settings.app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
    )
    events = app.topic(settings.topic("events"), partitions=settings.partitions, **RAW)
    decisions = app.topic(decisions_topic or settings.topic("decisions"), partitions=settings.partitions, **RAW)
    deadletter = app.topic(settings.topic("deadletter"), partitions=settings.partitions, **RAW)
    tables = {name: app.Table(name, default=None, partitions=settings.partitions, **RAW) for name in TABLES}
    # The junk index crosses apps, so every worker holds all of it (a global table, one partition).
    # (Faust advises partitions=1 and recovery_buffer_size=1 for global tables with several workers.)
    junk_table = app.tables.add(JunkTable(app, name=JUNK, default=None, beacon=app.tables.beacon, partitions=1,
                                          standby_buffer_size=1, recovery_buffer_size=1, is_global=True, **RAW))
    gate_app = GateApp(settings, app, settings.gate(policy), TableStore(tables, junk_table), events, decisions, deadletter,
                       emit_deliveries=emit_deliveries, emit_outputs=emit_outputs)

    if settings.web_enabled:
        register_views(app, gate_app.gate, tables)

    @app.agent(events, name="gate")
    async def gate_agent(stream: Any) -> None:
        # Subscribers may start before the first decision, and a producer that sends to a topic
        # whose partitions have no leader yet stalls in retries: create the outputs and wait first.
        for topic in (decisions, deadletter):
            await topic.maybe_declare()
            await partitions_of(settings, topic.get_topic_name(), 60)
        async for event in stream.events():
            await gate_app.process(event.message, event.value)

    @app.timer(interval=5.0)
    async def refresh_junk() -> None:
        gate_app.store.refresh_junk()

    if ticker and settings.tick_interval_s > 0:
        schedules = tables[SCHEDULES]

        @app.timer(interval=settings.tick_interval_s)
        async def tick() -> None:
            # Wall-clock time enters the log only as tick events; decisions are made from them.
            now = int(time.time() * 1000)
            for app_key, raw in list(schedules.items()):
                if ReleaseSchedule.from_bytes(raw).is_due(now):
                    tick_event = {"type": "tick", "app": app_key.decode(), "ts": now}
                    await events.send(key=app_key, value=orjson.dumps(tick_event))

    return gate_app
