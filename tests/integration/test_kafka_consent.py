"""The consent gate on a real broker: scripted conversations, restarts, several partitions."""

from __future__ import annotations

from harness import MIN, T0, collect, decisions, ev, make_settings, outcomes, publish

from sendgate.models.gate import CONVERSATIONS, USERKEYS
from sendgate.streams.worker.checkpoint import COMMIT, PREFIX, STATE, commit_key


def inbound(event_id, userkey, text, ts, app="acme", sender="s1"):
    return ev("inbound", event_id=event_id, app=app, sender=sender, userkey=userkey, network="sms", text=text, ts=ts)


def send(request_id, userkey, text, ts, app="acme", sender="s1", **extra):
    return ev(
        "send", request_id=request_id, app=app, sender=sender, userkey=userkey, network="sms", text=text, ts=ts, **extra
    )


SCRIPT = [
    inbound("i1", "u1", "hello, what are your opening hours?", T0),
    send("r1", "u1", "We open at 9.", T0 + 30_000, reply_to="i1"),
    send("r2", "u2", "Hi stranger", T0 + 31_000),
    send("r3", "u1", "Our sale starts Monday", T0 + 20 * MIN),
    inbound("i2", "u1", "  Stop ", T0 + 21 * MIN),
    send("r4", "u1", "You are unsubscribed.", T0 + 22 * MIN, reply_to="i2"),
    send("r4b", "u1", "Sorry to see you go", T0 + 22 * MIN + 1000, reply_to="i2"),
    inbound("i3", "u1", "start", T0 + 23 * MIN),
    send("r5", "u1", "Welcome back!", T0 + 24 * MIN),
    send("r6", "u1", "New arrivals this week", T0 + 60 * MIN),
]
EXPECTED = [
    ("r1", "accepted", "reply"),
    ("r2", "rejected", "no_conversation"),
    ("r3", "accepted", "conversation"),
    ("r4", "accepted", "opt_out_confirmation"),  # one confirmation within 5 minutes of STOP
    ("r4b", "rejected", "opted_out"),  # and nothing after it
    ("r5", "accepted", "reply"),
    ("r6", "accepted", "conversation"),
]


def test_scripted_conversation_gives_the_exact_decisions(settings, worker):
    publish(settings, SCRIPT)
    got = decisions(settings, len(EXPECTED))
    assert outcomes(got) == EXPECTED
    assert "rule per_se" in got[4]["detail"] and "already sent" in got[4]["detail"]
    assert got[0]["reply"] is True and got[2]["reply"] is False


def test_restart_keeps_consent_state_through_changelog_recovery(settings, workers, tmp_path):
    first = workers.start(settings)
    publish(
        settings,
        SCRIPT[:5]
        + [
            ev("opt_in", event_id="o1", app="acme", userkey="u9", source="web", ts=T0),
            ev("app_policy", event_id="g1", app="acme", unrestricted=True, reason="t", ts=T0 + 20 * MIN),
        ],
    )
    assert outcomes(decisions(settings, 3)) == EXPECTED[:3]
    # wait until the events after r3 (STOP, opt-in, grant) are processed: a marker decision after them
    publish(settings, [send("m1", "u9", "marker", T0 + 21 * MIN)])
    assert outcomes(decisions(settings, 4))[3] == ("m1", "accepted", "opt_in")
    assert first.stop() == 0  # a clean stop commits: nothing may be decided twice
    # A new worker with an empty local store must rebuild its tables from the changelogs.
    restarted = settings.with_(data_dir=str(tmp_path / "fresh-store"))
    workers.start(restarted)
    publish(
        settings,
        [
            # STOP before the restart still holds (answering an old inbound: no opt-out confirmation)
            send("r4", "u1", "Sorry to see you go", T0 + 22 * MIN, reply_to="i1"),
            send("r7", "u3", "Hello u3", T0 + 22 * MIN),  # the grant before the restart still holds
            ev("app_policy", event_id="g2", app="acme", unrestricted=False, reason="t", ts=T0 + 23 * MIN),
            send("r8", "u3", "Hello again u3", T0 + 24 * MIN),
            send("r9", "u9", "Opted-in news", T0 + 24 * MIN),
        ],
    )
    after = outcomes(decisions(settings, 8))[4:]
    assert after == [
        ("r4", "rejected", "opted_out"),
        ("r7", "accepted", "unrestricted"),
        ("r8", "rejected", "no_conversation"),
        ("r9", "accepted", "opt_in"),
    ]


