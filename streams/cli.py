"""The `sendgate` command line: broker, worker, publish, tail, status, check, replay, rebuild,
deadletter, config, policy, keyring, api, keys, demo (docs/command-line.md).

Exit codes (docs/command-line.md has the table): 0 done; 1 done, but the input or the worker was
not all right (invalid lines not published, an invalid policy, a worker not ready, dead letters
that cannot be republished), or an unexpected error with its traceback (a bug, or Kafka failing
mid-run); 2 nothing done: a usage error, a setting, a file or a worker or broker that cannot be
reached, said in one line; 70 a worker stalled (STALL_EXIT_CODE); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any
from urllib.parse import quote

import orjson
from aiokafka.errors import KafkaConnectionError

from sendgate.models.categories import CATEGORIES
from sendgate.models.events import InvalidEvent
from sendgate.models.policy import Policy, PolicyError

from .local.broker import BrokerError, LocalKafka
from .kafka import unreachable
from .config import ConfigError, Settings, log_format, log_level
from .logs import configure as configure_logs
from .progress import Progress

OK, NOT_ALL_RIGHT, USER_ERROR, INTERRUPTED = 0, 1, 2, 130


class Deprecated(argparse.Action):
    """A flag's former spelling: still accepted, with a warning naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=f"deprecated spelling of {replacement}", **kwargs)
        self.replacement = replacement

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"sendgate: {option_string} is deprecated and will go; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_(
        bootstrap=getattr(args, "bootstrap", None),
        partitions=getattr(args, "partitions", None),
        policy_file=getattr(args, "policy", None),
        store=getattr(args, "store", None),
    )


def cmd_broker(args: argparse.Namespace) -> int:
    scram = None
    if args.scram:
        user, sep, password = args.scram.partition(":")
        if not sep:
            raise BrokerError("--scram takes USER:PASSWORD")
        scram = (user, password)
    elif args.sasl_port is not None:  # warned, not refused: scripts that pass it always keep working
        print("sendgate: --sasl-port has no effect without --scram (no SASL listener is started)", file=sys.stderr)
    kafka = LocalKafka(port=args.port, data_dir=args.data_dir, scram=scram, sasl_port=args.sasl_port or 9093)
    kafka.start()
    print(
        f"Kafka {kafka.bootstrap} is up (data: {kafka.data_dir}, log: {kafka.log_file}); Ctrl-C stops it.", flush=True
    )
    print(f"export SENDGATE_BOOTSTRAP={kafka.bootstrap}", flush=True)
    if scram:
        print(
            f"SASL_PLAINTEXT listener with SCRAM-SHA-256 for user {scram[0]!r} on {kafka.sasl_bootstrap}; "
            f"clients log in with:",
            flush=True,
        )
        print(
            f"export SENDGATE_BOOTSTRAP={kafka.sasl_bootstrap} SENDGATE_SECURITY_PROTOCOL=SASL_PLAINTEXT "
            f"SENDGATE_SASL_MECHANISM=SCRAM-SHA-256 SENDGATE_SASL_USERNAME={scram[0]} "
            f"SENDGATE_SASL_PASSWORD=<the password>",
            flush=True,
        )
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
    from .worker.lifecycle import run_worker  # imports Faust: only the worker pays for it

    return run_worker(_settings(args))


