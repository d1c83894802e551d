"""The worker's topology in Faust: the application, the topics it reads and writes, and its tables.

Every topic and table has raw keys and values: the gate encodes its own records and rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TopicT

from ..config import Settings
from ..kafka import partitions_of
from ..logs import faust_logging_config
from .checkpoint import APPS, STATE, CheckpointStore, GlobalIndexTable, StateTable
from .faust_internals import inner_producer

RAW = dict(key_type=bytes, value_type=bytes)  # the app's default serializers are "raw"


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def raw_topic(app: faust.App, settings: Settings, name: str, **kwargs: Any) -> TopicT:
    """The topic `name` (with the settings' prefix), with the events topic's partition count."""
    return app.topic(settings.topic(name), partitions=settings.partitions, **kwargs, **RAW)


def faust_app(settings: Settings) -> faust.App:
    """The Faust application: the group, its broker, guarantees and timeouts, and its web server."""
    os.makedirs(settings.data_dir, exist_ok=True)
    return faust.App(
        settings.group_id,
        broker=faust_broker_url(settings.bootstrap),
        broker_credentials=settings.broker_credentials(),  # Faust's producer, consumers and topic admin
        store=settings.store,
        datadir=os.path.join(settings.data_dir, settings.group_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
        producer_acks=-1,
        producer_linger=settings.linger_ms / 1000,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.group_instance_id,
        # A standby copy of every partition on another worker (Faust's default, relied on): a
        # survivor of a kill takes the dead worker's partitions without reading their changelogs.
        table_standby_replicas=1,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_tables_enabled=False,  # Faust's /table view serves raw rows, and rows hold userkeys
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        logging_config=faust_logging_config(settings.log_format),  # SENDGATE_LOG_FORMAT=json: JSON lines
    )


def checkpoint_store(app: faust.App, settings: Settings) -> CheckpointStore:
    """The two tables, and the store the gate reads and writes them through."""
    state = app.tables.add(
        StateTable(
            app,
            name=STATE,
            default=None,
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            options=settings.rocksdb_options(),  # bounded memory per partition database
            **RAW,
        )
    )
    # Where each app lives crosses partitions, so every worker holds all of it (a global table, one
    # partition; Faust advises partitions=1 and recovery_buffer_size=1 for global tables with several workers).
    apps_table = app.tables.add(
        GlobalIndexTable(
            app,
            name=APPS,
            default=None,
            beacon=app.tables.beacon,
            partitions=1,
            standby_buffer_size=1,
            recovery_buffer_size=1,
            is_global=True,
            **RAW,
        )
    )
    return CheckpointStore(state, apps_table)


@dataclass
class Topics:
    """The topics the worker reads (events) and writes; a network's deliveries topic is declared
    when its first delivery is decided."""

    settings: Settings
    app: faust.App
    events: TopicT
    decisions: TopicT
    deadletter: TopicT
    consent: TopicT  # the consent audit trail
    grants: TopicT  # sendgate's revocations of unrestricted grants, for operators
    # every partition of the events topic (junk shares go to each), known once `declare` has run
    events_partitions: list[int] = field(default_factory=list)
    _deliveries: dict[str, TopicT] = field(default_factory=dict)  # network -> its topic

    @classmethod
    def of(cls, app: faust.App, settings: Settings) -> Topics:
        events = raw_topic(app, settings, "events", config=settings.topic_configs(settings.topic("events")))
        decisions, deadletter, consent, grants = (
            raw_topic(app, settings, name) for name in ("decisions", "deadletter", "consent", "grants")
        )
        return cls(settings, app, events, decisions, deadletter, consent, grants)

    async def declare(self) -> None:
        """Before the first batch. Subscribers may start before the first decision, and a producer
        that sends to a topic whose partitions have no leader yet stalls in retries: create the
        outputs and wait first."""
        for topic in (self.decisions, self.deadletter, self.consent, self.grants):
            await topic.maybe_declare()
            await partitions_of(self.settings, topic.get_topic_name(), 60)
        self.events_partitions = sorted(await partitions_of(self.settings, self.events.get_topic_name(), 60))
        # Faust's own sends (ticks) go through the same producer:
        # have it track their topics too (streams/worker/outbox.py says why a topic must be tracked)
        for topic in (self.events, self.deadletter):
            await inner_producer(self.app).client.add_topic(topic.get_topic_name())

    async def delivery(self, network: str) -> TopicT:
        topic = self._deliveries.get(network)
        if topic is None:
            # `network` is validated ([a-z0-9_-]{1,32}) so it cannot name an unexpected topic.
            topic = raw_topic(self.app, self.settings, f"deliveries.{network}")
            await topic.maybe_declare()
            await partitions_of(self.settings, topic.get_topic_name(), 60)
            self._deliveries[network] = topic
        return topic