def test_state_rows_are_co_partitioned_with_their_app_events(bootstrap, workers, tmp_path):
    settings = make_settings(bootstrap, tmp_path / "w", partitions=4)
    workers.start(settings)
    apps = [f"app-{i}" for i in range(8)]
    script = []
    for app in apps:
        script += [
            inbound(f"{app}-i1", "u1", "hi", T0, app=app),
            inbound(f"{app}-i2", "u1", "STOP", T0 + MIN, app=app),
            send(f"{app}-r1", "u1", "hello", T0 + 7 * MIN, app=app),  # past the confirmation window
            send(f"{app}-r2", "u2", "hello", T0 + 7 * MIN, app=app),
        ]
    publish(settings, script)
    got = decisions(settings, 2 * len(apps))
    assert sorted(outcomes(got)) == sorted(
        [(f"{a}-r1", "rejected", "opted_out") for a in apps]
        + [(f"{a}-r2", "rejected", "no_conversation") for a in apps]
    )
    events = collect(settings, settings.topic("events"), lambda r: len(r) >= len(script), with_partition=True)
    partition_of_app = {e["key"].decode(): e["partition"] for e in events}
    assert len(set(partition_of_app.values())) > 1, "the apps should spread over several partitions"
    changelog = collect(
        settings,
        settings.changelog_topic(STATE),
        lambda r: sum(x["key"].startswith(PREFIX[USERKEYS]) for x in r) >= len(apps),
        with_partition=True,
        json=False,
    )
    kinds = set()
    for row in changelog:
        if row["key"].startswith(COMMIT):  # a commit record names its own partition
            assert row["key"] == commit_key(row["partition"]), row
            continue
        kinds.add(row["key"][:2])
        app = row["key"][2:].split(b"\x1f")[0].decode()
        assert row["partition"] == partition_of_app[app], (app, row)
    assert {PREFIX[USERKEYS], PREFIX[CONVERSATIONS]} <= kinds


def test_revocation_in_other_words_one_confirmation_help_and_the_audit_trail(settings, worker):
    """On the broker: 'Please stop texting me' opts out; one confirmation goes, a second and a late
    one do not; HELP is answered after the opt-out; every change and the ambiguous inbound reach
    <prefix>consent, which the client reads typed."""
    import asyncio

    from sendgate.streams.client import consent_records

    publish(
        settings,
        [
            inbound("i1", "u1", "hi, is my order ready?", T0),
            inbound("i2", "u1", "Please stop texting me!", T0 + MIN),
            send("c1", "u1", "You won't get more messages. Reply START to rejoin.", T0 + MIN + 20_000, reply_to="i2"),
            send("c2", "u1", "One more thing: 20% off!", T0 + MIN + 30_000, reply_to="i2"),
            inbound("h1", "u1", "HELP", T0 + 2 * MIN),
            send("h-r", "u1", "Acme alerts: reply STOP to end, START to rejoin.", T0 + 2 * MIN + 5_000, reply_to="h1"),
            inbound("i3", "u2", "I'll stop by at noon", T0 + 3 * MIN),
            send("a1", "u2", "See you then!", T0 + 3 * MIN + 5_000, reply_to="i3"),
            inbound("i4", "u3", "STOP", T0 + 4 * MIN),
            send("late", "u3", "You are unsubscribed.", T0 + 17 * MIN, reply_to="i4"),
        ],
    )
    got = outcomes(decisions(settings, 5))
    assert got == [
        ("c1", "accepted", "opt_out_confirmation"),
        ("c2", "rejected", "opted_out"),
        ("h-r", "accepted", "help_reply"),
        ("a1", "accepted", "reply"),
        ("late", "rejected", "opted_out"),
    ]
    deliveries = collect(settings, settings.topic("deliveries.sms"), lambda r: len(r) >= 3)
    assert [d["request_id"] for d in deliveries] == ["c1", "h-r", "a1"]

    async def read(n: int) -> list:
        out = []
        async for record in consent_records(settings, from_beginning=True):
            out.append(record)
            if len(out) >= n:
                return out

    trail = asyncio.run(asyncio.wait_for(read(3), 60))
    assert [(r.userkey, r.kind, r.rule, r.source_event_id) for r in trail] == [
        ("u1", "opt_out", "request", "i2"),
        ("u2", "ambiguous", "other_sense", "i3"),
        ("u3", "opt_out", "per_se", "i4"),
    ]
    assert trail[0].text == "please stop texting me" and trail[0].record_id == "acme:inbound:i2:opt_out"


def test_a_reminder_right_after_stop_is_refused_and_only_an_explicit_confirmation_goes(settings, worker):
    # the app's scheduled reminder lands 2 s after "Stop.": without reply_to naming the STOP it is
    # no confirmation (FCC 64.1200(a)(12) allows one text that confirms, and the gate cannot read intent)
    publish(
        settings,
        [
            inbound("i1", "u1", "when is my appointment?", T0),
            send("r1", "u1", "Tomorrow at 10.", T0 + 10_000, reply_to="i1"),
            inbound("i-stop", "u1", "Stop.", T0 + MIN),
            send("reminder", "u1", "Reminder: your appointment is tomorrow at 10", T0 + MIN + 2_000),
            send("confirm", "u1", "You're unsubscribed. Reply START to rejoin.", T0 + MIN + 3_000, reply_to="i-stop"),
        ],
    )
    assert outcomes(decisions(settings, 3)) == [
        ("r1", "accepted", "reply"),
        ("reminder", "rejected", "opted_out"),
        ("confirm", "accepted", "opt_out_confirmation"),
    ]
    assert len(collect(settings, settings.topic("deliveries.sms"), lambda r: len(r) >= 2)) == 2
