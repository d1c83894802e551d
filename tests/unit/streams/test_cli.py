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


@pytest.mark.parametrize("command", [["publish", "-"], ["replay", "--name", "x"], ["rebuild"]])
def test_an_unreachable_broker_is_one_line_and_exit_2(command):
    nobody = f"127.0.0.1:{free_port()}"  # a free port: nothing listens there
    out = subprocess.run([sys.executable, "-m", "sendgate.streams.cli", *command],
                         input=b'{"type":"opt_in","event_id":"o","app":"a","userkey":"u"}\n', capture_output=True,
                         timeout=120, env={**os.environ, "SENDGATE_BOOTSTRAP": nobody})
    assert out.returncode == 2, out.stderr.decode()
    assert out.stderr.decode().strip().splitlines() == [
        f"sendgate: cannot reach Kafka at {nobody}: start one with `sendgate broker`, or point SENDGATE_BOOTSTRAP "
        f"(or --bootstrap) at a running broker"]


def test_no_worker_at_the_url_is_a_config_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"no worker answers at {url} .*is it running"):
        _ask_worker(argparse.Namespace(url=url), "/sendgate/status")


def recipient(userkey: str, outcome: str, reason: str, deliver_at: int | None = None,
              retry_after_s: int | None = None, detail: str = "") -> dict:
    return {"userkey": userkey, "outcome": outcome, "reason": reason, "deliver_at": deliver_at,
            "retry_after_s": retry_after_s, "detail": detail}


def test_the_check_table_has_a_summary_and_a_line_per_recipient():
    doc = {"app": "shop", "sender": "S1", "network": "sms", "ts": T,
           "recipients": [recipient("alice", "accepted", "reply"),
                          recipient("bob", "delayed", "burst_paced", deliver_at=T + 61_000),
                          recipient("carol", "rejected", "burst_limit", retry_after_s=300, detail="x" * 150),
                          recipient("dave-with-a-very-long-userkey", "rejected", "opted_out")],
           "summary": {"now": 1, "paced": 1, "refused": 2, "last_slot": T + 61_000,
                       "refused_by_reason": {"burst_limit": 1, "opted_out": 1}}}
    lines = format_check(doc).splitlines()
    assert lines[0] == ("shop / S1 on sms at 2023-11-14T22:13:20Z: 1 now, 1 paced (the last at "
                        "2023-11-14T22:14:21Z), 2 refused (burst_limit 1, opted_out 1)")
    assert lines[1].split() == ["userkey", "outcome", "reason", "goes", "out", "detail"]
    assert lines[2].split() == ["alice", "accepted", "reply", "now"]
    assert lines[3].split() == ["bob", "delayed", "burst_paced", "2023-11-14T22:14:21Z"]
    assert lines[4].split()[:6] == ["carol", "rejected", "burst_limit", "retry", "in", "300"]
    assert lines[4].endswith(" " + "x" * 100)  # the detail is cut at 100 characters
    assert lines[5].split()[:4] == ["dave-with-a-very-long-us", "rejected", "opted_out", "-"]


def test_a_check_with_nothing_paced_or_refused_says_only_what_goes_now():
    doc = {"app": "shop", "sender": "S1", "network": "rcs", "ts": T, "recipients": [recipient("u1", "accepted", "ok")],
           "summary": {"now": 1, "paced": 0, "refused": 0, "last_slot": None, "refused_by_reason": {}}}
    assert format_check(doc).splitlines()[0] == "shop / S1 on rcs at 2023-11-14T22:13:20Z: 1 now, 0 paced, 0 refused"


def status_doc(**state) -> dict:
    stages = {"decide": {"last_ms": 1.5, "max_ms": 3.0}, "produce": {"last_ms": 4.25, "max_ms": 9.0},
              "checkpoint": {"last_ms": None, "max_ms": None}}
    history = [{"t": i, "accepted": 2, "delayed": 1, "rejected": 0} for i in range(90)]  # the last 60 s count
    return {"state": {"ready": True, "reasons": [], **state}, "history": history,
            "totals": {"accepted": 1234, "delayed": 56, "rejected": 0}, "pending": {"held": 1500, "next_release_ts": T},
            "consent": {"opt_out": 3, "opt_in": 1, "ambiguous": 0},
            "partitions": [{"partition": 0, "lag": 12_000}, {"partition": 5, "lag": 0}],
            "batches": {"count": 4321, "failed": 2, "stages": stages}}


def test_the_status_lines_of_a_ready_worker():
    assert format_status(status_doc()).splitlines() == [
        "worker: ready",
        "decisions: accepted 1,234, delayed 56, rejected 0",
        "last minute: accepted 2.0/s, delayed 1.0/s, rejected 0.0/s",
        "pending: 1,500 delayed request(s), next release 2023-11-14T22:13:20Z",
        "consent: opt_out 3, opt_in 1, ambiguous 0",
        "lag: p0 12,000, p5 0",
        "batches: 4,321, failed attempts 2; decide 1.5 ms, produce 4.25 ms"]


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
    assert list(_read_lines(str(path))) == [(1, 10, b'{"a": 1}'), (4, 24, b'{"b": 2}'), (5, 32, b'{"c": 3}')]


def test_flags_override_the_environment_and_absent_ones_leave_it(monkeypatch):
    monkeypatch.setenv("SENDGATE_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("SENDGATE_PARTITIONS", "16")
    args = parser().parse_args(["worker", "--partitions", "4", "--store", "memory://"])
    settings = _settings(args)
    assert (settings.bootstrap, settings.partitions, settings.store) == ("kafka-1:9092", 4, "memory://")
    assert _settings(parser().parse_args(["tail"])).partitions == 16  # tail has no --partitions


@pytest.mark.parametrize("argv", [
    ["check", "--app", "a", "--sender", "s", "--text", "t"],  # neither --recipients nor --count
    ["check", "--app", "a", "--sender", "s", "--text", "t", "--count", "3", "--recipients", "-"],
    ["tail", "--outcome", "approved"],
    ["worker", "--store", "redis://"],
])
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
