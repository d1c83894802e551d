"""The `sendgate` command line: broker, worker, publish, tail, demo."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any
from pathlib import Path
from urllib.parse import quote

import orjson
from aiokafka.errors import KafkaConnectionError

from sendgate.models.events import InvalidEvent
from sendgate.models.policy import Policy, PolicyError

from .local.broker import BrokerError, LocalKafka
from .kafka import unreachable
from .config import ConfigError, Settings
from .progress import Progress


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_(
        bootstrap=getattr(args, "bootstrap", None), partitions=getattr(args, "partitions", None),
        policy_file=getattr(args, "policy", None), store=getattr(args, "store", None))


def cmd_broker(args: argparse.Namespace) -> int:
    scram = None
    if args.scram:
        user, sep, password = args.scram.partition(":")
        if not sep:
            raise BrokerError("--scram takes USER:PASSWORD")
        scram = (user, password)
    kafka = LocalKafka(port=args.port, data_dir=args.data_dir, scram=scram, sasl_port=args.sasl_port)
    kafka.start()
    print(f"Kafka {kafka.bootstrap} is up (data: {kafka.data_dir}, log: {kafka.log_file}); Ctrl-C stops it.",
          flush=True)
    print(f"export SENDGATE_BOOTSTRAP={kafka.bootstrap}", flush=True)
    if scram:
        print(f"SASL_PLAINTEXT listener with SCRAM-SHA-256 for user {scram[0]!r} on {kafka.sasl_bootstrap}; "
              f"clients log in with:", flush=True)
        print(f"export SENDGATE_BOOTSTRAP={kafka.sasl_bootstrap} SENDGATE_SECURITY_PROTOCOL=SASL_PLAINTEXT "
              f"SENDGATE_SASL_MECHANISM=SCRAM-SHA-256 SENDGATE_SASL_USERNAME={scram[0]} "
              f"SENDGATE_SASL_PASSWORD=<the password>", flush=True)
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop["now"] and kafka.process is not None and kafka.process.poll() is None:
            time.sleep(0.5)
    finally:
        kafka.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from .worker.app import STALL_EXIT_CODE, build_worker
    from .identity import check_userkey_secret
    from .kafka import check_events_clock, ensure_topics, partitions_of
    from .worker.restore import restore_state
    from .worker.checkpoint import APPS, STATE, after_unclean_stop

    settings = _settings(args)
    events = settings.topic("events")

    async def topics_ready() -> None:
        # The consumer's first metadata must list every topic it subscribes to: a topic that Faust
        # creates while the group forms is left out of the assignment until the next metadata
        # refresh (5 minutes), so the worker would idle, or wait that long to recover a table.
        changelogs = [settings.changelog_topic(STATE)]
        singles = [settings.changelog_topic(APPS)]
        await ensure_topics(settings, [events])
        await check_events_clock(settings)
        await check_userkey_secret(settings, "worker")
        await ensure_topics(settings, changelogs, compact=True)
        await ensure_topics(settings, singles, partitions=1, compact=True)
        await ensure_topics(settings, [f"{settings.group_id}-__assignor-__leader"], partitions=1)
        for topic in [events, *changelogs, *singles]:
            await partitions_of(settings, topic, 60)

    asyncio.run(topics_ready())
    gate_worker = build_worker(settings)
    print(f"sendgate worker: {settings.topic('events')} ({settings.partitions} partitions) on {settings.bootstrap}, "
          f"app id {settings.group_id}, store {settings.store}, policy {settings.policy_file or 'defaults'}",
          flush=True)
    # A worker killed mid-write can leave a local store ahead of its changelog (Faust's table path
    # writes the store first), and Faust would replay the changelog over it into a state that
    # never existed. The marker file tells the next start that the last stop was not clean: the
    # `state` table's store is kept (it holds only what the broker acknowledged: streams/worker/checkpoint.py),
    # the others recover from their changelogs.
    marker = Path(settings.data_dir) / f"{settings.group_id}.running"

    class Worker(faust.Worker):  # the name shows in its log lines ("[^Worker]: Ready")
        """No terminal spinner: for it Faust sets the root logger to DEBUG whatever the log level,
        and every debug call of Faust and aiokafka then builds a LogRecord (profiled: 11 % of the
        worker's busy time)."""

        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    if marker.exists():
        keep = settings.processing_guarantee == "at_least_once"
        removed = after_unclean_stop(Path(settings.data_dir) / settings.group_id, keep)
        print("sendgate worker: the last worker on this store did not stop cleanly; "
              + ("the state table's local store is kept, " if keep else "")
              + f"{len(removed)} other local store(s) removed: they recover from their changelogs", flush=True)
    if settings.fast_restore and settings.store.startswith("rocksdb") and settings.processing_guarantee == "at_least_once":
        applied, read, seconds = asyncio.run(restore_state(settings))  # streams/worker/restore.py
        print(f"sendgate worker: local state store up to its changelog's last commit records: {applied:,} row(s) "
              f"applied of {read:,} read in {seconds:.1f} s", flush=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    worker = Worker(gate_worker.faust, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):
            marker.unlink(missing_ok=True)  # a clean stop, also after a stall: the store is whole
            if gate_worker.stalled:
                raise SystemExit(STALL_EXIT_CODE) from None
        raise
    marker.unlink(missing_ok=True)
    return STALL_EXIT_CODE if gate_worker.stalled else 0


def _read_lines(path: str):
    """(line number, bytes read so far, line) of every non-empty line."""
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    read = 0
    with stream:
        for number, line in enumerate(stream, 1):
            read += len(line)
            if line.strip():
                yield number, read, line.rstrip(b"\r\n")


async def _publish(args: argparse.Namespace) -> int:
    from .client import Publisher

    settings = _settings(args)
    sent = invalid = 0
    started = time.monotonic()
    futures = []
    size = None if args.file == "-" else os.path.getsize(args.file)
    bar = Progress("publish", size, "bytes")
    async with Publisher(settings) as publisher:
        if publisher.key is None:
            print("sendgate publish: SENDGATE_KEY_ID is not set, so the records are not signed; a worker with a "
                  "keyring dead-letters them as unauthorized (README, Sources)", file=sys.stderr)
        for number, read, line in _read_lines(args.file):
            try:
                futures.append(await publisher.send(line))
                sent += 1
            except InvalidEvent as exc:
                invalid += 1
                print(f"\rline {number}: {exc} (not sent)", file=sys.stderr)
            if size is None:
                bar.update(sent + invalid)
            else:
                bar.update(read, sent + invalid)  # the bar by bytes, the rate in lines
        await publisher.flush()
        for future in futures:
            await future  # raises if the broker refused a record
    bar.finish()
    elapsed = time.monotonic() - started
    print(f"published {sent} event(s) to {settings.topic('events')} in {elapsed:.1f} s; "
          f"{invalid} invalid line(s) not sent", file=sys.stderr)
    return 1 if invalid else 0


def _ask_worker(args: argparse.Namespace, path: str, body: dict | None = None) -> dict:
    """A worker's JSON answer at `path` of its web server (POST with `body`); ConfigError says why not."""
    import urllib.error
    import urllib.request

    settings = _settings(args)
    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    data = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json"} if data else {}
    if settings.operator_token:  # the inspection views and check answer the operator only
        headers["Authorization"] = f"Bearer {settings.operator_token}"
    request = urllib.request.Request(f"{url.rstrip('/')}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:  # the worker's own error message
        raise ConfigError(orjson.loads(exc.read()).get("error", str(exc))) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"no worker answers at {url} ({getattr(exc, 'reason', exc)}): is it running with its "
                          f"web server on (SENDGATE_WEB, SENDGATE_WEB_PORT), or pass --url") from None


def cmd_status(args: argparse.Namespace) -> int:
    """Print a worker's state, rates, pending requests and lag, from its /sendgate/status."""
    doc = _ask_worker(args, "/sendgate/status")
    sys.stdout.write(format_status(doc))
    return 0 if doc["state"]["ready"] else 1


def cmd_check(args: argparse.Namespace) -> int:
    """A campaign pre-flight: what the gate would decide for each recipient now (writes nothing)."""
    body: dict = {"sender": args.sender, "text": args.text, "network": args.network, "ts": args.at,
                  "valid_for_s": args.valid_for}
    if args.recipients:
        try:
            with (sys.stdin if args.recipients == "-" else open(args.recipients, encoding="utf-8")) as fh:
                body["recipients"] = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(f"--recipients {args.recipients}: {exc.strerror}") from None
    else:
        body["count"] = args.count
    doc = _ask_worker(args, f"/sendgate/check/{quote(args.app, safe='')}", body)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(format_check(doc))
    return 0


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def format_check(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"{doc['app']} / {doc['sender']} on {doc['network']} at {_iso(doc['ts'])}: {s['now']} now, "
             f"{s['paced']} paced" + (f" (the last at {_iso(s['last_slot'])})" if s["last_slot"] else "")
             + f", {s['refused']} refused"
             + (" (" + ", ".join(f"{r} {n}" for r, n in s["refused_by_reason"].items()) + ")" if s["refused"] else ""),
             f"{'userkey':<24} {'outcome':<9} {'reason':<20} {'goes out':<20} detail"]
    for r in doc["recipients"]:
        when = (_iso(r["deliver_at"]) if r["outcome"] == "delayed" else "now" if r["outcome"] == "accepted" else
                f"retry in {r['retry_after_s']} s" if r["retry_after_s"] else "-")
        lines.append(f"{r['userkey'][:24]:<24} {r['outcome']:<9} {r['reason'][:20]:<20} {when:<20} "
                     f"{r['detail'][:100]}")
    return "\n".join(lines) + "\n"


def format_status(doc: dict) -> str:
    state = doc["state"]
    lines = [f"worker: {'ready' if state['ready'] else 'NOT READY: ' + '; '.join(state['reasons'])}"]
    recent = doc["history"][-60:]
    per_s = {o: sum(h[o] for h in recent) / 60 for o in doc["totals"]}
    lines.append("decisions: " + ", ".join(f"{o} {n:,}" for o, n in doc["totals"].items()))
    lines.append("last minute: " + ", ".join(f"{o} {r:.1f}/s" for o, r in per_s.items()))
    pending = doc["pending"]
    nxt = pending["next_release_ts"]
    lines.append(f"pending: {pending['held']:,} delayed request(s)" + (f", next release {_iso(nxt)}" if nxt else ""))
    lines.append("consent: " + ", ".join(f"{k} {n:,}" for k, n in doc["consent"].items()))
    lines.append("lag: " + (", ".join(f"p{p['partition']} {p['lag']:,}" for p in doc["partitions"]) or "no partitions"))
    b = doc["batches"]
    lines.append(f"batches: {b['count']:,}, failed attempts {b['failed']:,}; "
                 + ", ".join(f"{stage} {t['last_ms']} ms" for stage, t in b["stages"].items() if t["last_ms"] is not None))
    return "\n".join(lines) + "\n"


async def _tail(args: argparse.Namespace) -> int:
    from .client import consent_records, decisions, grant_revocations

    settings = _settings(args)
    if args.grants:
        records = grant_revocations(settings, group_id=args.group, from_beginning=args.from_beginning, app=args.app)
    elif args.consent:
        records = consent_records(settings, group_id=args.group, from_beginning=args.from_beginning, app=args.app,
                                  kind=args.kind)
    else:
        records = decisions(settings, group_id=args.group, from_beginning=args.from_beginning, app=args.app,
                            outcome=args.outcome)
    async for record in records:
        sys.stdout.buffer.write(orjson.dumps(record.to_dict()) + b"\n")
        sys.stdout.flush()
    return 0


def _until(spec: str) -> dict[int, int] | None:
    if spec == "now":
        return None
    try:
        with open(spec, "rb") as fh:
            return {int(p): int(o) for p, o in orjson.loads(fh.read()).items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--until-offsets: {spec} must be 'now' or a JSON file of {{\"partition\": offset}}: {exc}")


async def _replay(args: argparse.Namespace) -> int:
    from .ops.replay import compare, read_decisions, replay

    settings = _settings(args)
    policy = Policy.from_toml(args.config) if args.config else settings.policy()
    result = await replay(settings, args.name, policy, _until(args.until_offsets))
    print(f"replay {args.name}: {result.events} events, {result.decisions} decisions, {result.deadlettered} invalid, "
          f"{result.seconds:.1f} s ({result.rate:,.0f} events/s) -> {settings.topic(f'replay.{args.name}.decisions')}")
    if args.compare:
        live = await read_decisions(settings, settings.topic("decisions"))
        replayed = await read_decisions(settings, settings.topic(f"replay.{args.name}.decisions"), result.start)
        summary, changed = compare(live, replayed)
        print(summary)
        out = args.changed_out or f"replay-{args.name}-changed.jsonl"
        with open(out, "wb") as fh:
            fh.writelines(orjson.dumps(c) + b"\n" for c in changed)
        print(f"{len(changed)} changed request(s) written to {out}")
    return 0


async def _rebuild(args: argparse.Namespace) -> int:
    from .ops.rebuild import rebuild

    settings = _settings(args)
    await rebuild(settings, settings.policy(), args.new_userkey_secret)
    return 0


def cmd_keyring_init(args: argparse.Namespace) -> int:
    """Write a keyring with a fresh key of each role (and one per --app) for a first set-up."""
    from .local.keyring import LOCAL_KEYS, app_key_id, write_local_keyring

    if os.path.exists(args.file) and not args.force:
        raise ConfigError(f"{args.file} exists; pass --force to replace it (its keys stop working)")
    keyring = write_local_keyring(args.file, args.app)
    print(f"wrote {args.file} (mode 600) with keys: {', '.join(keyring.keys)}", file=sys.stderr)
    print(f"export SENDGATE_KEYRING={os.path.abspath(args.file)}")
    print(f"export SENDGATE_KEY_ID={LOCAL_KEYS['operator']}  # publish as the operator; an app publishes with "
          + (app_key_id(args.app[0]) if args.app else "its own app key"))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import build_app

    settings = _settings(args)
    app = build_app(settings)
    print(f"sendgate api: http://{args.host}:{args.port} (OpenAPI at /openapi.json, docs at /docs), decisions of "
          f"{settings.topic('decisions')} on {settings.bootstrap}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level, server_header=False)
    return 0


def cmd_add_api_key(args: argparse.Namespace) -> int:
    from .api.keys import add_api_key

    path = args.keyring or os.environ.get("SENDGATE_KEYRING")
    if not path:
        raise ConfigError("name the keyring: --keyring FILE or SENDGATE_KEYRING")
    key = add_api_key(path, args.app, args.webhook_url, args.webhook_secret_env)
    print(f"added an API key of app {args.app!r} to {path} (only its SHA-256 is kept there); the key, shown "
          f"this once:", file=sys.stderr)
    print(key)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .local.demo import run_demo

    return run_demo()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sendgate", description="Outbound-message gate on Kafka (see README.md).")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run a local single-node Kafka (KRaft) on 127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--data-dir", help="keep the log here between runs (default: a temporary directory)")
    b.add_argument("--scram", metavar="USER:PASSWORD",
                   help="also listen for SASL_PLAINTEXT clients with SCRAM-SHA-256, as this user")
    b.add_argument("--sasl-port", type=int, default=9093, help="port of the --scram listener (default 9093)")
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run the gate worker (Faust)")
    w.add_argument("--bootstrap", help="Kafka host:port[,host:port] (env SENDGATE_BOOTSTRAP)")
    w.add_argument("--partitions", type=int, help="partitions of the topics it creates (env SENDGATE_PARTITIONS)")
    w.add_argument("--policy", help="policy TOML file (env SENDGATE_POLICY)")
    w.add_argument("--store", choices=["rocksdb://", "memory://"], help="table store (env SENDGATE_STORE)")
    w.set_defaults(func=cmd_worker)

    pub = sub.add_parser("publish", help="validate JSON lines and publish them to <prefix>events")
    pub.add_argument("file", help="a file of JSON lines, or - for standard input")
    pub.add_argument("--bootstrap")
    pub.set_defaults(func=lambda a: asyncio.run(_publish(a)))

    t = sub.add_parser("tail", help="print decisions (or, with --consent, the consent audit trail) as JSON lines")
    t.add_argument("--outcome", choices=["accepted", "delayed", "rejected", "released", "cancelled"])
    t.add_argument("--consent", action="store_true", help="follow <prefix>consent: consent changes and ambiguous "
                                                          "inbounds")
    t.add_argument("--kind", choices=["opt_out", "opt_in", "ambiguous"], help="with --consent: only this kind")
    t.add_argument("--grants", action="store_true", help="follow <prefix>grants: unrestricted grants sendgate "
                                                         "revoked, and why")
    t.add_argument("--app")
    t.add_argument("--from-beginning", action="store_true")
    t.add_argument("--group", help="consumer group (default: none, nothing committed)")
    t.add_argument("--bootstrap")
    t.set_defaults(func=lambda a: asyncio.run(_tail(a)))

    st = sub.add_parser("status", help="a worker's state, rates, pending requests and lag (from its web port)")
    st.add_argument("--url", help="the worker's web address (default: http://SENDGATE_WEB_HOST:SENDGATE_WEB_PORT)")
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("check", help="campaign pre-flight: what each recipient would get now (writes nothing)")
    c.add_argument("--app", required=True)
    c.add_argument("--sender", required=True)
    c.add_argument("--text", required=True)
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--recipients", metavar="FILE", help="userkeys, one a line (- for standard input)")
    who.add_argument("--count", type=int, help="this many recipients the app has never messaged")
    c.add_argument("--network", default="sms")
    c.add_argument("--valid-for", type=int, metavar="S", help="the sends' valid_for_s")
    c.add_argument("--at", type=int, metavar="MS", help="event time of the sends (default: now)")
    c.add_argument("--json", action="store_true", help="the worker's answer as JSON")
    c.add_argument("--url", help="the worker's web address (default: http://SENDGATE_WEB_HOST:SENDGATE_WEB_PORT)")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("replay", help="decide the event log again into <prefix>replay.NAME.decisions")
    r.add_argument("--name", required=True, help="names the output topic (letters, digits, _ and -)")
    r.add_argument("--config", help="policy TOML to replay with (default: the live policy)")
    r.add_argument("--until-offsets", default="now", help="'now' (end offsets at start) or a JSON file")
    r.add_argument("--compare", action="store_true", help="compare with the live decisions by request_id")
    r.add_argument("--changed-out", help="where --compare writes changed requests (JSON lines)")
    r.add_argument("--bootstrap")
    r.set_defaults(func=lambda a: asyncio.run(_replay(a)))

    rb = sub.add_parser("rebuild", help="rebuild the live tables from the event log (workers stopped)")
    rb.add_argument("--bootstrap")
    rb.add_argument("--new-userkey-secret", action="store_true",
                    help="rebuild under this SENDGATE_USERKEY_SECRET, replacing the one that built the state")
    rb.set_defaults(func=lambda a: asyncio.run(_rebuild(a)))

    k = sub.add_parser("keyring", help="keyring files: who may publish what (README, Sources)")
    ksub = k.add_subparsers(dest="keyring_command", required=True)
    ki = ksub.add_parser("init", help="write a keyring with a fresh key of each role (operator, worker, network, "
                                      "gateway) and one per --app")
    ki.add_argument("file")
    ki.add_argument("--app", action="append", default=[], help="also a key for this app (repeatable)")
    ki.add_argument("--force", action="store_true", help="replace an existing file")
    ki.set_defaults(func=cmd_keyring_init)

    a = sub.add_parser("api", help="serve the HTTP API: apps POST a message and get its decision (README, HTTP API)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8080)
    a.add_argument("--bootstrap")
    a.set_defaults(func=cmd_api)

    ks = sub.add_parser("keys", help="API keys of apps (README, HTTP API)")
    kssub = ks.add_subparsers(dest="keys_command", required=True)
    ka = kssub.add_parser("add-api-key", help="append a new API key of APP to the keyring and print it once")
    ka.add_argument("app")
    ka.add_argument("--keyring", help="the keyring file (default: SENDGATE_KEYRING)")
    ka.add_argument("--webhook-url", help="POST the app's later outcomes (released, cancelled, expired) here")
    ka.add_argument("--webhook-secret-env", metavar="NAME", help="the environment variable holding the secret "
                                                                  "the webhook's requests are signed with")
    ka.set_defaults(func=cmd_add_api_key)

    d = sub.add_parser("demo", help="start Kafka and a worker, run a small scenario, print the decisions")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SENDGATE_LOG_LEVEL", "warning").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.command != "worker":
        # aiokafka logs every refused connection; a command says what is wrong in one line instead
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except (BrokerError, ConfigError, PolicyError, LookupError) as exc:
        print(f"sendgate: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError:  # a client that met no broker after the first one did
        print(f"sendgate: {unreachable(_settings(args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
