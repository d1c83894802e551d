"""config.py: the settings a cluster needs (replication, the events clock, the stall exit)."""

from __future__ import annotations

import pytest

from sendgate.streams.config import ConfigError, Settings


def test_defaults_suit_one_local_broker():
    s = Settings()
    assert (s.replication_factor, s.events_timestamp_type, s.stall_exit_s) == (1, "CreateTime", 300.0)


def test_cluster_settings_come_from_the_environment_and_reach_child_processes():
    env = {
        "SENDGATE_REPLICATION_FACTOR": "3",
        "SENDGATE_EVENTS_TIMESTAMP_TYPE": "LogAppendTime",
        "SENDGATE_STALL_EXIT_S": "45",
        "SENDGATE_GROUP_INSTANCE_ID": "gate-0",
        "SENDGATE_FAST_RESTORE": "0",
    }
    s = Settings.from_env(env)
    assert (s.replication_factor, s.events_timestamp_type, s.stall_exit_s) == (3, "LogAppendTime", 45.0)
    assert s.group_instance_id == "gate-0" and Settings().group_instance_id is None
    assert s.fast_restore is False and Settings().fast_restore is True
    assert Settings.from_env(s.to_env()) == s


# variable -> {a value it refuses: what the message says after the variable's name}
REFUSED = {
    "SENDGATE_REPLICATION_FACTOR": {"0": "must be at least 1", "three": "must be an integer"},
    "SENDGATE_EVENTS_TIMESTAMP_TYPE": {"BrokerTime": "must be one of"},
    "SENDGATE_STALL_EXIT_S": {"-1": "must not be negative", "0": "must be at least 1", "nan": "must be a finite"},
    "SENDGATE_TOPIC_PREFIX": {"sendgate": "must be .* and end with '.'", "send gate.": "must be letters"},
    "SENDGATE_GROUP_ID": {"gate/eu": "must be letters"},
    "SENDGATE_STORE": {"redis://": "must be rocksdb:// or memory://"},
    "SENDGATE_PROCESSING_GUARANTEE": {"at_most_once": "must be at_least_once or exactly_once"},
    "SENDGATE_PARTITIONS": {"0": "must be at least 1, got 0", "eight": "must be an integer, got 'eight'"},
    "SENDGATE_BATCH_MAX": {"1.5": "must be an integer, got '1.5'"},
    "SENDGATE_WEB_PORT": {"-1": "must be between 0 and 65535, got -1", "99999": "must be between 0 and 65535"},
    "SENDGATE_TICK_INTERVAL_S": {"nan": "must be a finite number, got 'nan'", "inf": "must be a finite number"},
    "SENDGATE_WEB": {"maybe": r"must be on or off \(also true/false, yes/no, 1/0\), got 'maybe'"},
    "SENDGATE_FAST_RESTORE": {"2": "must be on or off"},
    "SENDGATE_LOG_LEVEL": {"loud": "must be one of debug, info, warning, error, critical, got 'loud'"},
    "SENDGATE_LINGER_MS": {"soon": "must be a number, got 'soon'", "-0.5": "must not be negative"},
    "SENDGATE_SESSION_TIMEOUT_S": {"-2": "must not be negative"},
}


@pytest.mark.parametrize(
    "name, value, message",
    [(name, value, message) for name, cases in REFUSED.items() for value, message in cases.items()],
)
def test_bad_values_are_refused_with_the_variable_named(name, value, message):
    with pytest.raises(ConfigError, match=f"^{name} {message}"):
        Settings.from_env({name: value})