def _open_input(path: str) -> IO[bytes]:
    """The file (or - for standard input) opened for reading; ConfigError, in one line, if it cannot be."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _read_lines(stream: IO[bytes]):
    """(line number, bytes read so far, line) of every non-empty line."""
    read = 0
    with stream:
        for number, line in enumerate(stream, 1):
            read += len(line)
            if line.strip():
                yield number, read, line.rstrip(b"\r\n")


async def _publish(args: argparse.Namespace) -> int:
    from .client import Publisher

    settings = _settings(args)
    stream = _open_input(args.file)
    sent = invalid = 0
    started = time.monotonic()
    futures = []
    size = None if args.file == "-" else os.fstat(stream.fileno()).st_size
    bar = Progress("publish", size, "bytes")
    try:
        async with Publisher(settings, wait_for_topic_s=10) as publisher:
            if publisher.key is None:
                print(
                    "sendgate publish: SENDGATE_KEY_ID is not set, so the records are not signed; a worker with a "
                    "keyring dead-letters them as unauthorized (README, Sources)",
                    file=sys.stderr,
                )
            for number, read, line in _read_lines(stream):
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
    finally:
        stream.close()
    bar.finish()
    elapsed = time.monotonic() - started
    print(
        f"published {sent} event(s) to {settings.topic('events')} in {elapsed:.1f} s; "
        f"{invalid} invalid line(s) not sent",
        file=sys.stderr,
    )
    return NOT_ALL_RIGHT if invalid else OK


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
            return _json_answer(url, answer.status, answer.read())
    except urllib.error.HTTPError as exc:  # the worker's own error message
        raise ConfigError(_json_answer(url, exc.code, exc.read()).get("error", str(exc))) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(
            f"no worker answers at {url} ({getattr(exc, 'reason', exc)}): is it running with its "
            f"web server on (SENDGATE_WEB, SENDGATE_WEB_PORT), or pass --url"
        ) from None


def _json_answer(url: str, status: int, body: bytes) -> dict:
    """A worker's answer is a JSON object; anything else (a proxy's error page) is said in one line."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        text = " ".join(body.decode("utf-8", "replace").split())[:120]
        raise ConfigError(
            f"{url} answered HTTP {status} with something other than a sendgate worker's JSON "
            f"({text!r}): is --url (or SENDGATE_WEB_HOST:SENDGATE_WEB_PORT) the worker's web "
            f"address, and not a proxy in trouble?"
        )
    return doc


def cmd_status(args: argparse.Namespace) -> int:
    """Print a worker's state, rates, pending requests and lag, from its /sendgate/status."""
    doc = _ask_worker(args, "/sendgate/status")
    sys.stdout.write(format_status(doc))
    return OK if doc["state"]["ready"] else NOT_ALL_RIGHT


def cmd_check(args: argparse.Namespace) -> int:
    """A campaign pre-flight: what the gate would decide for each recipient now (writes nothing)."""
    body: dict = {
        "sender": args.sender,
        "text": args.text,
        "network": args.network,
        "ts": args.at,
        "valid_for_s": args.valid_for,
        "category": args.category,
    }
    if args.recipients:
        try:
            with sys.stdin if args.recipients == "-" else open(args.recipients, encoding="utf-8") as fh:
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
    lines = [
        f"{doc['app']} / {doc['sender']} on {doc['network']} at {_iso(doc['ts'])}: {s['now']} now, "
        f"{s['paced']} paced"
        + (f" (the last at {_iso(s['last_slot'])})" if s["last_slot"] else "")
        + f", {s['refused']} refused"
        + (" (" + ", ".join(f"{r} {n}" for r, n in s["refused_by_reason"].items()) + ")" if s["refused"] else ""),
        f"{'userkey':<24} {'outcome':<9} {'reason':<20} {'goes out':<20} detail",
    ]
    for r in doc["recipients"]:
        when = (
            _iso(r["deliver_at"])
            if r["outcome"] == "delayed"
            else "now"
            if r["outcome"] == "accepted"
            else f"retry in {r['retry_after_s']} s"
            if r["retry_after_s"]
            else "-"
        )
        lines.append(f"{r['userkey'][:24]:<24} {r['outcome']:<9} {r['reason'][:20]:<20} {when:<20} {r['detail'][:100]}")
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
    lines.append(
        f"batches: {b['count']:,}, failed attempts {b['failed']:,}; "
        + ", ".join(f"{stage} {t['last_ms']} ms" for stage, t in b["stages"].items() if t["last_ms"] is not None)
    )
    return "\n".join(lines) + "\n"


