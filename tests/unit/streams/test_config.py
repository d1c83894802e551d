"""config.py: the settings a cluster needs (replication, the events clock, the stall exit)."""
from __future__ import annotations

import pytest

from sendgate.streams.config import ConfigError, Settings


def test_defaults_suit_one_local_broker():
    s = Settings()
    assert (s.replication_factor, s.events_timestamp_type, s.stall_exit_s) == (1, "CreateTime", 300.0)


def test_cluster_settings_come_from_the_environment_and_reach_child_processes():
    env = {"SENDGATE_REPLICATION_FACTOR": "3", "SENDGATE_EVENTS_TIMESTAMP_TYPE": "LogAppendTime",
           "SENDGATE_STALL_EXIT_S": "45", "SENDGATE_GROUP_INSTANCE_ID": "gate-0", "SENDGATE_FAST_RESTORE": "0"}
    s = Settings.from_env(env)
    assert (s.replication_factor, s.events_timestamp_type, s.stall_exit_s) == (3, "LogAppendTime", 45.0)
    assert s.group_instance_id == "gate-0" and Settings().group_instance_id is None
    assert s.fast_restore is False and Settings().fast_restore is True
    assert Settings.from_env(s.to_env()) == s


# variable -> {a value it refuses: what the message says after the variable's name}
REFUSED = {
    "SENDGATE_REPLICATION_FACTOR": {"0": "must be at least 1", "three": "must be an integer"},
    "SENDGATE_EVENTS_TIMESTAMP_TYPE": {"BrokerTime": "must be one of"},
    "SENDGATE_STALL_EXIT_S": {"-1": "must not be negative", "0": "must be at least 1"},
    "SENDGATE_TOPIC_PREFIX": {"sendgate": "must be .* and end with '.'", "send gate.": "must be letters"},
    "SENDGATE_GROUP_ID": {"gate/eu": "must be letters"},
    "SENDGATE_STORE": {"redis://": "must be rocksdb:// or memory://"},
    "SENDGATE_PROCESSING_GUARANTEE": {"at_most_once": "must be at_least_once or exactly_once"},
    "SENDGATE_PARTITIONS": {"0": "must be at least 1, got 0", "eight": "must be an integer, got 'eight'"},
    "SENDGATE_BATCH_MAX": {"1.5": "must be an integer, got '1.5'"},
    "SENDGATE_WEB_PORT": {"-1": "must not be negative, got -1"},
    "SENDGATE_LINGER_MS": {"soon": "must be a number, got 'soon'", "-0.5": "must not be negative"},
    "SENDGATE_SESSION_TIMEOUT_S": {"-2": "must not be negative"},
}


@pytest.mark.parametrize("name, value, message", [(name, value, message) for name, cases in REFUSED.items()
                                                  for value, message in cases.items()])
def test_bad_values_are_refused_with_the_variable_named(name, value, message):
    with pytest.raises(ConfigError, match=f"^{name} {message}"):
        Settings.from_env({name: value})


def test_the_events_topic_is_created_with_its_clock_and_kept_for_ever():
    s = Settings(events_timestamp_type="LogAppendTime")
    assert s.topic_configs(s.topic("events")) == {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
    assert s.topic_configs(s.topic("decisions")) == {}


def test_an_empty_environment_gives_the_defaults_and_an_empty_value_counts_as_unset():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"SENDGATE_PARTITIONS": "", "SENDGATE_BOOTSTRAP": "", "SENDGATE_LINGER_MS": "",
                              "SENDGATE_POLICY": "", "SENDGATE_SASL_USERNAME": ""}) == Settings()


def test_the_group_id_is_read_under_its_former_name_too():
    assert Settings.from_env({"SENDGATE_GROUP_ID": "gate-eu"}).group_id == "gate-eu"
    assert Settings.from_env({"SENDGATE_APP_ID": "gate-old"}).group_id == "gate-old"
    assert Settings.from_env({"SENDGATE_GROUP_ID": "gate-eu", "SENDGATE_APP_ID": "gate-old"}).group_id == "gate-eu"
    assert Settings.from_env({"SENDGATE_GROUP_ID": "", "SENDGATE_APP_ID": "gate-old"}).group_id == "gate-old"
    with pytest.raises(ConfigError, match="^SENDGATE_GROUP_ID must be letters"):  # named as it is now called
        Settings.from_env({"SENDGATE_APP_ID": "gate eu"})
    env = Settings.from_env({"SENDGATE_APP_ID": "gate-old"}).to_env()
    assert env["SENDGATE_GROUP_ID"] == "gate-old" and "SENDGATE_APP_ID" not in env  # children get the new name
    s = Settings(group_id="gate-eu")
    assert s.changelog_topic("state") == "gate-eu-state-changelog"  # Faust names changelogs by the group


def test_every_setting_reaches_a_child_process():
    s = Settings(bootstrap="k1:9092,k2:9092", topic_prefix="acme.", group_id="gate-eu", partitions=12,
                 store="memory://", data_dir="/srv/gate", policy_file="/etc/policy.toml", tick_interval_s=0.5,
                 web_port=0, web_enabled=False, web_bind="0.0.0.0", web_host="gate-0.internal",
                 session_timeout_s=12.5, heartbeat_interval_s=2.0, rebalance_timeout_s=30.0, log_level="info", log_format="json",
                 processing_guarantee="exactly_once", batch_max=50, linger_ms=0.0, stall_exit_s=60.0,
                 replication_factor=3, events_timestamp_type="LogAppendTime", metrics_networks=("sms", "rcs"),
                 security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="gate",
                 sasl_password="pw", group_instance_id="gate-0", fast_restore=False, userkey_secret="s3cret",
                 ssl_cafile="/etc/ca.pem", ssl_certfile="/etc/cert.pem", ssl_keyfile="/etc/key.pem",
                 keyring_file="/etc/sendgate/keyring.toml", auth=False, key_id="acme-1", key_secret="k" * 32,
                 operator_token="t0ken", api_wait_s=0.5, api_rate=5.0, api_burst=7, api_max_body=4096,
                 api_memory=10)
    unset = [f for f in s.__dataclass_fields__ if getattr(s, f) == getattr(Settings(), f)]
    assert unset == [], "set every field to a value other than its default"
    assert Settings.from_env(s.to_env()) == s
    assert all(isinstance(v, str) for v in s.to_env().values())  # an environment holds strings only


def test_a_list_of_metrics_networks_is_trimmed_and_web_is_on_unless_0():
    s = Settings.from_env({"SENDGATE_METRICS_NETWORKS": " sms, ,rcs ,", "SENDGATE_WEB": "no"})
    assert s.metrics_networks == ("sms", "rcs") and s.web_enabled is True
    assert Settings.from_env({"SENDGATE_WEB": "0"}).web_enabled is False


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="SENDGATE_BOOTSTRAP must name at least one host:port"):
        Settings(bootstrap="")
    with pytest.raises(ConfigError, match="SENDGATE_REPLICATION_FACTOR must be a positive integer"):
        Settings(replication_factor=2.0)
    with pytest.raises(ConfigError, match="SENDGATE_GROUP_ID"):
        Settings().with_(group_id="a b")


def test_with_changes_only_what_is_given():
    s = Settings(partitions=4, store="memory://")
    assert s.with_(bootstrap=None, partitions=None, store=None) == s
    assert s.with_(partitions=16) == Settings(partitions=16, store="memory://")
    assert Settings(topic_prefix="acme.").topic("events") == "acme.events"