def test_the_events_topic_is_created_with_its_clock_and_kept_for_ever():
    s = Settings(events_timestamp_type="LogAppendTime")
    assert s.topic_configs(s.topic("events")) == {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
    assert s.topic_configs(s.topic("decisions")) == {}


def test_an_empty_environment_gives_the_defaults_and_an_empty_value_counts_as_unset():
    assert Settings.from_env({}) == Settings()
    assert (
        Settings.from_env(
            {
                "SENDGATE_PARTITIONS": "",
                "SENDGATE_BOOTSTRAP": "",
                "SENDGATE_LINGER_MS": "",
                "SENDGATE_POLICY": "",
                "SENDGATE_SASL_USERNAME": "",
            }
        )
        == Settings()
    )


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
    s = Settings(
        bootstrap="k1:9092,k2:9092",
        topic_prefix="acme.",
        group_id="gate-eu",
        partitions=12,
        store="memory://",
        data_dir="/srv/gate",
        policy_file="/etc/policy.toml",
        tick_interval_s=0.5,
        web_port=0,
        web_enabled=False,
        web_bind="0.0.0.0",
        web_host="gate-0.internal",
        session_timeout_s=12.5,
        heartbeat_interval_s=2.0,
        rebalance_timeout_s=30.0,
        log_level="info",
        log_format="json",
        processing_guarantee="exactly_once",
        batch_max=50,
        linger_ms=0.0,
        stall_exit_s=60.0,
        replication_factor=3,
        events_timestamp_type="LogAppendTime",
        metrics_networks=("sms", "rcs"),
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gate",
        sasl_password="pw",
        group_instance_id="gate-0",
        fast_restore=False,
        store_memory_mb=48,
        userkey_secret="s3cret",
        ssl_cafile="/etc/ca.pem",
        ssl_certfile="/etc/cert.pem",
        ssl_keyfile="/etc/key.pem",
        keyring_file="/etc/sendgate/keyring.toml",
        auth=False,
        key_id="acme-1",
        key_secret="k" * 32,
        operator_token="t0ken",
        api_wait_s=0.5,
        api_rate=5.0,
        api_burst=7,
        api_max_body=4096,
        api_memory=10,
    )
    unset = [f for f in s.__dataclass_fields__ if getattr(s, f) == getattr(Settings(), f)]
    assert unset == [], "set every field to a value other than its default"
    assert Settings.from_env(s.to_env()) == s
    assert all(isinstance(v, str) for v in s.to_env().values())  # an environment holds strings only


def test_a_list_of_metrics_networks_is_trimmed():
    s = Settings.from_env({"SENDGATE_METRICS_NETWORKS": " sms, ,rcs ,"})
    assert s.metrics_networks == ("sms", "rcs")


@pytest.mark.parametrize(
    "name, field",
    [("SENDGATE_WEB", "web_enabled"), ("SENDGATE_FAST_RESTORE", "fast_restore"), ("SENDGATE_AUTH", "auth")],
)
def test_switches_take_every_usual_spelling_of_on_and_off(name, field):
    for off in ("0", "false", "no", "off", "False", " OFF "):
        assert getattr(Settings.from_env({name: off}), field) is False, off
    for on in ("1", "true", "yes", "on", "TRUE"):
        assert getattr(Settings.from_env({name: on}), field) is True, on
    assert getattr(Settings.from_env({}), field) is True


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="SENDGATE_BOOTSTRAP must name at least one host:port"):
        Settings(bootstrap="")
    with pytest.raises(ConfigError, match="SENDGATE_REPLICATION_FACTOR must be a positive integer"):
        Settings(replication_factor=2.0)
    with pytest.raises(ConfigError, match="SENDGATE_GROUP_ID"):
        Settings().with_(group_id="a b")
    with pytest.raises(ConfigError, match="SENDGATE_TICK_INTERVAL_S must be a finite number"):
        Settings(tick_interval_s=float("nan"))
    with pytest.raises(ConfigError, match="SENDGATE_WEB_PORT must be between 0 and 65535"):
        Settings(web_port=70000)
    with pytest.raises(ConfigError, match="SENDGATE_LOG_LEVEL must be one of"):
        Settings(log_level="verbose")


def test_with_changes_only_what_is_given():
    s = Settings(partitions=4, store="memory://")
    assert s.with_(bootstrap=None, partitions=None, store=None) == s
    assert s.with_(partitions=16) == Settings(partitions=16, store="memory://")
    assert Settings(topic_prefix="acme.").topic("events") == "acme.events"