# what `tail` follows: topic (under the prefix), the id that drops repeats, the typed record
TAIL = {
    "decisions": ("decisions", "decision_id"),
    "consent": ("consent", "record_id"),
    "grants": ("grants", "revocation_id"),
    "deadletter": ("deadletter", None),
}
# tail's filters: flag -> (the record field it matches, the topics it applies to)
TAIL_FILTERS = {
    "app": ("app", tuple(TAIL)),
    "outcome": ("outcome", ("decisions",)),
    "kind": ("kind", ("consent",)),
    "request_id": ("request_id", ("decisions",)),
    "sender": ("sender", ("decisions", "consent")),
}


def _tail_source(args: argparse.Namespace) -> str:
    return next((name for name in ("consent", "grants", "deadletter") if getattr(args, name)), "decisions")


def _check_tail(args: argparse.Namespace) -> None:
    """Refuse the flags that do not apply to what is followed (a usage error, exit 2)."""
    source = _tail_source(args)
    for flag, (_, applies) in TAIL_FILTERS.items():
        if getattr(args, flag) is not None and source not in applies:
            args.parser.error(
                f"--{flag.replace('_', '-')} filters "
                + " and ".join("decisions" if a == "decisions" else f"--{a}" for a in applies)
                + f", not {'decisions' if source == 'decisions' else '--' + source}"
            )
    if args.exit and args.group:
        args.parser.error("--exit reads every partition to its end without a group; drop --group")
    if args.max_messages is not None and args.max_messages < 1:
        args.parser.error("--max-messages must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        args.parser.error("--timeout must be a positive number of seconds")


def tail_filter(args: argparse.Namespace) -> Any:
    """The record filter of tail's flags; a dead letter's app is its key (events are keyed by app)."""
    source = _tail_source(args)
    wanted = {
        ("key" if source == "deadletter" and flag == "app" else field): getattr(args, flag)
        for flag, (field, _) in TAIL_FILTERS.items()
        if getattr(args, flag) is not None
    }
    return lambda doc: all(doc.get(field) == value for field, value in wanted.items())


def _typed(source: str, doc: dict) -> dict:
    """The record as the client's typed record gives it (a dead letter as it is)."""
    from sendgate.models.decisions import ConsentRecord, Decision, GrantRevocation

    cls = {"decisions": Decision, "consent": ConsentRecord, "grants": GrantRevocation}.get(source)
    return doc if cls is None else cls.from_dict(doc).to_dict()


async def _tail(args: argparse.Namespace) -> int:
    from .client import records

    _check_tail(args)
    settings = _settings(args)
    source = _tail_source(args)
    topic, unique = TAIL[source]
    printed = 0
    reader = records(
        settings,
        settings.topic(topic),
        group_id=args.group,
        from_beginning=args.from_beginning,
        keep=tail_filter(args),
        unique=unique,
        to_end=args.exit,
        idle_timeout_s=args.timeout,
    )
    async with contextlib.aclosing(reader) as docs:
        async for doc in docs:
            sys.stdout.buffer.write(orjson.dumps(_typed(source, doc)) + b"\n")
            sys.stdout.flush()
            printed += 1
            if printed == args.max_messages:
                break
    return OK


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

    if args.changed_out and not args.compare:
        args.parser.error("--changed-out is where --compare writes; add --compare")
    settings = _settings(args)
    policy = Policy.from_toml(args.replay_policy) if args.replay_policy else settings.policy()
    result = await replay(settings, args.name, policy, _until(args.until_offsets))
    print(
        f"replay {args.name}: {result.events} events, {result.decisions} decisions, {result.deadlettered} invalid, "
        f"{result.seconds:.1f} s ({result.rate:,.0f} events/s) -> {settings.topic(f'replay.{args.name}.decisions')}"
    )
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


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings: every variable, its value (secrets masked) and where it came from."""
    settings = _settings(args)
    settings.policy()  # a policy file that does not load is an error here too
    flags = {
        name: flag
        for name, flag, value in (
            ("SENDGATE_BOOTSTRAP", "--bootstrap-server", args.bootstrap),
            ("SENDGATE_PARTITIONS", "--partitions", args.partitions),
            ("SENDGATE_POLICY", "--policy", args.policy),
            ("SENDGATE_STORE", "--store", args.store),
        )
        if value is not None
    }
    rows = settings.describe(os.environ, flags)
    if args.json:
        doc = {name: {"value": value, "source": source} for name, value, source in rows}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        width = max(len(name) for name, _, _ in rows)
        sys.stdout.write("".join(f"{name:<{width}}  {value}  ({source})\n" for name, value, source in rows))
    return OK


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Load a policy file as the worker would: exit 0 and what differs from the defaults, or 1 and why not."""
    try:
        policy = Policy.from_toml(args.file)
    except PolicyError as exc:
        print(f"sendgate: {exc}", file=sys.stderr)
        return NOT_ALL_RIGHT
    defaults = Policy().as_dict()
    changed = {k: v for k, v in policy.as_dict().items() if v != defaults[k]}
    print(
        f"{args.file}: a valid policy; "
        + (
            f"{len(changed)} setting(s) differ from the defaults: "
            + ", ".join(f"{k} = {v!r}" for k, v in changed.items())
            if changed
            else "every setting is the default"
        )
    )
    return OK


def _place(spec: str) -> tuple[int, int]:
    partition, sep, offset = spec.partition("@")
    try:
        return int(partition), int(offset)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{spec!r} is not PARTITION@OFFSET (as `deadletter list` shows it, e.g. 0@12)"
        ) from None


