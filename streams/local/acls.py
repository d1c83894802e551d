"""Kafka ACLs per role, as data: what each principal needs on one deployment's topics and groups.

`producer`, `worker` and `subscriber` give the ACLs of one principal for the given settings (topic
prefix, group id, processing guarantee); `Acl.command()` prints each as a `kafka-acls.sh` line
(docs/security-and-privacy.md, "Kafka ACLs per role") and `LocalKafka.add_acls` adds the same bindings
(tests/integration/test_kafka_acls.py). Anything not granted is denied: the broker runs with
`allow.everyone.if.no.acl.found=false`. Read and Write imply Describe in Kafka; it is listed
anyway where a client asks for the topic's metadata, so that the table says what is used.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..config import Settings

# Kafka's wire codes (org.apache.kafka.common.acl.AclOperation, resource.ResourceType, PatternType)
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
RESOURCES = {"topic": 2, "group": 3, "transactional-id": 5}
PATTERNS = {"literal": 3, "prefixed": 4}
ALLOW = 3


@dataclass(frozen=True)
class Acl:
    """Allow `principal` (`User:NAME`) the `operations` (AclCommand's names: Read, Write, ...) on
    the `resource` (topic, group, transactional-id) `names`, literal or prefixed."""

    principal: str
    operations: tuple[str, ...]
    resource: str
    names: tuple[str, ...]
    pattern: str = "literal"
    why: str = ""

    def args(self) -> list[str]:
        """The arguments of `kafka-acls.sh` (kafka.admin.AclCommand) that add it."""
        ops = [arg for op in self.operations for arg in ("--operation", op)]
        resources = [arg for name in self.names for arg in (f"--{self.resource}", name)]
        return ["--add", "--allow-principal", self.principal, *ops, *resources, "--resource-pattern-type", self.pattern]

    def bindings(self) -> list[tuple[int, str, int, str, str, int, int]]:
        """One CreateAcls binding per resource and operation: (resource type, name, pattern type,
        principal, host, operation, permission), from any host, as `kafka-acls.sh` adds them."""
        return [
            (RESOURCES[self.resource], name, PATTERNS[self.pattern], self.principal, "*", OPERATIONS[op], ALLOW)
            for name in self.names
            for op in self.operations
        ]

    def command(self, bootstrap: str = "BROKER:9092", config: str = "admin.properties") -> str:
        return shlex.join(["kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", config, *self.args()])

    def __str__(self) -> str:
        return f"{self.principal} {','.join(self.operations)} {self.resource} {self.pattern} {','.join(self.names)}"


def producer(settings: Settings, principal: str) -> list[Acl]:
    """Apps, network connectors and operators' tools that publish events: the events topic only."""
    return [
        Acl(
            principal,
            ("Write", "Describe"),
            "topic",
            (settings.topic("events"),),
            why="publish events; Write on a topic also allows the idempotent producer's id",
        )
    ]


def worker(settings: Settings, principal: str) -> list[Acl]:
    """The Faust worker: its topics (it reads events, writes every output and appends ticks,
    revocations and junk shares to events, and creates them all, `deliveries.<network>` on first use), Faust's changelogs and
    leader topic (`<group_id>-...`), its consumer group, and its transactions under exactly_once."""
    prefix, group = settings.topic_prefix, settings.group_id
    both = ("Read", "Write", "Create", "Describe")
    acls = [
        Acl(
            principal,
            both,
            "topic",
            (prefix,),
            "prefixed",
            why="read events; write decisions, deliveries, consent, grants, deadletter and events (ticks, "
            "revocations, junk shares); create them",
        ),
        Acl(
            principal,
            both,
            "topic",
            (f"{group}-",),
            "prefixed",
            why="Faust's changelogs and its assignor's leader topic: restore, write, create",
        ),
        Acl(principal, ("Read",), "group", (group,), why="join the workers' consumer group, commit offsets"),
    ]
    if settings.events_timestamp_type == "LogAppendTime":
        acls.append(
            Acl(
                principal,
                ("DescribeConfigs",),
                "topic",
                (settings.topic("events"),),
                why="check that the events topic stamps LogAppendTime",
            )
        )
    if settings.processing_guarantee == "exactly_once":
        acls.append(
            Acl(
                principal,
                ("Write", "Describe"),
                "transactional-id",
                (f"{group}-",),
                "prefixed",
                why="Faust's transactional ids, <group_id>-<group>-<partition>",
            )
        )
    return acls


def subscriber(settings: Settings, principal: str, group: str) -> list[Acl]:
    """Delivery workers and auditors: the worker's outputs for them, and their own consumer group."""
    topics = tuple(settings.topic(name) for name in ("decisions", "consent", "grants"))
    return [
        Acl(principal, ("Read", "Describe"), "topic", topics, why="read decisions and the audit trails"),
        Acl(
            principal,
            ("Read", "Describe"),
            "topic",
            (settings.topic("deliveries."),),
            "prefixed",
            why="read the deliveries of every network",
        ),
        Acl(principal, ("Read",), "group", (group,), why="consume in its own group, commit offsets"),
    ]
