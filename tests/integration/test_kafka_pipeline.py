"""The walking skeleton on a real broker: publish -> worker -> decisions, deliveries, dead letters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from harness import T0, collect, decisions, ev, produce_raw, publish


def test_published_send_comes_back_as_decision_and_delivery(settings, worker):
    publish(
        settings,
        [
            ev("inbound", event_id="i1", app="acme", sender="s1", userkey="u1", network="sms", text="hi", ts=T0),
            ev(
                "send",
                request_id="r1",
                app="acme",
                sender="s1",
                userkey="u1",
                network="sms",
                text="hello!",
                reply_to="i1",
                ts=T0 + 1000,
            ),
        ],
    )
    [decision] = decisions(settings, 1)
    assert decision["request_id"] == "r1" and decision["outcome"] == "accepted"
    assert decision["decision_id"] == "acme:r1:accepted:reply" and decision["ts"] == T0 + 1000
    [delivery] = collect(settings, settings.topic("deliveries.sms"), lambda r: len(r) >= 1)
    assert delivery["request_id"] == "r1" and delivery["text"] == "hello!"
    assert delivery["decision_id"] == decision["decision_id"]


def test_publish_reports_invalid_lines_and_sends_the_rest(settings, worker):
    good = ev("opt_in", event_id="o1", app="acme", userkey="u1", ts=T0)
    result = publish(settings, [good, b"{not json", ev("send", app="acme")], expect_rc=1)
    err = result.stderr.decode()
    assert "line 2: not valid UTF-8 JSON" in err
    assert "line 3: send: missing required field 'request_id'" in err
    assert "published 1 event(s)" in err and "2 invalid line(s) not sent" in err


def test_malformed_records_are_dead_lettered_and_the_next_one_decided(settings, worker):
    inbound = ev("inbound", event_id="i1", app="acme", sender="s1", userkey="u1", network="sms", text="hi", ts=T0)
    send = ev("send", request_id="r1", app="acme", sender="s1", userkey="u1", network="sms", text="yo", ts=T0 + 1)
    bad = [
        (b"acme", b"\xff this is not json"),
        (b"acme", orjson.dumps({k: v for k, v in send.items() if k != "userkey"})),
        (b"acme", orjson.dumps({**send, "text": "x" * 10_001})),
        (b"acme", orjson.dumps({**send, "network": "SMS Gateway"})),
        (b"other-app", orjson.dumps(send)),
    ]
    produce_raw(settings, bad + [(b"acme", orjson.dumps(inbound)), (b"acme", orjson.dumps(send))])
    [decision] = decisions(settings, 1)
    assert (decision["request_id"], decision["outcome"]) == ("r1", "accepted")
    dead = collect(settings, settings.topic("deadletter"), lambda r: len(r) >= 5)
    acme = sorted((d for d in dead if d["key"] == "acme"), key=lambda d: d["offset"])
    errors = [d["error"] for d in acme]
    assert errors[0].startswith("not valid UTF-8 JSON")
    assert errors[1] == "send: missing required field 'userkey'"
    assert errors[2] == "field 'text' is 10001 characters; the limit is 10000"
    assert errors[3] == "field 'network' must match [a-z0-9_-]{1,32}, got 'SMS Gateway'"
    [misrouted] = [d for d in dead if d["key"] == "other-app"]
    assert misrouted["error"].startswith("record key 'other-app' must be the event's app 'acme'")
    first = acme[0]
    assert first["topic"] == settings.topic("events") and first["key"] == "acme"
    assert first["raw_encoding"] == "base64"  # bytes that are not UTF-8 are kept, not mangled


def _demo_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"sendgate-demo-" in blob:
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


def test_demo_exits_zero_and_leaves_no_process_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDGATE_") or k == "SENDGATE_CACHE"}
    result = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "22 decisions" in result.stdout
    assert "released  slot_reached" in result.stdout
    assert _demo_processes() == []