async def _deadletter_list(args: argparse.Namespace) -> int:
    from .ops.deadletter import dead_letters, select

    settings = _settings(args)
    letters = select(await dead_letters(settings), error=args.error, app=args.app)
    for d in letters:
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(d.to_dict()) + b"\n")
        else:
            print(
                f"{d.partition}@{d.offset}  {d.source}  key {_text(d.key)}  "
                f"{'signed by ' + d.signed_by if d.signed_by else 'unsigned'}  {d.error[:200]}"
            )
    print(
        f"{len(letters)} dead letter(s) in {settings.topic('deadletter')}"
        + (" match" if args.error or args.app else ""),
        file=sys.stderr,
    )
    return OK


def _text(data: bytes | None) -> str:
    return "(none)" if data is None else repr(data.decode("utf-8", "replace"))


async def _deadletter_republish(args: argparse.Namespace) -> int:
    from .ops.deadletter import dead_letters, refusal, republish, select

    if not (args.all or args.at or args.error or args.app):
        args.parser.error("say which dead letters: --at PARTITION@OFFSET, --error TEXT, --app APP, or --all")
    settings = _settings(args)
    chosen = select(await dead_letters(settings), at=args.at, error=args.error, app=args.app)
    missing = sorted(set(args.at or ()) - {(d.partition, d.offset) for d in chosen})
    refused = [(d, why) for d in chosen for why in [refusal(settings, d)] if why]
    good = [d for d in chosen if not refusal(settings, d)]
    for place in missing:
        print(f"no dead letter at {place[0]}@{place[1]} (with these filters)", file=sys.stderr)
    for d, why in refused:
        print(f"not republished: {d.where}: {why}", file=sys.stderr)
    if args.dry_run:
        for d in good:
            print(
                f"would republish {d.where} ({d.source}, key {_text(d.key)}, "
                f"{'signed by ' + d.signed_by if d.signed_by else 'unsigned'}) to {d.topic}"
            )
    else:
        for d, meta in zip(good, await republish(settings, good)):
            print(
                f"republished {d.where} ({d.source}, key {_text(d.key)}, "
                f"{'signed by ' + d.signed_by if d.signed_by else 'unsigned'}) -> "
                f"{meta.topic}[{meta.partition}]@{meta.offset}"
            )
    print(
        f"{'would republish' if args.dry_run else 'republished'} {len(good)} of {len(chosen)} selected dead "
        f"letter(s); {settings.topic('deadletter')} keeps them all (it is a log)",
        file=sys.stderr,
    )
    return NOT_ALL_RIGHT if refused or missing else OK


