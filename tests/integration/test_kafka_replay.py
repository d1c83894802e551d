"""The event log is the source of truth: replay reproduces the live decisions field by field, and
rebuild recomputes the live tables so that workers resume as if nothing had happened."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from harness import DAY, MIN, T0, collect, decisions, ev, publish

from test_kafka_restore import write_changelog

from sendgate.models.consent import Userkey
from sendgate.models.events import validate
from sendgate.models.decisions import Decision
from sendgate.models.gate import JUNK, TABLES, USERKEYS, Gate, MemoryStore, key
from sendgate.streams.kafka import end_offsets, read_log
from sendgate.streams.worker.checkpoint import APPS, COMMIT, HOME, KIND, PREFIX, STATE, Commit, commit_key

T = T0 + 3 * 60 * MIN
TEMPLATE = "Hi {}! Flash sale: code {} gives 30% off at http://shop.example/{} until midnight"


def send(rid, user, text, ts, **extra):
    return ev("send", request_id=rid, app="acme", sender="s1", userkey=user, network="sms", text=text, ts=ts, **extra)


def part_one() -> list[dict]:
    """Consent changes, a junk report, a blast that is paced, and a tick that releases some of it."""
    events = [
        ev("sender_profile", event_id="p", app="acme", sender="s1", registered_ts=T - 400 * DAY, ts=T - 2 * 60 * MIN)
    ]
    events += [
        ev(
            "inbound",
            event_id=f"i{i}",
            app="acme",
            sender="s1",
            userkey=f"u{i}",
            network="sms",
            text=f"hello {i}",
            ts=T - 60 * MIN,
        )
        for i in range(30)
    ]
    events += [
        ev(
            "inbound",
            event_id="stop3",
            app="acme",
            sender="s1",
            userkey="u3",
            network="sms",
            text="STOP",
            ts=T - 50 * MIN,
        ),
        ev("opt_in", event_id="o1", app="acme", userkey="fan", source="web", ts=T - 40 * MIN),
        ev("app_policy", event_id="g1", app="acme", unrestricted=True, reason="verified", ts=T - 30 * MIN),
        send("cold1", "stranger", "Welcome aboard", T - 29 * MIN),
        ev("app_policy", event_id="g2", app="acme", unrestricted=False, reason="abuse", ts=T - 28 * MIN),
        send("cold2", "stranger2", "Welcome aboard", T - 27 * MIN),
        ev(
            "junk_report",
            event_id="j1",
            app="acme",
            sender="s2",
            userkey="u7",
            text="You WON a free cruise! Call 09061234567 to claim",
            ts=T - 20 * MIN,
        ),
        send("cruise", "u8", "You WON a free cruise!! Call 09069999999 to claim", T - 19 * MIN),
    ]
    events += [send(f"b{i:02d}", f"u{i}", TEMPLATE.format(f"N{i}", 100 + i, i), T + i * 1000) for i in range(25)]
    events += [ev("tick", app="acme", ts=T + 4 * MIN)]
    return events


def part_two() -> list[dict]:
    """After a restart: an opt-out of a waiting recipient, a cancel, more sends, the final ticks."""
    return [
        ev("opt_out", event_id="o2", app="acme", userkey="u20", source="support", ts=T + 5 * MIN),
        ev("cancel", request_id="b21", app="acme", ts=T + 5 * MIN),
        ev("cancel", request_id="nope", app="acme", ts=T + 5 * MIN),
        send("fan1", "fan", "Thanks for subscribing", T + 6 * MIN),
        send("r-u5", "u5", "Re: your question", T + 6 * MIN),
        ev("tick", app="acme", ts=T + 60 * MIN),
        send("last", "u0", "See you soon", T + 61 * MIN),
    ]


def expected_decisions(events: list[dict]) -> list[dict]:
    """What one uninterrupted run of the gate makes of these events (all have explicit ts)."""
    gate, store = Gate(), MemoryStore()
    out = []
    for e in events:
        out += [r.to_dict() for r in gate.handle(validate(e, 0), store) if isinstance(r, Decision)]
    return out


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sendgate.streams.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **settings.to_env()},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def run_part_one_and_stop(settings, workers) -> None:
    first = workers.start(settings)
    publish(settings, part_one())
    decisions(settings, len(expected_decisions(part_one())))
    # part one's junk report comes back as a junk_shared event on every partition, after the
    # decisions: wait for its row, or a stop before it leaves it to the next start (and the rows unequal)
    collect(
        settings,
        settings.changelog_topic(STATE),
        lambda r: any(x["key"].startswith(PREFIX[JUNK]) for x in r),
        with_partition=True,
        json=False,
    )
    assert first.stop() == 0  # a clean stop commits: nothing may be decided twice


def test_replay_reproduces_live_decisions_field_by_field_across_a_restart(settings, workers, tmp_path):
    expected = expected_decisions(part_one() + part_two())
    run_part_one_and_stop(settings, workers)
    workers.start(settings.with_(data_dir=str(tmp_path / "fresh-store")))
    publish(settings, part_two())
    live = decisions(settings, len(expected))
    # The log holds consent changes, a paced blast, ticks, releases, a cancel, an opt-out while waiting
    # and a junk report. It is one app, so one partition: its order is total. (A junk report made by
    # another app is the one input whose effect depends on cross-partition timing; see topology.md.)
    outcomes = {d["outcome"] for d in live}
    assert outcomes == {"accepted", "delayed", "rejected", "released", "cancelled"}
    assert live == expected

    result = cli(settings, "replay", "--name", "audit", "--compare", "--changed-out", str(tmp_path / "changed.jsonl"))
    assert f"requests: {len({d['request_id'] for d in live})} live" in result.stdout
    assert ", 0 changed" in result.stdout
    replayed = collect(settings, settings.topic("replay.audit.decisions"), lambda r: len(r) >= len(live))
    assert replayed == live  # field by field, in order

    what_if = tmp_path / "what-if.toml"
    what_if.write_text("[burst]\nfree_recipients = 20\n")
    result = cli(
        settings,
        "replay",
        "--name",
        "whatif",
        "--policy",
        str(what_if),
        "--compare",
        "--changed-out",
        str(tmp_path / "changed2.jsonl"),
    )
    assert "0 changed" not in result.stdout
    changed = (tmp_path / "changed2.jsonl").read_text().splitlines()
    assert len(changed) >= 10  # b10..b19 are no longer paced
    # the same name again, under the live policy: this run alone is compared, not the one before it
    result = cli(settings, "replay", "--name", "whatif", "--compare", "--changed-out", str(tmp_path / "changed3.jsonl"))
    assert ", 0 changed" in result.stdout


def snapshot(settings) -> dict[str, dict[bytes, tuple[int, bytes]]]:
    """Every kind of row as the changelogs say (the last value per key, with its partition), and
    the commit records' offsets under "commit"."""

    async def run() -> dict[str, dict[bytes, tuple[int, bytes]]]:
        tables: dict[str, dict[bytes, tuple[int, bytes]]] = {
            name: {} for name in (*(t.name for t in TABLES), APPS, "homes", "commit")
        }
        for topic in (settings.changelog_topic(STATE), settings.changelog_topic(APPS)):
            async for r in read_log(settings, topic, await end_offsets(settings, topic)):
                if topic.endswith(f"-{APPS}-changelog"):
                    name, key = APPS, r.key
                elif r.key.startswith(HOME):
                    name, key = "homes", r.key
                elif r.key.startswith(COMMIT):  # its offset: a rebuild's carries no checkpoint token
                    name, key = "commit", r.key
                    r.value = str(Commit.from_bytes(r.value).offset).encode()
                else:
                    name, key = KIND[r.key[:2]], r.key[2:]
                if r.value is None:
                    tables[name].pop(key, None)
                else:
                    tables[name][key] = (r.partition, r.value)
        return tables

    return asyncio.run(run())


