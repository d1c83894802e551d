"""local/broker.py: the broker's configuration and what LocalKafka refuses before starting anything
(a broker started: every integration test, through tests/integration/conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sendgate.streams.config import Settings
from sendgate.streams.local.broker import AUTHORIZER, SCRAM, BrokerError, LocalKafka, free_port, server_properties


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_one_node_on_loopback_that_creates_no_topic_by_itself():
    props = properties(server_properties(9092, 9095, Path("/data/logs")))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9095"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9095" and props["log.dirs"] == "/data/logs"
    assert props["auto.create.topics.enable"] == "false"  # sendgate creates its topics, with their partitions
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "1"
    assert not any(name.startswith(("sasl.", "listener.name.")) for name in props)


def test_the_scram_listener_is_one_more_door_for_clients():
    props = properties(server_properties(9092, 9095, Path("/data/logs"), sasl_port=9093))
    assert props["listeners"].endswith(",SASL_PLAINTEXT://127.0.0.1:9093")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093"
    assert props["inter.broker.listener.name"] == "PLAINTEXT" and props["sasl.enabled.mechanisms"] == SCRAM


def test_the_scram_user_logs_in_with_the_settings_it_gives(tmp_path):
    kafka = LocalKafka(port=9092, data_dir=tmp_path, scram=("gate", "s3cret"), sasl_port=9093)
    assert (kafka.bootstrap, kafka.sasl_bootstrap, kafka.log_file) == (
        "127.0.0.1:9092",
        "127.0.0.1:9093",
        tmp_path / "broker.log",
    )
    settings = Settings(bootstrap=kafka.sasl_bootstrap, **kafka.scram_settings)  # refused if incomplete
    assert (settings.security_protocol, settings.sasl_mechanism, settings.sasl_username) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        "gate",
    )
    plain = LocalKafka(data_dir=tmp_path)
    assert plain.sasl_bootstrap is None and plain.scram_settings == {}


def test_more_scram_users_each_log_in_as_themselves(tmp_path):
    kafka = LocalKafka(data_dir=tmp_path, scram=("admin", "a-pw"), users={"app": "b-pw"})
    assert kafka.scram_users == {"admin": "a-pw", "app": "b-pw"}
    assert kafka.scram_settings == kafka.login("admin")
    assert (kafka.login("app")["sasl_username"], kafka.login("app")["sasl_password"]) == ("app", "b-pw")
    assert kafka.super_users == ()  # no authorizer: nothing is checked


def test_the_authorizer_denies_what_no_acl_allows_and_trusts_the_broker_and_the_admin(tmp_path):
    kafka = LocalKafka(data_dir=tmp_path, scram=("admin", "a-pw"), authorizer=True)
    assert kafka.super_users == ("User:ANONYMOUS", "User:admin")  # the broker's own PLAINTEXT, the admin
    props = properties(server_properties(9092, 9095, Path("/data/logs"), 9093, kafka.super_users))
    assert props["authorizer.class.name"] == AUTHORIZER
    assert props["super.users"] == "User:ANONYMOUS;User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "authorizer.class.name" not in properties(server_properties(9092, 9095, Path("/data/logs"), 9093))


@pytest.mark.parametrize("options", [{"users": {"app": "pw"}}, {"authorizer": True}])
def test_users_and_the_authorizer_need_the_admin_user(options, tmp_path):
    with pytest.raises(BrokerError, match="need scram="):
        LocalKafka(data_dir=tmp_path, **options)
    with pytest.raises(BrokerError, match="ACLs need LocalKafka"):
        LocalKafka(data_dir=tmp_path, scram=("admin", "pw")).add_acls([])


@pytest.mark.parametrize("scram", [("", "pw"), ("gate", ""), ("ga,te", "pw"), ("gate", "p[w]"), ("ga=te", "pw")])
def test_a_scram_user_kafka_could_not_parse_is_refused(scram, tmp_path):
    with pytest.raises(BrokerError, match="SCRAM user and password must be non-empty"):
        LocalKafka(data_dir=tmp_path, scram=scram)
    with pytest.raises(BrokerError, match="SCRAM user and password must be non-empty"):
        LocalKafka(data_dir=tmp_path, scram=("admin", "pw"), users=dict([scram]))


def test_a_free_port_can_be_listened_on():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
