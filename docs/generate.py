"""Writes the generated pages of docs/ from the code, so that they cannot drift from it:

- docs/configuration.md: every environment variable (`Settings`, streams/config.py, and the few read
  elsewhere) and every policy key (`Policy`, models/policy.py), with defaults taken from the code;
- docs/event-contract.md: every event and output record from the JSON Schemas in models/schemas/.

    .venv/bin/python docs/generate.py           # rewrite both pages
    .venv/bin/python docs/generate.py --check   # exit 1 if a page is not what the code says (CI: tests/unit/test_docs.py)

The meanings are written here, next to each other; a Settings field, an environment variable read
anywhere under streams/, or a Policy field without a line here fails tests/unit/test_docs.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "models" / "schemas"

# (variable, Settings field or None when read outside Settings, meaning). Defaults come from Settings().
Env = tuple[str, "str | None", str]
ENV_SECTIONS: list[tuple[str, list[Env]]] = [
    (
        "Kafka and topics",
        [
            ("SENDGATE_BOOTSTRAP", "bootstrap", "Kafka `host:port[,host:port]`; also makes tests use this broker"),
            ("SENDGATE_TOPIC_PREFIX", "topic_prefix", "prefix of every topic (letters, digits, `._-`, ending in `.`)"),
            (
                "SENDGATE_PARTITIONS",
                "partitions",
                "partitions of the topics sendgate creates (events, decisions, "
                "deliveries, tables); size it for the apps: an app lives on one partition, so partitions bound the "
                "workers that can share the load ([deployment](deployment.md))",
            ),
            (
                "SENDGATE_REPLICATION_FACTOR",
                "replication_factor",
                "replicas of every topic sendgate creates (events, "
                "outputs, changelogs, replay topics); **3 in production**. A factor the cluster cannot "
                "hold is refused at once, naming the topics and the variable",
            ),
            (
                "SENDGATE_EVENTS_TIMESTAMP_TYPE",
                "events_timestamp_type",
                "`message.timestamp.type` of the events topic "
                "when sendgate creates it: `LogAppendTime` when producers are not trusted (see [Which clock to trust]"
                "(concepts.md#which-clock-to-trust))",
            ),
            (
                "SENDGATE_GROUP_ID",
                "group_id",
                "the workers' consumer group, also the prefix of the changelog topics and "
                "the local store's folder (Faust's app id; not a tenant). `SENDGATE_APP_ID`, its former name, is still "
                "read",
            ),
            ("SENDGATE_APP_ID", None, "the former name of `SENDGATE_GROUP_ID`, read when that is unset"),
            (
                "SENDGATE_GROUP_INSTANCE_ID",
                "group_instance_id",
                "static group membership (Kafka's `group.instance.id`): "
                "a worker restarted within the session timeout gets its partitions back without a rebalance; unique per "
                "worker and stable across its restarts (e.g. the pod name)",
            ),
            (
                "SENDGATE_SESSION_TIMEOUT_S",
                "session_timeout_s",
                "consumer group timing: how long a killed worker's "
                "partitions wait before another takes them. Fail-over measured 10.6-13.7 s at 10 s and 30-33 s at 30 s "
                "(bench/results/latest.md); heartbeats come from Faust's consumer thread, so a busy event loop does not "
                "miss them. The tests use 6, 1, 3 (with the two below) for fast joins on one broker",
            ),
            ("SENDGATE_HEARTBEAT_INTERVAL_S", "heartbeat_interval_s", "consumer group heartbeat interval"),
            ("SENDGATE_REBALANCE_TIMEOUT_S", "rebalance_timeout_s", "consumer group rebalance timeout"),
        ],
    ),
    (
        "The worker",
        [
            ("SENDGATE_POLICY", "policy_file", "TOML policy file; see [Policy keys](#policy-keys)"),
            (
                "SENDGATE_STORE",
                "store",
                "table store: `rocksdb://` (via faust-streaming's `rocksdict` extra, installs "
                "cleanly here) or `memory://`",
            ),
            (
                "SENDGATE_DATA_DIR",
                "data_dir",
                "local table stores (a cache: the changelogs are the truth); a persistent "
                "volume in production shortens restarts",
            ),
            (
                "SENDGATE_FAST_RESTORE",
                "fast_restore",
                "before joining its group, a worker brings its `state` stores up "
                "to the changelog's last commit records in RocksDB write batches (`streams/worker/restore.py`); `0`: "
                "Faust's own restore, record by record",
            ),
            (
                "SENDGATE_STORE_MEMORY_MB",
                "store_memory_mb",
                "RocksDB's memory per partition database (each active and standby partition of the `state` "
                "table has one, on this worker): half a block cache, half two write buffers. Faust's own defaults "
                "(a 2 GB cache and three 64 MB buffers a database) let a worker's memory grow with its state; "
                "rows not cached are read from the OS page cache, which is not the worker's memory",
            ),
            (
                "SENDGATE_TICK_INTERVAL_S",
                "tick_interval_s",
                "how often the ticker looks for due requests; `0` disables it",
            ),
            (
                "SENDGATE_PROCESSING_GUARANTEE",
                "processing_guarantee",
                "or `exactly_once` (Faust transactions; see [Guarantees](guarantees.md): not reliable here)",
            ),
            (
                "SENDGATE_BATCH_MAX",
                "batch_max",
                "a batch is the events that have arrived, up to this many (no waiting "
                "for more); its outputs are acknowledged before its state is written ([Guarantees](guarantees.md))",
            ),
            (
                "SENDGATE_LINGER_MS",
                "linger_ms",
                "the producer's linger: every batch waits for its outputs, so keep it short",
            ),
            (
                "SENDGATE_STALL_EXIT_S",
                "stall_exit_s",
                "a batch that keeps failing (broker refusing writes, a corrupt "
                "row) is retried with backoff for this long; then the worker exits with code 70 so that an orchestrator "
                "restarts it",
            ),
            (
                "SENDGATE_METRICS_NETWORKS",
                "metrics_networks",
                "networks that keep their own label in the metrics; others count as `other`",
            ),
            ("SENDGATE_LOG_LEVEL", "log_level", "log level of every command (the worker, the API, the tools)"),
            (
                "SENDGATE_LOG_FORMAT",
                "log_format",
                "`json`: one JSON object per log line (`time`, `level`, `logger`, "
                "`message`, `exc_info`), for log shippers; no userkey or text is ever in a line "
                "([Operations](operations.md#logs))",
            ),
        ],
    ),
    (
        "The web port: probes, metrics, inspection",
        [
            (
                "SENDGATE_WEB",
                "web_enabled",
                "Faust's web server (`/livez`, `/readyz`, `/metrics`, the dashboard, inspection); `0` turns it off",
            ),
            ("SENDGATE_WEB_PORT", "web_port", "its port"),
            (
                "SENDGATE_WEB_BIND",
                "web_bind",
                "address the web server binds (`0.0.0.0` where probes and Prometheus must reach it)",
            ),
            (
                "SENDGATE_WEB_HOST",
                "web_host",
                "the address other workers use to reach this one (inspection requests "
                "are forwarded to the worker holding the app): on Kubernetes the pod IP "
                "([deployment](deployment.md))",
            ),
            (
                "SENDGATE_OPERATOR_TOKEN",
                "operator_token",
                "bearer token of the inspection views (see "
                "[Inspection](operations.md#inspection)); without it they answer on a loopback web address only",
            ),
        ],
    ),
    (
        "Sources, signing and personal data",
        [
            (
                "SENDGATE_KEYRING",
                "keyring_file",
                "the keyring file (TOML) records are verified with (see "
                "[Sources](security-and-privacy.md#sources-who-may-say-what)); a worker without one refuses to start",
            ),
            (
                "SENDGATE_AUTH",
                "auth",
                "`off`: records are not verified, any producer may say anything for any app; the "
                "worker says so at start, in `/readyz`'s `details` and in `sendgate_auth_enabled`",
            ),
            ("SENDGATE_KEY_ID", "key_id", "the key `publish` and `Publisher` sign with (default: unsigned)"),
            ("SENDGATE_KEY_SECRET", "key_secret", "its secret (default: that key's entry in `SENDGATE_KEYRING`)"),
            (
                "SENDGATE_USERKEY_SECRET",
                "userkey_secret",
                "key userkeys in the state by HMAC-SHA-256 (see "
                "[Personal data](security-and-privacy.md#personal-data)); must be the one the state was built with: a "
                "worker, replay or rebuild with another refuses to start",
            ),
        ],
    ),
    (
        "Kafka security (TLS and SASL)",
        [
            (
                "SENDGATE_SECURITY_PROTOCOL",
                "security_protocol",
                "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (see [Security](security-and-privacy.md#security))",
            ),
            (
                "SENDGATE_SASL_MECHANISM",
                "sasl_mechanism",
                "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with `SASL_*`",
            ),
            ("SENDGATE_SASL_USERNAME", "sasl_username", "required with `SASL_*`"),
            ("SENDGATE_SASL_PASSWORD", "sasl_password", "required with `SASL_*`"),
            (
                "SENDGATE_SSL_CAFILE",
                "ssl_cafile",
                "PEM file of the CA(s) that signed the brokers' certificates (default: the system's CAs)",
            ),
            ("SENDGATE_SSL_CERTFILE", "ssl_certfile", "client certificate (PEM) when the brokers require one"),
            ("SENDGATE_SSL_KEYFILE", "ssl_keyfile", "the client certificate's key (PEM)"),
        ],
    ),
    (
        "The HTTP API (`sendgate api`)",
        [
            (
                "SENDGATE_API_WAIT_S",
                "api_wait_s",
                "how long `POST /v1/messages` waits for the decision before it "
                "answers `undecided` ([HTTP API](client.md#http-api))",
            ),
            ("SENDGATE_API_RATE", "api_rate", "each API key's token bucket: requests a second; per API process"),
            ("SENDGATE_API_BURST", "api_burst", "each API key's token bucket: how many at once; per API process"),
            ("SENDGATE_API_MAX_BODY", "api_max_body", "largest request body in bytes (413 beyond)"),
            (
                "SENDGATE_API_MEMORY",
                "api_memory",
                "requests whose decisions each API process keeps for `GET` (oldest forgotten first)",
            ),
        ],
    ),
    (
        "Local development and tests",
        [
            (
                "SENDGATE_CACHE",
                None,
                "where `sendgate broker` keeps the Kafka jars it fetches from Maven Central "
                "(default `~/.cache/sendgate`)",
            ),
            (
                "SENDGATE_FAULT_SEED",
                None,
                "the tests' seed of kill points (`tests/integration/test_kafka_faults.py`, "
                "`test_kafka_zombie.py`; default the one CI runs)",
            ),
        ],
    ),
]

# Policy keys: (section of the TOML file, key, meaning). Defaults come from Policy().
POLICY: list[tuple[str, str, str]] = [
    ("consent", "reply_window_s", "a send answering the user's inbound within this is a reply (exempt from pacing)"),
    ("consent", "opt_out_keywords", "whole-message opt-out words (FCC 47 CFR 64.1200(a)(10))"),
    ("consent", "opt_in_keywords", "whole-message opt-in words"),
    ("consent", "help_keywords", "whole-message HELP words (CTIA 5.1.3: HELP must be answered)"),
    ("consent", "consent_locales", "word lists of `models/wording.py`: add `es` and/or `fr` for Spanish and French"),
    ("consent", "opt_out_confirmation_s", "one confirmation may answer an opt-out within this (FCC 64.1200(a)(12))"),
    (
        "consent",
        "conversation_horizon_days",
        "a conversation lapses after this long without an inbound, and its "
        "row is removed (`models/retention.py`); 0: never. Opt-outs and opt-ins never lapse",
    ),
    ("burst", "similarity_threshold", "two texts are near-identical at or above this similarity"),
    (
        "burst",
        "similarity_measure",
        "`containment` (the share of the shorter text's shingles in the longer: "
        "padding and spun words cannot dilute it) or `jaccard`",
    ),
    ("burst", "shingle_size", "characters per shingle of the MinHash sketches"),
    ("burst", "num_perm", "MinHash permutations per sketch"),
    ("burst", "free_recipients", "distinct recipients per cluster per window sent at once"),
    ("burst", "burst_window_s", "the free allowance's window"),
    ("burst", "pace_interval_s", "the interval between paced sends"),
    ("burst", "pace_growth_sends", "the interval grows by `pace_interval_s` every this many paced sends"),
    ("burst", "max_delay_s", "a paced slot further away than this is `rejected` / `burst_limit`"),
    ("burst", "cluster_idle_s", "idle clusters expire after this much event time"),
    ("burst", "max_clusters", "clusters a sender keeps (one-off texts evicted before templates)"),
    (
        "burst",
        "app_max_clusters",
        "clusters kept across all the app's sender names (an app runs many senders' templates at once)",
    ),
    ("burst", "young_sender_days", "a sender registered less than this long ago is young (risky)"),
    ("burst", "min_conversations", "a sender with fewer conversing userkeys is risky"),
    ("burst", "risky_free_recipients", "a risky sender's free allowance"),
    ("burst", "risky_interval_factor", "a risky sender's intervals are multiplied by this"),
    (
        "burst",
        "junk_reject_reporters",
        "a text similar to one reported as junk by this many distinct recipients is rejected",
    ),
    ("burst", "max_junk_templates", "junk templates the junk index keeps"),
    ("signals", "reputation_junk_report", "a junk report multiplies the sender's reputation by this"),
    ("signals", "reputation_not_delivered", "a `not_delivered` status multiplies it by this"),
    ("signals", "reputation_failed", "a `failed` status multiplies it by this"),
    ("signals", "reputation_paced_blast", "per `free_recipients` paced sends of a blast's window"),
    ("signals", "reputation_delivered", "a `delivered` status multiplies it by this"),
    ("signals", "reputation_conversation", "a new conversation multiplies it by this"),
    ("signals", "reputation_half_life_s", "the reputation's deficit halves every this much event time"),
    ("signals", "grant_revoke_window_s", "the (tumbling) window of the grant watch"),
    ("signals", "grant_revoke_junk_reports", "junk reports in a window that revoke an unrestricted grant"),
    ("signals", "grant_revoke_refused_blasts", "blast sends refused in a window that revoke it"),
    ("signals", "grant_revoke_min_results", "delivery results needed before the not-delivered rate counts"),
    ("signals", "grant_revoke_not_delivered_rate", "share of results not delivered that revokes it"),
    (
        "clock",
        "max_ts_ahead_s",
        "an event's `ts` may run ahead of its record's timestamp by this (beyond: "
        "dead-lettered; see [Which clock to trust](concepts.md#which-clock-to-trust))",
    ),
    (
        "clock",
        "max_ts_behind_s",
        "an event may trail its record's timestamp by this (beyond: decided at the bounded time)",
    ),
    ("controls", "default_valid_for_s", "a send without `valid_for_s` is valid this long; 0: until it goes out"),
    (
        "controls",
        "recipient_limits",
        "per (app, userkey): at most `count` sends in any `window_s`, as "
        "`[[count, window_s], ...]`, e.g. `[[3, 3600], [10, 86400]]`; empty: no limit",
    ),
    ("controls", "loop_repeats", "auto-reply loop guard: the same inbound text repeated more than this often"),
    ("controls", "loop_window_s", "... within this long of the first"),
    ("controls", "loop_delay_s", "replies in a suspected loop are delayed by this"),
    ("controls", "loop_reject_repeats", "from this many repeats on they are rejected"),
    (
        "controls",
        "contact_list_networks",
        'networks that need the bot on the user\'s contact list, e.g. `["xmpp", "aim"]`',
    ),
    (
        "controls",
        "request_memory_s",
        "a retried request_id gets its first answer this long (0: off; [Guarantees](guarantees.md))",
    ),
    ("controls", "duplicate_text_limit", "the same text to one userkey at most this many times ... (0: no limit)"),
    ("controls", "duplicate_text_window_s", "... within this long"),
    (
        "compliance",
        "default_category",
        "the kind of a send without `category`: conversational, informational or "
        "promotional ([rules](rules.md#kinds-of-message-and-quiet-hours))",
    ),
    (
        "compliance",
        "opt_out_scope",
        "what a STOP stops: `all`, or `category` (the kind of the message it answers, and "
        'the kinds that need more consent; "stop all" stops all)',
    ),
    ("compliance", "quiet_hours_categories", "the kinds held outside the recipient's quiet-hours window"),
    (
        "compliance",
        "quiet_hours_windows",
        "windows that override or extend the defaults, as `[[region, window], ...]`, "
        'e.g. `[["GB", "08:00-21:00"], ["US-TX", "Mon-Sat 09:00-21:00; Sun 12:00-21:00"]]`',
    ),
    (
        "compliance",
        "subject_limit",
        "at most this many promotional sends on one subject to one userkey ... (0: no limit)",
    ),
    ("compliance", "subject_window_s", "... within this long"),
]


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple):
        if value and all(isinstance(v, str) for v in value):
            return "`" + ",".join(value) + "`"
        return "`" + json.dumps([list(v) if isinstance(v, tuple) else v for v in value]) + "`"
    if value is None:
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _toml(value: Any) -> str:
    if isinstance(value, tuple):
        return json.dumps([list(v) if isinstance(v, tuple) else v for v in value])
    return json.dumps(value)


def configuration() -> str:
    from sendgate.models.policy import Policy
    from sendgate.streams.config import SECRETS, Settings

    settings, policy = Settings(), Policy()
    out = [
        "# Configuration",
        "",
        "<!-- generated by docs/generate.py from streams/config.py and models/policy.py: edit those, then run "
        "`.venv/bin/python docs/generate.py` -->",
        "",
        "Every setting is an environment variable; the worker's flags (`-b`/`--bootstrap-server`, `--partitions`,",
        "`--policy`, `--store`) override them (see [the command line](command-line.md)). Defaults suit one",
        "worker on a laptop; the production values are in [deployment](deployment.md#production-checklist).",
        "",
        "Each secret may be given as a file instead (a mounted Kubernetes or Docker secret): "
        + ", ".join(f"`{name}_FILE`" for name in SECRETS)
        + " name a file whose content (less a final "
        "newline) is the value; setting both the variable and its `_FILE` is an error.",
        "",
    ]
    for title, rows in ENV_SECTIONS:
        out += [f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field, meaning in rows:
            default = _default(getattr(settings, field)) if field else "(none)"
            if name == "SENDGATE_CACHE":
                default = "`~/.cache/sendgate`"
            elif name == "SENDGATE_FAULT_SEED":
                default = "`20240611`"
            out.append(f"| `{name}` | {default} | {meaning} |")
        out.append("")
    out += [
        "## Policy keys",
        "",
        "Every threshold is a key of one TOML file (`SENDGATE_POLICY`, or `--policy`). Sections are for",
        "reading only; keys are flat. Unknown keys and bad values are refused with a message that names",
        "them. This file sets every key to its default:",
        "",
        "```toml",
    ]
    sections = list(dict.fromkeys(section for section, _, _ in POLICY))
    for section in sections:
        out.append(f"[{section}]")
        out += [f"{key} = {_toml(getattr(policy, key))}" for s, key, _ in POLICY if s == section]
        out.append("")
    out[-1] = "```"
    out += ["", "| key | section | default | meaning |", "|---|---|---|---|"]
    out += [
        f"| `{key}` | `[{section}]` | {_default(getattr(policy, key))} | {meaning} |"
        for section, key, meaning in POLICY
    ]
    out += [
        "",
        "The rules these keys tune are in [the rules](rules.md); `sendgate replay --config FILE` tries",
        "a policy over the whole log before it goes live ([operations](operations.md#replay-and-rebuild)).",
        "",
    ]
    return "\n".join(out)


# --- the event contract -------------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def _type(prop: dict[str, Any], common: dict[str, Any]) -> str:
    if "$ref" in prop:
        ref = prop["$ref"].split("#/$defs/")[-1]  # common.json#/$defs/id, or #/$defs/id inside common.json
        target = common.get("$defs", {}).get(ref)
        return _type(target, common) + f" ({ref})" if target else ref
    for union in ("anyOf", "oneOf"):
        if union in prop:
            return " or ".join(_type(member, common) for member in prop[union])
    parts = []
    kind = prop.get("type")
    if isinstance(kind, list):
        parts.append(" or ".join(kind))
    elif kind:
        parts.append(kind)
    if "const" in prop:
        parts = [f"`{json.dumps(prop['const'])}`"]
    if "enum" in prop:
        parts = [" \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])]
    bounds = []
    for key, word in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("exclusiveMinimum", ">"),
    ):
        if key in prop:
            bounds.append(f"{word} {prop[key]}")
    if "pattern" in prop:
        bounds.append(f"matches `{prop['pattern']}`".replace("|", "\\|"))
    if "items" in prop:
        parts.append("of " + _type(prop["items"], common))
    return ", ".join(p for p in [" ".join(parts)] + bounds if p)


def _describe(text: str | None) -> str:
    return (text or "").replace("\n", " ").replace("|", "\\|")


def event_contract() -> str:
    common = _schema("common")
    out = [
        "# Event contract",
        "",
        "<!-- generated by docs/generate.py from models/schemas/*.json: edit those, then run "
        "`.venv/bin/python docs/generate.py` -->",
        "",
        "Everything sendgate reads and writes is a JSON object on a Kafka topic. Producers write events to",
        "`<prefix>events`, keyed by `app` (every event of an app on one partition); the worker writes",
        "decisions, deliveries, consent records, grant revocations and dead letters. Topics, keys and the",
        "internals are described in [topology.md](../topology.md); the JSON Schemas below are",
        "`models/schemas/*.json` (draft 2020-12), which `tests/unit` checks agree with the worker's own",
        "validator. Records are signed with the headers `sendgate-key` and `sendgate-sig` (see",
        "[Sources](security-and-privacy.md#sources-who-may-say-what)).",
        "",
    ]
    event = _schema("event")
    inputs = [ref["$ref"].removesuffix(".json") for ref in event.get("oneOf", [])]
    outputs = sorted(p.stem for p in SCHEMAS.glob("*.json") if p.stem not in {"event", "common", *inputs})
    out += ["## Events (input: `<prefix>events`)", "", _describe(event.get("description")), ""]
    out += [f"- [`{name}`](#{name})" for name in inputs] + [""]
    for name in inputs:
        out += _record(name, common)
    out += ["## Output records", ""]
    for name in outputs:
        out += _record(name, common)
    return "\n".join(out).rstrip() + "\n"


def _record(name: str, common: dict[str, Any]) -> list[str]:
    schema = _schema(name)
    required = set(schema.get("required", []))
    out = [
        f"### `{name}`",
        "",
        _describe(schema.get("description")) or schema.get("title", ""),
        "",
        f"Schema: [`models/schemas/{name}.json`](../models/schemas/{name}.json).",
        "",
        "| field | required | type | meaning |",
        "|---|---|---|---|",
    ]
    for field, prop in schema.get("properties", {}).items():
        out.append(
            f"| `{field}` | {'yes' if field in required else ''} | {_type(prop, common)} | "
            f"{_describe(prop.get('description'))} |"
        )
    out.append("")
    return out


PAGES = {"configuration.md": configuration, "event-contract.md": event_contract}


def stale() -> list[str]:
    """The generated pages whose file differs from what the code says."""
    return [
        name
        for name, make in PAGES.items()
        if not (ROOT / "docs" / name).exists() or (ROOT / "docs" / name).read_text() != make()
    ]


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        names = stale()
        for name in names:
            print(f"docs/{name} is out of date: run .venv/bin/python docs/generate.py", file=sys.stderr)
        return 1 if names else 0
    for name, make in PAGES.items():
        (ROOT / "docs" / name).write_text(make())
        print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