def test_rebuild_recomputes_the_tables_and_workers_resume_without_repeating(settings, workers):
    expected = expected_decisions(part_one() + part_two())
    run_part_one_and_stop(settings, workers)
    before = snapshot(settings)
    assert before["pending"] and before["userkeys"] and before["senders"]

    cli(settings, "rebuild")
    assert snapshot(settings) == before

    workers.start(settings)  # on its kept store: it reads the rebuilt rows after its persisted offsets
    publish(settings, part_two())
    live = collect(settings, settings.topic("decisions"), lambda r: any(d["request_id"] == "last" for d in r))
    assert live == expected  # nothing re-emitted, and every later decision as an uninterrupted run


def test_rebuild_removes_a_wrong_row_even_from_the_store_a_worker_kept_on_another_machine(settings, workers, tmp_path):
    expected = expected_decisions(part_one() + part_two())
    run_part_one_and_stop(settings, workers)
    before = snapshot(settings)
    # The state goes wrong: a checkpoint says u5, who wrote to s1, opted out (part two replies to u5).
    partition, _ = before["homes"][HOME + b"acme"]
    _, committed = before["commit"][commit_key(partition)]
    wrong = Userkey()
    wrong.opt_out(T, "not in the log")
    write_changelog(
        settings,
        [
            (partition, PREFIX[USERKEYS] + key("acme", "u5"), wrong.to_bytes()),
            (partition, commit_key(partition), committed),
        ],
    )
    assert workers.start(settings).stop() == 0  # the worker's kept store now holds the wrong row

    # The operator rebuilds from another machine: the worker's store is not there to be removed.
    cli(settings.with_(data_dir=str(tmp_path / "operator")), "rebuild")
    assert snapshot(settings) == before  # the wrong row is gone from the changelog, all else as computed
    assert not list((tmp_path / "operator").glob("sendgate-rebuild-*"))  # its scratch store is removed

    workers.start(settings)  # on its kept store, with the wrong row in it
    publish(settings, part_two())
    live = collect(settings, settings.topic("decisions"), lambda r: any(d["request_id"] == "last" for d in r))
    assert [d for d in live if d["request_id"] == "r-u5"] == [d for d in expected if d["request_id"] == "r-u5"]
    assert live == expected
