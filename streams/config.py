"""Worker and client configuration: every knob comes from a SENDGATE_* environment variable.

CLI flags override the environment for the command they are given to. Defaults suit one
worker on a laptop; production values are noted in README.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from sendgate.models.gate import Gate
from sendgate.models.policy import Policy
from sendgate.models.sources import Keyring, KeyringError, SigningKey

_PREFIX_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}\.\Z")
_GROUP_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}\Z")


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


class KafkaAuthError(ConfigError):
    """The broker refused the configured credentials (a ConfigError: the fix is in the settings)."""


class BrokerUnreachable(ConfigError):
    """No broker answers at SENDGATE_BOOTSTRAP (a ConfigError: the fix is a broker, or the setting)."""


def _number(
    env: dict,
    name: str,
    default: Any,
    parse: Callable[[str], Any],
    what: str,
    minimum: float,
    maximum: float | None = None,
) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if maximum is not None and not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    if value < minimum:
        raise ConfigError(
            f"{name} must " + (f"be at least {minimum}" if minimum else "not be negative") + f", got {value}"
        )
    return value


def _int(env: dict, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    return _number(env, name, default, int, "an integer", minimum, maximum)


def _float(env: dict, name: str, default: float) -> float:
    return _number(env, name, default, float, "a number", 0)


_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def _switch(env: dict, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in _ON + _OFF:
        raise ConfigError(f"{name} must be on or off (also true/false, yes/no, 1/0), got {env[name]!r}")
    return raw in _ON


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level(env: dict | None = None) -> str:
    """SENDGATE_LOG_LEVEL, lower case; ConfigError for a level that is not one of LOG_LEVELS."""
    raw = (os.environ if env is None else env).get("SENDGATE_LOG_LEVEL") or "warning"
    _check_log_level(raw)
    return raw.lower()


def log_format(env: dict | None = None) -> str:
    """SENDGATE_LOG_FORMAT, lower case: text or json (streams/logs.py); ConfigError for anything else."""
    value = ((os.environ if env is None else env).get("SENDGATE_LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ConfigError(f"SENDGATE_LOG_FORMAT must be text or json, got {value!r}")
    return value


def _check_log_level(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"SENDGATE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")


# Secrets can also come from a file (NAME_FILE): a mounted Kubernetes or Docker secret keeps the
# value out of the process environment, which `ps e` and crash reports show.
SECRETS = ("SENDGATE_SASL_PASSWORD", "SENDGATE_USERKEY_SECRET", "SENDGATE_KEY_SECRET", "SENDGATE_OPERATOR_TOKEN")


def _secret(env: dict, name: str) -> str | None:
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name) or None
    if env.get(name):
        raise ConfigError(f"both {name} and {name}_FILE are set: unset one of them")
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not value:
        raise ConfigError(f"{name}_FILE: {path} is empty")
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is this machine only: 127.0.0.0/8, ::1 or localhost."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve anywhere


# Every setting's variable and the Settings field it fills, in the order `sendgate config` shows them.
VARIABLES: tuple[tuple[str, str], ...] = tuple(
    (f"SENDGATE_{name.upper()}", field)
    for name, field in (
        ("bootstrap", "bootstrap"),
        ("topic_prefix", "topic_prefix"),
        ("group_id", "group_id"),
        ("partitions", "partitions"),
        ("replication_factor", "replication_factor"),
        ("store", "store"),
        ("data_dir", "data_dir"),
        ("policy", "policy_file"),
        ("tick_interval_s", "tick_interval_s"),
        ("web", "web_enabled"),
        ("web_port", "web_port"),
        ("web_bind", "web_bind"),
        ("web_host", "web_host"),
        ("session_timeout_s", "session_timeout_s"),
        ("heartbeat_interval_s", "heartbeat_interval_s"),
        ("rebalance_timeout_s", "rebalance_timeout_s"),
        ("group_instance_id", "group_instance_id"),
        ("log_level", "log_level"),
        ("log_format", "log_format"),
        ("processing_guarantee", "processing_guarantee"),
        ("batch_max", "batch_max"),
        ("linger_ms", "linger_ms"),
        ("stall_exit_s", "stall_exit_s"),
        ("fast_restore", "fast_restore"),
        ("store_memory_mb", "store_memory_mb"),
        ("events_timestamp_type", "events_timestamp_type"),
        ("metrics_networks", "metrics_networks"),
        ("security_protocol", "security_protocol"),
        ("sasl_mechanism", "sasl_mechanism"),
        ("sasl_username", "sasl_username"),
        ("sasl_password", "sasl_password"),
        ("ssl_cafile", "ssl_cafile"),
        ("ssl_certfile", "ssl_certfile"),
        ("ssl_keyfile", "ssl_keyfile"),
        ("keyring", "keyring_file"),
        ("auth", "auth"),
        ("key_id", "key_id"),
        ("key_secret", "key_secret"),
        ("operator_token", "operator_token"),
        ("userkey_secret", "userkey_secret"),
        ("api_wait_s", "api_wait_s"),
        ("api_rate", "api_rate"),
        ("api_burst", "api_burst"),
        ("api_max_body", "api_max_body"),
        ("api_memory", "api_memory"),
    )
)


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "sendgate."
    group_id: str = "sendgate"
    partitions: int = 8
    store: str = "rocksdb://"
    data_dir: str = "var/sendgate"
    policy_file: str | None = None
    tick_interval_s: float = 1.0  # 0 disables the wall-clock ticker (tests publish ticks themselves)
    web_port: int = 6066
    web_enabled: bool = True
    web_bind: str = "127.0.0.1"
    web_host: str = "127.0.0.1"  # how other workers reach this one (Faust routes requests by key)
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 3.0
    rebalance_timeout_s: float = 60.0
    log_level: str = "warning"
    log_format: str = "text"  # or "json": one JSON object per log line (streams/logs.py)
    processing_guarantee: str = "at_least_once"
    # A batch is decided, its outputs acknowledged, then its state written (streams/worker/checkpoint.py):
    # the events that have arrived, up to batch_max.
    batch_max: int = 500
    linger_ms: float = 1.0  # the producer's; every batch waits for its outputs' acknowledgement
    # A batch that keeps failing (the broker refusing writes, a corrupt row) is retried with
    # backoff; after this long the worker exits non-zero so that an orchestrator restarts it.
    stall_exit_s: float = 300.0
    replication_factor: int = 1  # of every topic sendgate creates; 3 in production
    # CreateTime: trust the producers' record timestamps; LogAppendTime: the broker stamps them
    # (set on the events topic when sendgate creates it), for producers that are not trusted.
    events_timestamp_type: str = "CreateTime"
    # networks that keep their own label in the metrics (others count as "other": labels stay bounded)
    metrics_networks: tuple[str, ...] = ("sms", "mms", "imessage", "rcs", "whatsapp", "telegram", "xmpp", "aim")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # kept out of logs and test reports
    # With a secret, tables key userkeys by HMAC-SHA-256 (see README, "Personal data").
    # Static membership (Kafka's group.instance.id): a worker that restarts within the session
    # timeout gets its partitions back without a rebalance. Unique per worker and stable across
    # its restarts (a pod name); unset: dynamic membership.
    group_instance_id: str | None = None
    # Restore the state table's stores from the changelog in write batches before joining the
    # group (streams/worker/restore.py); off: Faust's own restore, record by record.
    fast_restore: bool = True
    # RocksDB's memory per partition database (each active and standby partition has one): half a
    # block cache, half two write buffers. Faust's defaults (a 2 GB cache and three 64 MB buffers a
    # database) let a worker's memory grow with its state; the OS page cache holds the rest.
    store_memory_mb: int = 32
    userkey_secret: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None  # None with SSL: the system's CA store
    ssl_certfile: str | None = None  # client certificate (mutual TLS), PEM
    ssl_keyfile: str | None = None
    # Sources (README, "Sources"): the keyring the worker verifies records with (TOML), and whether
    # it must. Off, any producer may say anything for any app: for a closed test set-up only.
    keyring_file: str | None = None
    auth: bool = True
    # The key this process signs what it publishes with: an id of the keyring, whose secret is
    # SENDGATE_KEY_SECRET or, when that is unset, the keyring's entry.
    key_id: str | None = None
    key_secret: str | None = field(default=None, repr=False)
    # Bearer token of the web port's inspection views (userkeys, senders, check, the dashboard's data).
    operator_token: str | None = field(default=None, repr=False)
    # The HTTP API (`sendgate api`, streams/api/): how long a POST waits for its decision before it
    # answers `undecided`, each API key's token bucket (requests a second, and the burst it may
    # spend at once), the largest request body, and how many requests' decisions each API process
    # keeps for GET (its memory is bounded; older ones are answered by a retried POST).
    api_wait_s: float = 2.0
    api_rate: float = 50.0
    api_burst: int = 100
    api_max_body: int = 65_536
    api_memory: int = 50_000

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.topic_prefix):
            raise ConfigError(
                "SENDGATE_TOPIC_PREFIX must be letters, digits, '.', '_' or '-' and end with '.', "
                f"got {self.topic_prefix!r}"
            )
        if not _GROUP_ID_RE.match(self.group_id):
            raise ConfigError(f"SENDGATE_GROUP_ID must be letters, digits, '.', '_' or '-', got {self.group_id!r}")
        if self.store not in ("rocksdb://", "memory://"):
            raise ConfigError(f"SENDGATE_STORE must be rocksdb:// or memory://, got {self.store!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"SENDGATE_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise ConfigError(
                "SENDGATE_PROCESSING_GUARANTEE must be at_least_once or exactly_once, "
                f"got {self.processing_guarantee!r}"
            )
        if not self.bootstrap:
            raise ConfigError("SENDGATE_BOOTSTRAP must name at least one host:port")
        for name, value in self._numbers():
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number, not negative, got {value!r}")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError(f"SENDGATE_WEB_PORT must be between 0 and 65535, got {self.web_port}")
        _check_log_level(self.log_level)
        if self.stall_exit_s < 1:
            raise ConfigError(
                f"SENDGATE_STALL_EXIT_S must be at least 1 (seconds of failures before the worker "
                f"exits), got {self.stall_exit_s}"
            )
        if self.events_timestamp_type not in TIMESTAMP_TYPES:
            raise ConfigError(
                f"SENDGATE_EVENTS_TIMESTAMP_TYPE must be one of {', '.join(TIMESTAMP_TYPES)}, "
                f"got {self.events_timestamp_type!r}"
            )
        if type(self.replication_factor) is not int or self.replication_factor < 1:
            raise ConfigError(
                f"SENDGATE_REPLICATION_FACTOR must be a positive integer, got {self.replication_factor!r}"
            )
        self._check_security()

    def _numbers(self) -> list[tuple[str, float]]:
        return [
            (f"SENDGATE_{name.upper()}", getattr(self, name))
            for name in (
                "tick_interval_s",
                "session_timeout_s",
                "heartbeat_interval_s",
                "rebalance_timeout_s",
                "linger_ms",
                "stall_exit_s",
                "api_wait_s",
                "api_rate",
            )
        ]

    def check_web_addresses(self) -> None:
        """Refuse a worker whose web server other machines can reach while it tells the other
        workers to reach it on loopback: each would then forward a key's request to itself."""
        if self.web_enabled and not is_loopback(self.web_bind) and is_loopback(self.web_host):
            raise ConfigError(
                f"SENDGATE_WEB_BIND={self.web_bind} serves other machines, but SENDGATE_WEB_HOST="
                f"{self.web_host} (the address other workers are told to reach this one at) is "
                f"loopback: set SENDGATE_WEB_HOST to this machine's address (a pod's IP), or bind "
                f"127.0.0.1"
            )

    def _check_security(self) -> None:
        # A security setting the chosen protocol would ignore is refused rather than dropped
        # silently: it almost always means the protocol is not the one intended.
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"SENDGATE_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}"
            )
        sasl = {
            "SENDGATE_SASL_MECHANISM": self.sasl_mechanism,
            "SENDGATE_SASL_USERNAME": self.sasl_username,
            "SENDGATE_SASL_PASSWORD": self.sasl_password,
        }
        if protocol.startswith("SASL_"):
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise ConfigError(f"SENDGATE_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"SENDGATE_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}"
                )
        elif any(sasl.values()):
            raise ConfigError(
                f"{', '.join(n for n, v in sasl.items() if v)} set, but SENDGATE_SECURITY_PROTOCOL="
                f"{protocol} does not use SASL (SASL_PLAINTEXT or SASL_SSL does)"
            )
        tls = {
            "SENDGATE_SSL_CAFILE": self.ssl_cafile,
            "SENDGATE_SSL_CERTFILE": self.ssl_certfile,
            "SENDGATE_SSL_KEYFILE": self.ssl_keyfile,
        }
        if not protocol.endswith("SSL") and any(tls.values()):
            raise ConfigError(
                f"{', '.join(n for n, v in tls.items() if v)} set, but SENDGATE_SECURITY_PROTOCOL="
                f"{protocol} does not use TLS (SSL or SASL_SSL does)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("SENDGATE_SSL_KEYFILE needs SENDGATE_SSL_CERTFILE (the client certificate)")

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        d = cls()
        return cls(
            bootstrap=env.get("SENDGATE_BOOTSTRAP") or d.bootstrap,
            topic_prefix=env.get("SENDGATE_TOPIC_PREFIX") or d.topic_prefix,
            group_id=env.get("SENDGATE_GROUP_ID")
            or env.get("SENDGATE_APP_ID")
            or d.group_id,  # APP_ID: its former name
            partitions=_int(env, "SENDGATE_PARTITIONS", d.partitions, minimum=1),
            store=env.get("SENDGATE_STORE") or d.store,
            data_dir=env.get("SENDGATE_DATA_DIR") or d.data_dir,
            policy_file=env.get("SENDGATE_POLICY") or None,
            tick_interval_s=_float(env, "SENDGATE_TICK_INTERVAL_S", d.tick_interval_s),
            web_port=_int(env, "SENDGATE_WEB_PORT", d.web_port, minimum=0, maximum=65535),
            web_enabled=_switch(env, "SENDGATE_WEB", d.web_enabled),
            web_bind=env.get("SENDGATE_WEB_BIND") or d.web_bind,
            web_host=env.get("SENDGATE_WEB_HOST") or d.web_host,
            session_timeout_s=_float(env, "SENDGATE_SESSION_TIMEOUT_S", d.session_timeout_s),
            heartbeat_interval_s=_float(env, "SENDGATE_HEARTBEAT_INTERVAL_S", d.heartbeat_interval_s),
            rebalance_timeout_s=_float(env, "SENDGATE_REBALANCE_TIMEOUT_S", d.rebalance_timeout_s),
            log_level=log_level(env),
            log_format=log_format(env),
            processing_guarantee=env.get("SENDGATE_PROCESSING_GUARANTEE") or d.processing_guarantee,
            batch_max=_int(env, "SENDGATE_BATCH_MAX", d.batch_max, minimum=1),
            linger_ms=_float(env, "SENDGATE_LINGER_MS", d.linger_ms),
            stall_exit_s=_float(env, "SENDGATE_STALL_EXIT_S", d.stall_exit_s),
            replication_factor=_int(env, "SENDGATE_REPLICATION_FACTOR", d.replication_factor, minimum=1),
            events_timestamp_type=env.get("SENDGATE_EVENTS_TIMESTAMP_TYPE") or d.events_timestamp_type,
            metrics_networks=tuple(n.strip() for n in env["SENDGATE_METRICS_NETWORKS"].split(",") if n.strip())
            if env.get("SENDGATE_METRICS_NETWORKS")
            else d.metrics_networks,
            security_protocol=env.get("SENDGATE_SECURITY_PROTOCOL") or d.security_protocol,
            sasl_mechanism=env.get("SENDGATE_SASL_MECHANISM") or None,
            sasl_username=env.get("SENDGATE_SASL_USERNAME") or None,
            sasl_password=_secret(env, "SENDGATE_SASL_PASSWORD"),
            ssl_cafile=env.get("SENDGATE_SSL_CAFILE") or None,
            ssl_certfile=env.get("SENDGATE_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("SENDGATE_SSL_KEYFILE") or None,
            userkey_secret=_secret(env, "SENDGATE_USERKEY_SECRET"),
            group_instance_id=env.get("SENDGATE_GROUP_INSTANCE_ID") or None,
            fast_restore=_switch(env, "SENDGATE_FAST_RESTORE", d.fast_restore),
            store_memory_mb=_int(env, "SENDGATE_STORE_MEMORY_MB", d.store_memory_mb, minimum=4),
            keyring_file=env.get("SENDGATE_KEYRING") or None,
            auth=_switch(env, "SENDGATE_AUTH", True),
            key_id=env.get("SENDGATE_KEY_ID") or None,
            key_secret=_secret(env, "SENDGATE_KEY_SECRET"),
            operator_token=_secret(env, "SENDGATE_OPERATOR_TOKEN"),
            api_wait_s=_float(env, "SENDGATE_API_WAIT_S", d.api_wait_s),
            api_rate=_float(env, "SENDGATE_API_RATE", d.api_rate),
            api_burst=_int(env, "SENDGATE_API_BURST", d.api_burst, minimum=1),
            api_max_body=_int(env, "SENDGATE_API_MAX_BODY", d.api_max_body, minimum=1024),
            api_memory=_int(env, "SENDGATE_API_MEMORY", d.api_memory, minimum=1),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes `Settings.from_env` return these settings (for child processes)."""
        return {
            name: value
            for name, value in ((name, self._env_value(attribute)) for name, attribute in VARIABLES)
            if value is not None
        }

    def _env_value(self, field: str) -> str | None:
        value = getattr(self, field)
        if value is None:
            return None
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def describe(self, env: dict | None = None, flags: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
        """(variable, value, where it came from) of every setting, for `sendgate config`: secrets
        are masked; `flags` maps a variable to the command-line flag that set it."""
        env = dict(os.environ if env is None else env)
        flags = flags or {}
        rows = []
        for name, attribute in VARIABLES:
            value = self._env_value(attribute)
            if name in SECRETS and value is not None:
                value = "******** (set)"
            if name in flags:
                source = f"flag {flags[name]}"
            elif env.get(f"{name}_FILE") and name in SECRETS:
                source = f"file {env[f'{name}_FILE']} ({name}_FILE)"
            elif env.get(name):
                source = "environment"
            elif name == "SENDGATE_GROUP_ID" and env.get("SENDGATE_APP_ID"):
                source = "environment (SENDGATE_APP_ID, its former name)"
            else:
                source = "default"
            rows.append((name, "(unset)" if value is None else value, source))
        return rows

    def kafka_options(self) -> dict[str, Any]:
        """The security keyword arguments of every aiokafka client (producer, consumer, admin, client)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            # aiokafka names them sasl_plain_* for SCRAM too
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol.endswith("SSL"):
            options["ssl_context"] = self._ssl_context()
        return options

    def broker_credentials(self) -> Any:
        """The same settings for the Faust worker (`faust.App(broker_credentials=...)`); None for PLAINTEXT."""
        import faust  # only the worker needs it; clients should not pay for importing Faust

        options = self.kafka_options()
        if self.security_protocol.startswith("SASL_"):
            # with an ssl_context Faust speaks SASL_SSL, without one SASL_PLAINTEXT
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=options.get("ssl_context"),
            )
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(options["ssl_context"])
        return None

    def _ssl_context(self) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        try:
            # verifies the broker's certificate and host name; presents ours when one is configured
            return create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile)
        except OSError as exc:  # a missing file, or ssl.SSLError (bad PEM, a key that does not match)
            raise ConfigError(
                f"cannot load TLS files (SENDGATE_SSL_CAFILE={self.ssl_cafile}, SENDGATE_SSL_CERTFILE="
                f"{self.ssl_certfile}, SENDGATE_SSL_KEYFILE={self.ssl_keyfile}): {exc}"
            ) from None

    def rocksdb_options(self) -> dict[str, int]:
        """Faust's RocksDB options for one partition database, within `store_memory_mb`."""
        quarter = self.store_memory_mb * 1024 * 1024 // 4
        return {"block_cache_size": 2 * quarter, "write_buffer_size": quarter, "max_write_buffer_number": 2}

    def with_(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def topic_configs(self, name: str) -> dict[str, str]:
        """Topic configs sendgate sets when it creates `name` (beyond partitions and replicas)."""
        if name == self.topic("events"):
            # The log is the truth that replay and rebuild decide from: it is kept for ever
            # (time-based retention would also drop a backfill at once: its records carry old times).
            return {"message.timestamp.type": self.events_timestamp_type, "retention.ms": "-1"}
        return {}

    def changelog_topic(self, table: str) -> str:
        return f"{self.group_id}-{table}-changelog"  # Faust's naming

    def policy(self) -> Policy:
        return Policy.from_toml(self.policy_file) if self.policy_file else Policy()

    def keyring(self) -> Keyring | None:
        """The keyring records are verified with; None when SENDGATE_AUTH=off. Secure by default:
        with auth on and no keyring this refuses, rather than take every producer at its word."""
        if not self.auth:
            return None
        if not self.keyring_file:
            raise ConfigError(
                "no keyring: set SENDGATE_KEYRING to the keyring file that says who may publish what "
                "(README, Sources), or SENDGATE_AUTH=off to take every producer at its word"
            )
        try:
            return Keyring.from_toml(self.keyring_file)
        except KeyringError as exc:
            raise ConfigError(f"SENDGATE_KEYRING: {exc}") from None

    def signing_key(self) -> SigningKey | None:
        """The key this process signs its records with (SENDGATE_KEY_ID), or None: unsigned."""
        if not self.key_id:
            return None
        if self.key_secret:
            return SigningKey(self.key_id, "", self.key_secret.encode())
        if not self.keyring_file:
            raise ConfigError(
                f"SENDGATE_KEY_ID={self.key_id} needs its secret: SENDGATE_KEY_SECRET, or "
                f"SENDGATE_KEYRING with that key"
            )
        try:
            key = Keyring.from_toml(self.keyring_file).keys.get(self.key_id)
        except KeyringError as exc:
            raise ConfigError(f"SENDGATE_KEYRING: {exc}") from None
        if key is None:
            raise ConfigError(f"SENDGATE_KEY_ID={self.key_id} is not a key of {self.keyring_file}")
        return key

    def gate(self, policy: Policy | None = None) -> Gate:
        """The rule pipeline with these settings' policy (or `policy`), userkey secret and keyring."""
        secret = self.userkey_secret.encode() if self.userkey_secret else None
        return Gate(policy or self.policy(), userkey_secret=secret, keyring=self.keyring())
