"""Only the right source can say each thing (docs/security-and-privacy.md, Sources), on the real broker: forged records of
each kind are dead-lettered as `unauthorized:` and change nothing, a key speaks for its own app
only and not past its `not_after` (replay agrees), the worker needs a keyring, inspection needs the
operator token, and a worker whose userkey secret differs from the state's refuses to start."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson

from harness import DAY, T0, collect, decisions, ev, outcomes

from sendgate.models.sources import SigningKey
from sendgate.streams.client import Publisher
from sendgate.streams.local.keyring import LOCAL_KEYS, app_key_id, write_local_keyring
from sendgate.streams.local.process import WorkerProcess

HOUR = 3_600_000


OPERATOR = "operator"  # publish_as: signed with the test's operator key (settings.key_id)


def publish_as(settings, items: list[tuple[dict, SigningKey | str | None]]) -> None:
    """Publish each event signed with its key (OPERATOR: the test's; None: unsigned), in order."""

    async def run() -> None:
        async with Publisher(settings) as pub:
            for event, key in items:
                if key is None:  # unsigned: straight to Kafka, as a producer without a key sends it
                    await pub._producer.send(
                        pub.topic, value=orjson.dumps(event), key=event["app"].encode(), timestamp_ms=event["ts"]
                    )
                else:
                    await pub.send(event, pub.key if key == OPERATOR else key)
            await pub.flush()

    asyncio.run(run())


def dead_letters(settings, count: int) -> list[dict]:
    return collect(settings, settings.topic("deadletter"), lambda r: len(r) >= count)


def rules(letters: list[dict]) -> list[str]:
    return [d["error"].split(":")[1].strip() if d["error"].startswith("unauthorized:") else d["error"] for d in letters]


def get(url: str, token: str | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body.decode()


def metric(settings, name: str) -> float | None:
    _, text = get(f"http://127.0.0.1:{settings.web_port}/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.split(" ")[0] == name:
                return float(line.split(" ")[1])
    return None


def inbound(event_id, app, user, ts, text="hi"):
    return ev("inbound", event_id=event_id, app=app, sender="s", userkey=user, network="sms", text=text, ts=ts)


def send(request_id, app, user, ts, **extra):
    return ev(
        "send", request_id=request_id, app=app, sender="s", userkey=user, network="sms", text="hello", ts=ts, **extra
    )


def test_forged_records_are_dead_lettered_and_change_nothing(settings, workers):
    ring = write_local_keyring(settings.keyring_file, apps=["acme", "rival"])
    acme, net = ring.keys[app_key_id("acme")], ring.keys[LOCAL_KEYS["network"]]
    workers.start(settings)
    forged = [
        (inbound("i-forged", "acme", "u1", T0), acme),  # an app minting the conversation a reply rests on
        (ev("app_policy", event_id="g1", app="acme", unrestricted=True, ts=T0 + 1), acme),  # a self-granted grant
        (ev("opt_in", event_id="o1", app="rival", userkey="u2", source="form", ts=T0 + 2), acme),  # another app's user
        (ev("sender_profile", event_id="p1", app="acme", sender="s", registered_ts=T0 - 400 * DAY, ts=T0 + 3), acme),
        (
            ev(
                "delivery_status",
                event_id="d1",
                app="acme",
                sender="s",
                userkey="u1",
                request_id="x",
                status="delivered",
                ts=T0 + 4,
            ),
            acme,
        ),
        (ev("junk_report", event_id="j1", app="rival", sender="s", userkey="u9", text="buy now", ts=T0 + 5), acme),
        (ev("opt_in", event_id="o2", app="acme", userkey="u3", ts=T0 + 6), acme),  # consent without its evidence
        (ev("opt_in", event_id="o3", app="acme", userkey="u4", ts=T0 + 7, source="form"), None),  # unsigned
        (
            ev("opt_in", event_id="o4", app="acme", userkey="u5", ts=T0 + 8, source="form"),
            SigningKey(acme.id, "app", b"a guess at acme's secret", "acme"),
        ),  # its id, not its secret
    ]
    after = [
        (send("r-forged", "acme", "u1", T0 + 60_000, reply_to="i-forged"), acme),
        (send("r-cold", "acme", "u6", T0 + 60_001), acme),  # no grant: a cold send stays refused
        (send("r-rival", "rival", "u2", T0 + 60_002), ring.keys[app_key_id("rival")]),
        # the real thing still works: the network says u7 wrote, acme answers
        (inbound("i-real", "acme", "u7", T0 + 60_003), net),
        (send("r-real", "acme", "u7", T0 + 60_004, reply_to="i-real"), acme),
    ]
    publish_as(settings, forged + after)
    got = decisions(settings, 4)  # acme and rival may live on different partitions: compared as a set
    assert sorted(outcomes(got)) == [
        ("r-cold", "rejected", "no_conversation"),
        ("r-forged", "rejected", "no_conversation"),
        ("r-real", "accepted", "reply"),
        ("r-rival", "rejected", "no_conversation"),
    ]
    letters = dead_letters(settings, len(forged))
    assert sorted(rules(letters)) == sorted(
        ["role", "role", "other_app", "role", "role", "role", "no_consent_evidence", "unsigned", "bad_signature"]
    )
    assert all(d["error"].startswith("unauthorized: ") for d in letters)
    # counted by rule, and the worker says it verifies
    deadline = time.monotonic() + 30
    while metric(settings, 'sendgate_unauthorized_records_total{rule="role"}') != 5.0:
        assert time.monotonic() < deadline, "the refusals were not counted by rule"
        time.sleep(0.2)  # poll interval
    assert metric(settings, "sendgate_auth_enabled") == 1.0


def test_a_key_past_its_not_after_is_refused_and_replay_decides_as_live(settings, workers, tmp_path):
    write_local_keyring(settings.keyring_file)
    old, new = "0" * 32, "1" * 32
    with open(settings.keyring_file, "a") as fh:  # acme's key rotated at T0 + 1 h
        fh.write(
            f'\n[[keys]]\nid = "acme-2023"\nrole = "app"\napp = "acme"\nsecret = "{old}"\n'
            f"not_after = {T0 + HOUR}\n"
            f'\n[[keys]]\nid = "acme-2024"\nrole = "app"\napp = "acme"\nsecret = "{new}"\n'
            f"not_before = {T0 + HOUR}\n"
        )
    acme_old, acme_new = (
        SigningKey("acme-2023", "app", old.encode(), "acme"),
        SigningKey("acme-2024", "app", new.encode(), "acme"),
    )
    workers.start(settings)
    publish_as(
        settings,
        [
            (ev("opt_in", event_id="o1", app="acme", userkey="u1", source="form", ts=T0), acme_old),
            (send("r1", "acme", "u1", T0 + 1), acme_old),
            (ev("tick", app="acme", ts=T0 + 2 * HOUR), OPERATOR),  # the app's clock passes the old key's not_after
            (send("r2", "acme", "u1", T0 + 2), acme_old),  # backdated with the revoked key: refused
            (send("r3", "acme", "u1", T0 + 2 * HOUR + 1), acme_old),
            (send("r4", "acme", "u1", T0 + 2 * HOUR + 2), acme_new),
            (
                send("r5", "acme", "u1", T0 + 3),
                acme_new,
            ),  # the new key before its not_before... but the clock is past it
        ],
    )
    live = decisions(settings, 3)
    assert [d["request_id"] for d in live] == ["r1", "r4", "r5"]
    assert sorted(rules(dead_letters(settings, 2))) == ["key_expired", "key_expired"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sendgate.streams.cli",
            "replay",
            "--name",
            "audit",
            "--compare",
            "--changed-out",
            str(tmp_path / "changed.jsonl"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **settings.to_env()},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert ", 0 changed" in result.stdout
    assert collect(settings, settings.topic("replay.audit.decisions"), lambda r: len(r) >= 3) == live


def run_worker_to_exit(settings, tmp_path, name: str) -> tuple[int, str]:
    worker = WorkerProcess(settings, tmp_path / f"{name}.log").start()
    try:
        code = worker.process.wait(120)
    finally:
        worker.stop()
    return code, worker.log_tail()


def test_a_worker_refuses_to_start_without_a_keyring_unless_auth_is_off(settings, workers, tmp_path):
    without = dataclasses.replace(settings, keyring_file=None, key_id=None)
    code, log = run_worker_to_exit(without, tmp_path, "no-keyring")
    assert code == 2 and "no keyring: set SENDGATE_KEYRING" in log

    off = dataclasses.replace(without, auth=False)
    workers.start(off)
    status, ready = get(f"http://127.0.0.1:{off.web_port}/readyz")
    assert status == 200 and ready["details"]["auth"].startswith("off")
    assert metric(off, "sendgate_auth_enabled") == 0.0
    publish_as(off, [(inbound("i1", "acme", "u1", T0), None), (send("r1", "acme", "u1", T0 + 1, reply_to="i1"), None)])
    assert outcomes(decisions(off, 1)) == [("r1", "accepted", "reply")]


def test_inspection_needs_the_operator_token(settings, workers):
    settings = settings.with_(operator_token="op-token-for-tests")
    workers.start(settings)
    publish_as(settings, [(inbound("i1", "acme", "u1", T0, text="STOP"), OPERATOR)])
    base = f"http://127.0.0.1:{settings.web_port}"
    deadline = time.monotonic() + 60
    while get(f"{base}/sendgate/userkeys/acme/u1", "op-token-for-tests")[0] != 200:
        assert time.monotonic() < deadline, "the userkey's state never appeared"
        time.sleep(0.2)  # poll interval
    status, body = get(f"{base}/sendgate/userkeys/acme/u1", "op-token-for-tests")
    assert body["opted_out"] is True
    assert get(f"{base}/sendgate/userkeys/acme/u1")[0] == 401
    assert get(f"{base}/sendgate/userkeys/acme/u1", "wrong")[0] == 401
    assert get(f"{base}/sendgate/senders/acme/s")[0] == 401
    status, doc = get(f"{base}/sendgate/status")
    assert status == 200 and doc["per_sender"] is False and doc["latest"] == []
    assert get(f"{base}/sendgate/status", "op-token-for-tests")[1]["per_sender"] is True
    assert get(f"{base}/livez")[0] == 200 and get(f"{base}/metrics")[0] == 200  # probes stay open


def test_a_worker_with_another_userkey_secret_refuses_to_start(settings, workers, tmp_path):
    first = settings.with_(userkey_secret="the-secret-that-built-the-state")
    worker = workers.start(first)
    assert worker.stop() == 0
    for name, other in (
        ("other", dataclasses.replace(first, userkey_secret="another-secret-entirely")),
        ("none", dataclasses.replace(first, userkey_secret=None)),
    ):
        code, log = run_worker_to_exit(other, tmp_path, name)
        assert (
            code == 2 and f"the state of group {first.group_id} was built with another SENDGATE_USERKEY_SECRET" in log
        ), log
    result = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", "replay", "--name", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **dataclasses.replace(first, userkey_secret="x" * 20).to_env()},
    )
    assert result.returncode == 2 and "replay: the state of group" in result.stderr
    workers.start(first)  # the right secret still starts
