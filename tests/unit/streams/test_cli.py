"""cli.py: the tables `check` and `status` print, the arguments it reads, and its errors: a
command that meets no broker or worker says so in one line and exits 2 (no traceback)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from sendgate.streams.cli import _ask_worker, _read_lines, _settings, _until, format_check, format_status, main, parser
from sendgate.streams.config import ConfigError
from sendgate.streams.local.broker import free_port

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "-"],
        ["replay", "--name", "x"],
        ["rebuild"],
        ["tail"],
        ["tail", "--deadletter", "--exit"],
        ["worker"],
        ["deadletter", "list"],
        ["api", "--port", "0"],
    ],
)
def test_an_unreachable_broker_is_one_line_and_exit_2(command, tmp_path):
    from sendgate.streams.local.keyring import write_local_keyring

    nobody = f"127.0.0.1:{free_port()}"  # a free port: nothing listens there
    from sendgate.streams.api.keys import add_api_key

    write_local_keyring(tmp_path / "keyring.toml")  # the API needs one, with an API key, whatever SENDGATE_AUTH says
    add_api_key(str(tmp_path / "keyring.toml"), "shop")
    out = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", *command],
        input=b'{"type":"opt_in","event_id":"o","app":"a","userkey":"u"}\n',
        capture_output=True,
        timeout=120,
        env={
            **os.environ,
            "SENDGATE_BOOTSTRAP": nobody,
            "SENDGATE_DATA_DIR": str(tmp_path),
            "SENDGATE_AUTH": "on" if command[0] == "api" else "off",
            "SENDGATE_KEYRING": str(tmp_path / "keyring.toml"),
        },
    )
    assert out.returncode == 2, out.stderr.decode()
    assert out.stderr.decode().strip().splitlines() == [
        f"sendgate: cannot reach Kafka at {nobody}: start one with `sendgate broker`, or point SENDGATE_BOOTSTRAP "
        f"(or -b/--bootstrap-server) at a running broker"
    ]


def test_no_worker_at_the_url_is_a_config_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"no worker answers at {url} .*is it running"):
        _ask_worker(argparse.Namespace(url=url), "/sendgate/status")


def recipient(
    userkey: str,
    outcome: str,
    reason: str,
    deliver_at: int | None = None,
    retry_after_s: int | None = None,
    detail: str = "",
) -> dict:
    return {
        "userkey": userkey,
        "outcome": outcome,
        "reason": reason,
        "deliver_at": deliver_at,
        "retry_after_s": retry_after_s,
        "detail": detail,
    }


def test_the_check_table_has_a_summary_and_a_line_per_recipient():
    doc = {
        "app": "shop",
        "sender": "S1",
        "network": "sms",
        "ts": T,
        "recipients": [
            recipient("alice", "accepted", "reply"),
            recipient("bob", "delayed", "burst_paced", deliver_at=T + 61_000),
            recipient("carol", "rejected", "burst_limit", retry_after_s=300, detail="x" * 150),
            recipient("dave-with-a-very-long-userkey", "rejected", "opted_out"),
        ],
        "summary": {
            "now": 1,
            "paced": 1,
            "refused": 2,
            "last_slot": T + 61_000,
            "refused_by_reason": {"burst_limit": 1, "opted_out": 1},
        },
    }
    lines = format_check(doc).splitlines()
    assert lines[0] == (
        "shop / S1 on sms at 2023-11-14T22:13:20Z: 1 now, 1 paced (the last at "
        "2023-11-14T22:14:21Z), 2 refused (burst_limit 1, opted_out 1)"
    )
    assert lines[1].split() == ["userkey", "outcome", "reason", "goes", "out", "detail"]
    assert lines[2].split() == ["alice", "accepted", "reply", "now"]
    assert lines[3].split() == ["bob", "delayed", "burst_paced", "2023-11-14T22:14:21Z"]
    assert lines[4].split()[:6] == ["carol", "rejected", "burst_limit", "retry", "in", "300"]
    assert lines[4].endswith(" " + "x" * 100)  # the detail is cut at 100 characters
    assert lines[5].split()[:4] == ["dave-with-a-very-long-us", "rejected", "opted_out", "-"]


def test_a_check_with_nothing_paced_or_refused_says_only_what_goes_now():
    doc = {
        "app": "shop",
        "sender": "S1",
        "network": "rcs",
        "ts": T,
        "recipients": [recipient("u1", "accepted", "ok")],
        "summary": {"now": 1, "paced": 0, "refused": 0, "last_slot": None, "refused_by_reason": {}},
    }
    assert format_check(doc).splitlines()[0] == "shop / S1 on rcs at 2023-11-14T22:13:20Z: 1 now, 0 paced, 0 refused"


def status_doc(**state) -> dict:
    stages = {
        "decide": {"last_ms": 1.5, "max_ms": 3.0},
        "produce": {"last_ms": 4.25, "max_ms": 9.0},
        "checkpoint": {"last_ms": None, "max_ms": None},
    }
    history = [{"t": i, "accepted": 2, "delayed": 1, "rejected": 0} for i in range(90)]  # the last 60 s count
    return {
        "state": {"ready": True, "reasons": [], **state},
        "history": history,
        "totals": {"accepted": 1234, "delayed": 56, "rejected": 0},
        "pending": {"held": 1500, "next_release_ts": T},
        "consent": {"opt_out": 3, "opt_in": 1, "ambiguous": 0},
        "partitions": [{"partition": 0, "lag": 12_000}, {"partition": 5, "lag": 0}],
        "batches": {"count": 4321, "failed": 2, "stages": stages},
    }


def test_the_status_lines_of_a_ready_worker():
    assert format_status(status_doc()).splitlines() == [
        "worker: ready",
        "decisions: accepted 1,234, delayed 56, rejected 0",
        "last minute: accepted 2.0/s, delayed 1.0/s, rejected 0.0/s",
        "pending: 1,500 delayed request(s), next release 2023-11-14T22:13:20Z",
        "consent: opt_out 3, opt_in 1, ambiguous 0",
        "lag: p0 12,000, p5 0",
        "batches: 4,321, failed attempts 2; decide 1.5 ms, produce 4.25 ms",
    ]


def test_a_worker_that_is_not_ready_says_why():
    doc = status_doc(ready=False, reasons=["a rebalance is in progress", "the gate agent is not running"])
    doc["partitions"], doc["pending"] = [], {"held": 0, "next_release_ts": None}
    lines = format_status(doc).splitlines()
    assert lines[0] == "worker: NOT READY: a rebalance is in progress; the gate agent is not running"
    assert "pending: 0 delayed request(s)" in lines and "lag: no partitions" in lines


def test_until_offsets_are_now_or_a_json_file_of_partition_offsets(tmp_path):
    assert _until("now") is None
    (tmp_path / "ends.json").write_text('{"0": 120, "3": 7}')
    assert _until(str(tmp_path / "ends.json")) == {0: 120, 3: 7}
    (tmp_path / "list.json").write_text("[120, 7]")
    for bad in (tmp_path / "list.json", tmp_path / "missing.json"):
        with pytest.raises(ConfigError, match="--until-offsets: .* must be 'now' or a JSON file"):
            _until(str(bad))


def test_publish_reads_non_empty_lines_with_their_numbers_and_bytes_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"b": 2}\n{"c": 3}')
    assert list(_read_lines(open(path, "rb"))) == [(1, 10, b'{"a": 1}'), (4, 24, b'{"b": 2}'), (5, 32, b'{"c": 3}')]


def test_flags_override_the_environment_and_absent_ones_leave_it(monkeypatch):
    monkeypatch.setenv("SENDGATE_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("SENDGATE_PARTITIONS", "16")
    args = parser().parse_args(["worker", "--partitions", "4", "--store", "memory://"])
    settings = _settings(args)
    assert (settings.bootstrap, settings.partitions, settings.store) == ("kafka-1:9092", 4, "memory://")
    assert _settings(parser().parse_args(["tail"])).partitions == 16  # tail has no --partitions
    for command in (
        ["worker"],
        ["publish", "-"],
        ["tail"],
        ["replay", "--name", "x"],
        ["rebuild"],
        ["deadletter", "list"],
        ["deadletter", "republish", "--all"],
        ["config"],
        ["api"],
    ):
        for flag in ("-b", "--bootstrap-server"):
            assert _settings(parser().parse_args([*command, flag, "kafka-2:9092"])).bootstrap == "kafka-2:9092"


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--app", "a", "--sender", "s", "--text", "t"],  # neither --recipients nor --count
        ["check", "--app", "a", "--sender", "s", "--text", "t", "--count", "3", "--recipients", "-"],
        ["tail", "--outcome", "approved"],
        ["worker", "--store", "redis://"],
    ],
)
def test_arguments_the_commands_cannot_use_are_refused_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2 and "usage: sendgate" in capsys.readouterr().err


def test_add_api_key_prints_the_key_once_and_the_keyring_keeps_its_digest(tmp_path, capsys, monkeypatch):
    from sendgate.models.sources import Keyring
    from sendgate.streams.local.keyring import write_local_keyring

    path = tmp_path / "keyring.toml"
    write_local_keyring(path)
    monkeypatch.setenv("SENDGATE_KEYRING", str(path))
    assert main(["keys", "add-api-key", "shop"]) == 0
    key = capsys.readouterr().out.strip()
    assert Keyring.from_toml(str(path)).api_app(key) == "shop" and key not in path.read_text()
    monkeypatch.delenv("SENDGATE_KEYRING")
    assert main(["keys", "add-api-key", "shop"]) == 2
    assert "--keyring FILE or SENDGATE_KEYRING" in capsys.readouterr().err


def nobody_env(monkeypatch, tmp_path) -> str:
    """No broker at SENDGATE_BOOTSTRAP: an error that is not about Kafka was found before connecting."""
    nobody = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("SENDGATE_BOOTSTRAP", nobody)
    monkeypatch.setenv("SENDGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SENDGATE_AUTH", "off")
    return nobody


def only_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_publish_of_a_missing_file_is_one_line_before_any_broker(monkeypatch, tmp_path, capsys):
    nobody_env(monkeypatch, tmp_path)
    assert main(["publish", str(tmp_path / "missing.jsonl")]) == 2
    assert only_line(capsys) == f"sendgate: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"


def test_a_bad_log_level_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SENDGATE_LOG_LEVEL", "loud")
    assert main(["config"]) == 2
    assert only_line(capsys) == (
        "sendgate: SENDGATE_LOG_LEVEL must be one of debug, info, warning, error, critical, got 'loud'"
    )


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda tmp: {"policy": "garbage = [\n"}, "policy file .*bad.toml: not valid TOML"),
        (lambda tmp: {"env": {"SENDGATE_AUTH": "on", "SENDGATE_KEYRING": str(tmp / "none.toml")}}, "SENDGATE_KEYRING"),
        (lambda tmp: {"env": {"SENDGATE_WEB_BIND": "0.0.0.0"}}, "SENDGATE_WEB_BIND=0.0.0.0 serves other machines"),
    ],
    ids=["policy", "keyring", "web-host"],
)
def test_a_worker_reports_what_it_can_check_alone_before_it_connects(setup, message, monkeypatch, tmp_path, capsys):
    nobody_env(monkeypatch, tmp_path)
    given = setup(tmp_path)
    for name, value in given.get("env", {}).items():
        monkeypatch.setenv(name, value)
    argv = ["worker"]
    if "policy" in given:
        (tmp_path / "bad.toml").write_text(given["policy"])
        argv += ["--policy", str(tmp_path / "bad.toml")]
    assert main(argv) == 2
    line = only_line(capsys)
    assert "cannot reach Kafka" not in line
    assert __import__("re").search(message, line), line


class Answers:
    """A web server that answers every GET with `status` and `body` (a proxy in front of nothing)."""

    def __init__(self, status: int, body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [502, 200])
def test_an_answer_that_is_not_a_workers_json_is_one_line(status, capsys):
    page = b"<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>"
    proxy = Answers(status, page)
    try:
        assert main(["status", "--url", proxy.url]) == 2
    finally:
        proxy.close()
    assert only_line(capsys) == (
        f"sendgate: {proxy.url} answered HTTP {status} with something other than a sendgate "
        f"worker's JSON ('<html><head><title>502 Bad Gateway</title></head> <body>nginx</body>"
        f"</html>'): is --url (or SENDGATE_WEB_HOST:SENDGATE_WEB_PORT) the worker's web "
        f"address, and not a proxy in trouble?"
    )


def test_replay_takes_policy_as_the_worker_does_and_config_still_with_a_warning(capsys):
    assert parser().parse_args(["replay", "--name", "x", "--policy", "p.toml"]).replay_policy == "p.toml"
    assert capsys.readouterr().err == ""
    assert parser().parse_args(["replay", "--name", "x", "--config", "p.toml"]).replay_policy == "p.toml"
    assert capsys.readouterr().err == "sendgate: --config is deprecated and will go; use --policy\n"
    assert parser().parse_args(["tail", "--bootstrap", "k:9092"]).bootstrap == "k:9092"
    assert capsys.readouterr().err == "sendgate: --bootstrap is deprecated and will go; use --bootstrap-server\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tail", "--consent", "--outcome", "accepted"], "--outcome filters decisions, not --consent"),
        (["tail", "--grants", "--sender", "s"], "--sender filters decisions and --consent, not --grants"),
        (["tail", "--kind", "opt_out"], "--kind filters --consent, not decisions"),
        (["tail", "--deadletter", "--request-id", "r1"], "--request-id filters decisions, not --deadletter"),
        (["tail", "--exit", "--group", "g"], "--exit reads every partition to its end without a group"),
        (["tail", "--max-messages", "0"], "--max-messages must be at least 1"),
        (["tail", "--timeout", "0"], "--timeout must be a positive number"),
        (["tail", "--consent", "--grants"], "not allowed with argument"),
        (["replay", "--name", "x", "--changed-out", "c.jsonl"], "--changed-out is where --compare writes"),
        (
            ["deadletter", "republish"],
            "say which dead letters: --at PARTITION@OFFSET, --error TEXT, --app APP, or --all",
        ),
        (["deadletter", "republish", "--at", "12"], "'12' is not PARTITION@OFFSET"),
    ],
)
def test_flags_that_do_not_apply_are_refused_not_ignored(argv, message, capsys, monkeypatch, tmp_path):
    nobody_env(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "cannot reach Kafka" not in err, err


def every_action(p: argparse.ArgumentParser, path: str = "sendgate"):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_action(child, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction,)):
            yield path, action


def test_every_flag_and_argument_has_help_and_there_is_a_version(capsys):
    missing = [
        f"{path} {action.option_strings or action.dest}" for path, action in every_action(parser()) if not action.help
    ]
    assert missing == []
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["--version"])
    from importlib.metadata import version

    assert exited.value.code == 0 and capsys.readouterr().out == f"sendgate {version('sendgate')}\n"


def test_tail_filters_on_the_fields_its_flags_name():
    from sendgate.streams.cli import tail_filter

    args = parser().parse_args(["tail", "--app", "shop", "--request-id", "r1", "--sender", "s1"])
    keep = tail_filter(args)
    assert keep({"app": "shop", "request_id": "r1", "sender": "s1", "outcome": "accepted"})
    assert not keep({"app": "shop", "request_id": "r2", "sender": "s1"})
    assert not keep({"app": "mall", "request_id": "r1", "sender": "s1"})
    dead = tail_filter(parser().parse_args(["tail", "--deadletter", "--app", "shop"]))
    assert dead({"key": "shop", "error": "x"}) and not dead({"key": "mall", "app": "shop"})  # events keyed by app


def test_config_prints_every_setting_with_its_source_and_masks_secrets(monkeypatch, tmp_path, capsys):
    (tmp_path / "secret").write_text("userkey-s3cret\n")
    monkeypatch.setenv("SENDGATE_USERKEY_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("SENDGATE_KEY_SECRET", "key-s3cret")
    monkeypatch.setenv("SENDGATE_WEB", "false")
    assert main(["config", "-b", "kafka-9:9092", "--json"]) == 0
    doc = __import__("orjson").loads(capsys.readouterr().out)
    assert doc["SENDGATE_BOOTSTRAP"] == {"value": "kafka-9:9092", "source": "flag --bootstrap-server"}
    assert doc["SENDGATE_WEB"] == {"value": "off", "source": "environment"}
    assert doc["SENDGATE_USERKEY_SECRET"]["value"] == "******** (set)"
    assert doc["SENDGATE_USERKEY_SECRET"]["source"].endswith("(SENDGATE_USERKEY_SECRET_FILE)")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "SENDGATE_KEY_SECRET" in out and len(out.splitlines()) == len(doc)


def test_policy_check_says_what_a_valid_policy_changes_and_why_a_bad_one_is_refused(tmp_path, capsys):
    (tmp_path / "good.toml").write_text("[consent]\nreply_window_s = 600\n")
    assert main(["policy", "check", str(tmp_path / "good.toml")]) == 0
    assert capsys.readouterr().out == (
        f"{tmp_path / 'good.toml'}: a valid policy; 1 setting(s) differ from the defaults: reply_window_s = 600\n"
    )
    (tmp_path / "bad.toml").write_text("reply_windwo_s = 600\n")
    assert main(["policy", "check", str(tmp_path / "bad.toml")]) == 1
    assert only_line(capsys).startswith(f"sendgate: policy file {tmp_path / 'bad.toml'}: ")
    assert main(["policy", "check", str(tmp_path / "none.toml")]) == 1
    assert only_line(capsys) == f"sendgate: policy file {tmp_path / 'none.toml'}: No such file or directory"


def test_the_command_line_page_names_every_command_and_flag():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[3] / "docs" / "command-line.md").read_text()
    unnamed = sorted(
        {path for path, _ in every_action(parser()) if path != "sendgate" and f"`{path}" not in page}
        | {
            f"{path} {flag}"
            for path, action in every_action(parser())
            for flag in action.option_strings
            if f"`{flag}" not in page
        }
    )
    assert unnamed == []
