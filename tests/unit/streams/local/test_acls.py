"""local/acls.py: the ACLs per role as data, and the commands of docs/security-and-privacy.md are exactly these (the
integration test tests/integration/test_kafka_acls.py grants them on a broker that denies the rest)."""

from __future__ import annotations

from pathlib import Path

from sendgate.streams.config import Settings
from sendgate.streams.local import acls

README = Path(__file__).resolve().parents[4] / "docs" / "security-and-privacy.md"  # "Kafka ACLs per role"
S = Settings(topic_prefix="p.", group_id="g")


def granted(rules: list[acls.Acl]) -> set[tuple[str, str, str, str]]:
    return {(op, rule.resource, rule.pattern, name) for rule in rules for op in rule.operations for name in rule.names}


def test_a_producer_writes_the_events_topic_and_nothing_else():
    assert granted(acls.producer(S, "User:app")) == {
        ("Write", "topic", "literal", "p.events"),
        ("Describe", "topic", "literal", "p.events"),
    }


def test_a_worker_owns_the_prefix_its_changelogs_and_its_group():
    rules = acls.worker(S, "User:w")
    assert {r.principal for r in rules} == {"User:w"}
    assert granted(rules) == {
        (op, "topic", "prefixed", name) for op in ("Read", "Write", "Create", "Describe") for name in ("p.", "g-")
    } | {("Read", "group", "literal", "g")}


def test_a_worker_gets_transactions_and_describe_configs_only_when_it_uses_them():
    rules = acls.worker(S.with_(processing_guarantee="exactly_once", events_timestamp_type="LogAppendTime"), "User:w")
    assert granted(rules) - granted(acls.worker(S, "User:w")) == {
        ("Write", "transactional-id", "prefixed", "g-"),
        ("Describe", "transactional-id", "prefixed", "g-"),
        ("DescribeConfigs", "topic", "literal", "p.events"),
    }


def test_a_subscriber_reads_the_outputs_in_its_own_group_and_writes_nothing():
    rules = granted(acls.subscriber(S, "User:sub", "sub-group"))
    assert {op for op, *_ in rules} == {"Read", "Describe"}
    assert {(resource, pattern, name) for _, resource, pattern, name in rules} == {
        ("topic", "literal", "p.decisions"),
        ("topic", "literal", "p.consent"),
        ("topic", "literal", "p.grants"),
        ("topic", "prefixed", "p.deliveries."),
        ("group", "literal", "sub-group"),
    }


def test_one_acl_is_one_kafka_acls_command_and_one_binding_per_resource_and_operation():
    [rule] = acls.subscriber(S, "User:sub", "sub-group")[:1]
    assert rule.command("b:9092", "a.properties") == (
        "kafka-acls.sh --bootstrap-server b:9092 --command-config a.properties --add --allow-principal User:sub "
        "--operation Read --operation Describe --topic p.decisions --topic p.consent --topic p.grants "
        "--resource-pattern-type literal"
    )
    assert len(rule.bindings()) == 6
    assert rule.bindings()[0] == (2, "p.decisions", 3, "User:sub", "*", 3, 3)  # topic, literal, Read, Allow


def test_the_readme_prints_the_recipe_for_the_default_settings():
    readme = README.read_text()
    defaults, both = Settings(), Settings(processing_guarantee="exactly_once", events_timestamp_type="LogAppendTime")
    rules = (
        acls.producer(defaults, "User:app")
        + acls.worker(both, "User:worker")
        + acls.subscriber(defaults, "User:delivery-sms", "delivery-sms")
    )
    missing = [rule.command() for rule in rules if f"\n{rule.command()}\n" not in readme]
    assert not missing, missing