def cmd_keyring_init(args: argparse.Namespace) -> int:
    """Write a keyring with a fresh key of each role (and one per --app) for a first set-up."""
    from .local.keyring import LOCAL_KEYS, app_key_id, write_local_keyring

    if os.path.exists(args.file) and not args.force:
        raise ConfigError(f"{args.file} exists; pass --force to replace it (its keys stop working)")
    keyring = write_local_keyring(args.file, args.app)
    print(f"wrote {args.file} (mode 600) with keys: {', '.join(keyring.keys)}", file=sys.stderr)
    print(f"export SENDGATE_KEYRING={os.path.abspath(args.file)}")
    print(
        f"export SENDGATE_KEY_ID={LOCAL_KEYS['operator']}  # publish as the operator; an app publishes with "
        + (app_key_id(args.app[0]) if args.app else "its own app key")
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import build_app

    from .client import require_topic

    settings = _settings(args)
    app = build_app(settings)

    async def topics_ready() -> None:  # in one line here, rather than as a traceback from the server's start-up
        for name in ("events", "decisions"):
            await require_topic(settings, settings.topic(name), 30)

    asyncio.run(topics_ready())
    print(
        f"sendgate api: http://{args.host}:{args.port} (OpenAPI at /openapi.json, docs at /docs), decisions of "
        f"{settings.topic('decisions')} on {settings.bootstrap}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level, server_header=False)
    return 0


def cmd_add_api_key(args: argparse.Namespace) -> int:
    from .api.keys import add_api_key

    path = args.keyring or os.environ.get("SENDGATE_KEYRING")
    if not path:
        raise ConfigError("name the keyring: --keyring FILE or SENDGATE_KEYRING")
    key = add_api_key(path, args.app, args.webhook_url, args.webhook_secret_env)
    print(
        f"added an API key of app {args.app!r} to {path} (only its SHA-256 is kept there); the key, shown this once:",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .local.demo import run_demo

    return run_demo()


def _version() -> str:
    try:
        return version("sendgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _kafka(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flag every command that talks to Kafka takes, spelt as Kafka's own tools and kcat spell it."""
    p.add_argument(
        "-b",
        "--bootstrap-server",
        dest="bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: SENDGATE_BOOTSTRAP, else 127.0.0.1:9092)",
    )
    p.add_argument(
        "--bootstrap", dest="bootstrap", metavar="HOST:PORT[,...]", action=Deprecated, replacement="--bootstrap-server"
    )
    return p


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partitions", type=int, help="partitions of the topics it creates (env SENDGATE_PARTITIONS)")
    p.add_argument("--policy", metavar="FILE", help="policy TOML file (env SENDGATE_POLICY)")
    p.add_argument("--store", choices=["rocksdb://", "memory://"], help="table store (env SENDGATE_STORE)")


def _url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the worker's web address (default: http://SENDGATE_WEB_HOST:SENDGATE_WEB_PORT)")


def _run(coroutine_function: Any) -> Any:
    return lambda args: asyncio.run(coroutine_function(args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sendgate",
        description="Outbound-message gate on Kafka (docs/command-line.md; "
        "exit codes: 0 done, 1 done but not all right, 2 nothing done: usage, settings or "
        "no broker, 70 a worker stalled, 130 interrupted).",
    )
    p.add_argument("--version", action="version", version=f"sendgate {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        c.set_defaults(func=func, parser=c)
        return c

    b = command("broker", "run a local single-node Kafka (KRaft) on 127.0.0.1", cmd_broker)
    b.add_argument("--port", type=int, default=9092, help="port of the PLAINTEXT listener (default 9092)")
    b.add_argument("--data-dir", help="keep the log here between runs (default: a temporary directory)")
    b.add_argument(
        "--scram",
        metavar="USER:PASSWORD",
        help="also listen for SASL_PLAINTEXT clients with SCRAM-SHA-256, as this user",
    )
    b.add_argument("--sasl-port", type=int, help="port of the --scram listener (default 9093)")

    w = _kafka(command("worker", "run the gate worker (Faust)", cmd_worker))
    _worker_flags(w)

    pub = _kafka(
        command("publish", "validate JSON lines, sign them and publish them to <prefix>events", _run(_publish))
    )
    pub.add_argument("file", help="a file of JSON lines, or - for standard input")

    t = _kafka(
        command(
            "tail",
            "print decisions (or the consent trail, grant revocations or dead letters) as JSON lines",
            _run(_tail),
        )
    )
    source = t.add_mutually_exclusive_group()
    source.add_argument(
        "--consent", action="store_true", help="follow <prefix>consent: consent changes and ambiguous inbounds"
    )
    source.add_argument(
        "--grants", action="store_true", help="follow <prefix>grants: unrestricted grants sendgate revoked, and why"
    )
    source.add_argument(
        "--deadletter",
        action="store_true",
        help="follow <prefix>deadletter: records the worker could not decide, and why",
    )
    t.add_argument("--app", help="only this app's records (a dead letter's: its key)")
    t.add_argument(
        "--outcome",
        choices=["accepted", "delayed", "rejected", "released", "cancelled"],
        help="decisions: only this outcome",
    )
    t.add_argument("--request-id", help="decisions: only this request's")
    t.add_argument("--sender", help="decisions and --consent: only this sender's")
    t.add_argument("--kind", choices=["opt_out", "opt_in", "ambiguous"], help="with --consent: only this kind")
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default: new ones only)")
    t.add_argument(
        "--group",
        help="consumer group: share partitions with its members, commit offsets (default: "
        "none, every partition, nothing committed)",
    )
    t.add_argument("--max-messages", type=int, metavar="N", help="stop after printing N records")
    t.add_argument("--exit", action="store_true", help="stop at the end: the last record there was on starting")
    t.add_argument("--timeout", type=float, metavar="S", help="stop when no record came for S seconds")

    st = command("status", "a worker's state, rates, pending requests and lag (from its web port)", cmd_status)
    _url(st)

    c = command("check", "campaign pre-flight: what each recipient would get now (writes nothing)", cmd_check)
    c.add_argument("--app", required=True, help="the app that would send")
    c.add_argument("--sender", required=True, help="the sender (the app's sending identity) it would use")
    c.add_argument("--text", required=True, help="the message text")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--recipients", metavar="FILE", help="userkeys, one a line (- for standard input)")
    who.add_argument("--count", type=int, help="this many recipients the app has never messaged")
    c.add_argument("--network", default="sms", help="the network of the sends (default sms)")
    c.add_argument("--valid-for", type=int, metavar="S", help="the sends' valid_for_s")
    c.add_argument("--category", choices=CATEGORIES, help="the sends' kind (default: the policy's default_category)")
    c.add_argument("--at", type=int, metavar="MS", help="event time of the sends (default: now)")
    c.add_argument("--json", action="store_true", help="the worker's answer as JSON")
    _url(c)

    r = _kafka(command("replay", "decide the event log again into <prefix>replay.NAME.decisions", _run(_replay)))
    r.add_argument("--name", required=True, help="names the output topic (letters, digits, _ and -)")
    r.add_argument(
        "--policy",
        dest="replay_policy",
        metavar="FILE",
        help="policy TOML to replay with (default: the live policy, SENDGATE_POLICY)",
    )
    r.add_argument("--config", dest="replay_policy", metavar="FILE", action=Deprecated, replacement="--policy")
    r.add_argument("--until-offsets", default="now", help="'now' (end offsets at start) or a JSON file")
    r.add_argument("--compare", action="store_true", help="compare with the live decisions by request_id")
    r.add_argument(
        "--changed-out",
        help="with --compare: where it writes the changed requests (JSON lines; default replay-NAME-changed.jsonl)",
    )

    rb = _kafka(command("rebuild", "rebuild the live tables from the event log (workers stopped)", _run(_rebuild)))
    rb.add_argument(
        "--new-userkey-secret",
        action="store_true",
        help="rebuild under this SENDGATE_USERKEY_SECRET, replacing the one that built the state",
    )

    dl = command(
        "deadletter",
        "the records the worker could not decide: list them, republish chosen ones",
        lambda a: a.parser.error("say what: list or republish"),
    )
    dlsub = dl.add_subparsers(dest="deadletter_command", required=True, metavar="{list,republish}")
    dll = _kafka(
        dlsub.add_parser(
            "list",
            help="print every dead letter: where it is, where it came from, why",
            description="Print every dead letter: where it is, where it came from, why.",
        )
    )
    dll.set_defaults(func=_run(_deadletter_list), parser=dll)
    dlr = _kafka(
        dlsub.add_parser(
            "republish",
            help="send chosen dead letters back to <prefix>events with their key, value and signing headers",
            description="Send chosen dead letters back to <prefix>events with their key, "
            "value and signing headers; the dead-letter topic keeps them.",
        )
    )
    dlr.set_defaults(func=_run(_deadletter_republish), parser=dlr)
    for d in (dll, dlr):
        d.add_argument("--error", metavar="TEXT", help="only dead letters whose error contains TEXT")
        d.add_argument("--app", help="only dead letters keyed by this app")
    dll.add_argument("--json", action="store_true", help="one JSON object a line, with the record")
    dlr.add_argument(
        "--at",
        type=_place,
        action="append",
        metavar="PARTITION@OFFSET",
        help="the dead letter at this place of the dead-letter topic (repeatable)",
    )
    dlr.add_argument("--all", action="store_true", help="every dead letter the other flags select")
    dlr.add_argument("--dry-run", action="store_true", help="say what would be republished, send nothing")

    cf = _kafka(command("config", "print the effective settings (secrets masked) and where each came from", cmd_config))
    _worker_flags(cf)
    cf.add_argument("--json", action="store_true", help="as a JSON object")

    pol = command("policy", "policy files", lambda a: a.parser.error("say what: check"))
    polsub = pol.add_subparsers(dest="policy_command", required=True, metavar="{check}")
    pc = polsub.add_parser(
        "check",
        help="load a policy file as the worker would, and say what it changes",
        description="Load a policy file as the worker would, and say what it changes; exit 1 if it is invalid.",
    )
    pc.add_argument("file", help="the policy TOML file")
    pc.set_defaults(func=cmd_policy_check, parser=pc)

    k = command(
        "keyring", "keyring files: who may publish what (README, Sources)", lambda a: a.parser.error("say what: init")
    )
    ksub = k.add_subparsers(dest="keyring_command", required=True, metavar="{init}")
    ki = ksub.add_parser(
        "init",
        help="write a keyring with a fresh key of each role (operator, worker, network, gateway) and one per --app",
    )
    ki.add_argument("file", help="the keyring file to write (mode 600)")
    ki.add_argument("--app", action="append", default=[], help="also a key for this app (repeatable)")
    ki.add_argument("--force", action="store_true", help="replace an existing file")
    ki.set_defaults(func=cmd_keyring_init, parser=ki)

    a = _kafka(
        command("api", "serve the HTTP API: apps POST a message and get its decision (README, HTTP API)", cmd_api)
    )
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")

    ks = command("keys", "API keys of apps (README, HTTP API)", lambda a: a.parser.error("say what: add-api-key"))
    kssub = ks.add_subparsers(dest="keys_command", required=True, metavar="{add-api-key}")
    ka = kssub.add_parser("add-api-key", help="append a new API key of APP to the keyring and print it once")
    ka.add_argument("app", help="the app the key speaks for")
    ka.add_argument("--keyring", help="the keyring file (default: SENDGATE_KEYRING)")
    ka.add_argument("--webhook-url", help="POST the app's later outcomes (released, cancelled, expired) here")
    ka.add_argument(
        "--webhook-secret-env",
        metavar="NAME",
        help="the environment variable holding the secret the webhook's requests are signed with",
    )
    ka.set_defaults(func=cmd_add_api_key, parser=ka)

    command("demo", "start Kafka and a worker, run a small scenario, print the decisions", cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        configure_logs(log_level(), log_format())
        if args.command != "worker":
            # aiokafka logs every refused connection; a command says what is wrong in one line instead
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return args.func(args)
    except (BrokerError, ConfigError, PolicyError, LookupError) as exc:
        print(f"sendgate: {exc}", file=sys.stderr)
        return USER_ERROR
    except KafkaConnectionError:  # a client that met no broker after the first one did
        print(f"sendgate: {unreachable(_settings(args))}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
