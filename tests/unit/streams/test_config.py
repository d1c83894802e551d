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


@pytest.mark.parametrize("env, message", [
    ({"SENDGATE_REPLICATION_FACTOR": "0"}, "SENDGATE_REPLICATION_FACTOR must be at least 1"),
    ({"SENDGATE_REPLICATION_FACTOR": "three"}, "SENDGATE_REPLICATION_FACTOR must be an integer"),
    ({"SENDGATE_EVENTS_TIMESTAMP_TYPE": "BrokerTime"}, "SENDGATE_EVENTS_TIMESTAMP_TYPE must be one of"),
    ({"SENDGATE_STALL_EXIT_S": "-1"}, "SENDGATE_STALL_EXIT_S must not be negative"),
    ({"SENDGATE_STALL_EXIT_S": "0"}, "SENDGATE_STALL_EXIT_S must be at least 1"),
])
def test_bad_values_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_events_topic_is_created_with_its_clock_and_kept_for_ever():
    s = Settings(events_timestamp_type="LogAppendTime")
    assert s.topic_configs(s.topic("events")) == {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
    assert s.topic_configs(s.topic("decisions")) == {}