@pytest.mark.parametrize(
    "name, field",
    [
        ("SENDGATE_KEY_SECRET", "key_secret"),
        ("SENDGATE_OPERATOR_TOKEN", "operator_token"),
        ("SENDGATE_USERKEY_SECRET", "userkey_secret"),
        ("SENDGATE_SASL_PASSWORD", "sasl_password"),
    ],
)
def test_a_secret_can_come_from_a_file_without_its_final_newline(name, field, tmp_path):
    security = (
        {
            "SENDGATE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SENDGATE_SASL_MECHANISM": "PLAIN",
            "SENDGATE_SASL_USERNAME": "u",
        }
        if field == "sasl_password"
        else {}
    )
    (tmp_path / "secret").write_text("s3cret value\n")
    s = Settings.from_env({**security, f"{name}_FILE": str(tmp_path / "secret")})
    assert getattr(s, field) == "s3cret value"
    with pytest.raises(ConfigError, match=f"^both {name} and {name}_FILE are set: unset one of them"):
        Settings.from_env({**security, name: "x", f"{name}_FILE": str(tmp_path / "secret")})
    with pytest.raises(ConfigError, match=f"^{name}_FILE: cannot read .*missing: No such file or directory"):
        Settings.from_env({**security, f"{name}_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=f"^{name}_FILE: .*empty is empty"):
        Settings.from_env({**security, f"{name}_FILE": str(tmp_path / "empty")})


@pytest.mark.parametrize(
    "bind, host, refused",
    [
        ("0.0.0.0", "127.0.0.1", True),
        ("10.0.0.5", "localhost", True),
        ("::", "::1", True),
        ("0.0.0.0", "10.0.0.5", False),
        ("0.0.0.0", "gate-0.gate.svc", False),
        ("127.0.0.1", "127.0.0.1", False),
    ],
)
def test_a_worker_reachable_from_other_machines_must_not_advertise_loopback(bind, host, refused):
    s = Settings(web_bind=bind, web_host=host)
    if refused:
        with pytest.raises(
            ConfigError,
            match=f"SENDGATE_WEB_BIND={bind} serves other machines, but "
            f"SENDGATE_WEB_HOST={host} .* is loopback: set SENDGATE_WEB_HOST",
        ):
            s.check_web_addresses()
    else:
        s.check_web_addresses()
    s.with_(web_enabled=False).check_web_addresses()  # no web server: nothing to reach


def test_describe_names_every_variable_its_source_and_masks_secrets(tmp_path):
    (tmp_path / "token").write_text("t0ken")
    env = {
        "SENDGATE_PARTITIONS": "4",
        "SENDGATE_OPERATOR_TOKEN_FILE": str(tmp_path / "token"),
        "SENDGATE_KEY_SECRET": "k" * 32,
        "SENDGATE_APP_ID": "gate-old",
    }
    s = Settings.from_env(env).with_(bootstrap="k1:9092")
    rows = {name: (value, source) for name, value, source in s.describe(env, {"SENDGATE_BOOTSTRAP": "-b"})}
    assert rows["SENDGATE_BOOTSTRAP"] == ("k1:9092", "flag -b")
    assert rows["SENDGATE_PARTITIONS"] == ("4", "environment")
    assert rows["SENDGATE_OPERATOR_TOKEN"] == (
        "******** (set)",
        f"file {tmp_path / 'token'} (SENDGATE_OPERATOR_TOKEN_FILE)",
    )
    assert rows["SENDGATE_KEY_SECRET"] == ("******** (set)", "environment")
    assert rows["SENDGATE_USERKEY_SECRET"] == ("(unset)", "default")
    assert rows["SENDGATE_GROUP_ID"] == ("gate-old", "environment (SENDGATE_APP_ID, its former name)")
    assert rows["SENDGATE_WEB"] == ("on", "default")
    assert "t0ken" not in repr(rows) and "k" * 32 not in repr(rows)
