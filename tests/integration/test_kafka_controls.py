"""Request controls on a real broker: validity, per-recipient limits, the loop guard, contact
lists, and `sendgate check` (the campaign pre-flight) against what the worker then decides."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

from harness import DAY, MIN, T0, decisions, ev, publish, wait_consumed
from sendgate.streams.kafka import end_offsets

TEMPLATE = "Hi {}! Your code {} gets 25% off today at http://shop.example/{}"


def controls_policy(tmp_path: Path) -> str:
    path = tmp_path / "controls.toml"
    path.write_text('[controls]\nrecipient_limits = [[2, 3600]]\ncontact_list_networks = ["xmpp"]\n')
    return str(path)


def established(app: str, sender: str, users: list[str], ts: int) -> list[dict]:
    events = [
        ev(
            "sender_profile",
            event_id=f"{sender}-p",
            app=app,
            sender=sender,
            registered_ts=ts - 400 * DAY,
            ts=ts - 2 * 60 * MIN,
        )
    ]
    events += [
        ev(
            "inbound",
            event_id=f"{sender}-i-{u}",
            app=app,
            sender=sender,
            userkey=u,
            network="sms",
            text=f"question from {u}",
            ts=ts - 60 * MIN,
        )
        for u in users
    ]
    return events


def test_validity_recipient_limits_loop_guard_and_contacts(settings, workers, tmp_path):
    settings = settings.with_(policy_file=controls_policy(tmp_path))
    workers.start(settings)
    t = T0 + 3 * 60 * MIN
    users = [f"user{i}" for i in range(12)]
    events = established("acme", "s1", users + ["bot"], t)
    # 1. validity: 10 go free, the 11th is paced to t + 60 s (valid 100 s), the 12th to t + 120 s (valid 90 s);
    # the app's next event comes at t + 2 min, after the 11th stopped being valid
    events += [
        ev(
            "send",
            request_id=f"b{i}",
            app="acme",
            sender="s1",
            userkey=u,
            network="sms",
            text=TEMPLATE.format(u, 1000 + i, i),
            valid_for_s=100 if i == 10 else 90,
            ts=t,
        )
        for i, u in enumerate(users)
    ]
    # 2. recipient limits (2 an hour): user0 got b0 above and a second text; the third waits an hour
    events += [
        ev("send", request_id=rid, app="acme", sender="s1", userkey="user0", network="sms", text=text, ts=at)
        for rid, text, at in (("second", "Your order shipped", t + 500), ("third", "Your invoice is ready", t + 1000))
    ]
    # 3. the loop guard: the user's bot repeats itself, the app answers each message
    for i in range(5):
        at = t + 2 * MIN + i * 1000
        events.append(
            ev(
                "inbound",
                event_id=f"loop{i}",
                app="acme",
                sender="s1",
                userkey="bot",
                network="sms",
                text=f"AUTO-REPLY {i}: I am away until Monday",
                ts=at,
            )
        )
        events.append(
            ev(
                "send",
                request_id=f"answer{i}",
                app="acme",
                sender="s1",
                userkey="bot",
                network="sms",
                text=f"Thanks, we will wait ({i})",
                reply_to=f"loop{i}",
                ts=at + 500,
            )
        )
    # 4. contacts: xmpp needs the bot on the user's list; a contact event authorizes it
    events += [
        ev(
            "send",
            request_id="im1",
            app="acme",
            sender="s1",
            userkey="user5",
            network="xmpp",
            text="hello on xmpp",
            ts=t + 3 * MIN,
        ),
        ev("contact", event_id="c1", app="acme", userkey="user5", network="xmpp", authorized=True, ts=t + 3 * MIN + 1),
        ev(
            "send",
            request_id="im2",
            app="acme",
            sender="s1",
            userkey="user5",
            network="xmpp",
            text="hello again on xmpp",
            ts=t + 3 * MIN + 2,
        ),
    ]
    publish(settings, events)
    decided = decisions(settings, 12 + 2 + 1 + 5 + 2)
    got: dict[str, dict] = {}
    for d in decided:
        got.setdefault(d["request_id"], d)  # each request's first decision
    assert (got["b10"]["outcome"], got["b10"]["deliver_at"]) == ("delayed", t + MIN)
    assert [(d["outcome"], d["reason"], d["ts"]) for d in decided if d["request_id"] == "b10"][1:] == [
        ("cancelled", "expired", t + 2 * MIN)
    ]
    assert (got["b11"]["outcome"], got["b11"]["reason"]) == ("rejected", "expired_before_slot")
    assert (got["third"]["outcome"], got["third"]["reason"], got["third"]["deliver_at"]) == (
        "delayed",
        "recipient_limit",
        t + 60 * MIN,
    )
    assert [got[f"answer{i}"]["reason"] for i in range(5)] == ["reply"] * 3 + ["loop_suspected"] * 2
    assert (
        got["second"]["outcome"] == "accepted"
        and got["answer4"]["outcome"] == "delayed"
        and "same text 5 times" in got["answer4"]["detail"]
    )
    assert (got["im1"]["reason"], got["im2"]["outcome"]) == ("not_in_contacts", "accepted")

    # the held replies go out when event time reaches their slot
    publish(settings, [ev("tick", app="acme", ts=t + 10 * MIN)])
    later = decisions(settings, 22 + 2)[22:]
    assert [(d["request_id"], d["outcome"]) for d in later] == [("answer3", "released"), ("answer4", "released")]


def check(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sendgate.streams.cli",
            "check",
            *args,
            "--url",
            f"http://127.0.0.1:{settings.web_port}",
        ],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        timeout=60,
    )


def test_check_agrees_with_the_decisions_of_a_200_recipient_campaign_and_writes_nothing(settings, worker, tmp_path):
    t = T0 + 3 * 60 * MIN
    fans = [f"fan{i:03d}" for i in range(160)]
    events = established("shop", "promo", fans, t)
    events += [ev("opt_out", event_id=f"oo{i}", app="shop", userkey=fans[i], ts=t - MIN) for i in range(0, 160, 16)]
    events.append(
        ev(
            "send",
            request_id="warmup",
            app="shop",
            sender="promo",
            userkey=fans[1],
            network="sms",
            text="Our spring sale starts today: 20% off everything",
            ts=t - MIN,
        )
    )
    publish(settings, events)
    assert decisions(settings, 1)[0]["request_id"] == "warmup"
    audience = fans + [f"stranger{i}" for i in range(40)]
    recipients = tmp_path / "audience.txt"
    recipients.write_text("# the spring list\n" + "\n".join(audience) + "\n")
    text = "Our spring sale starts today: 20% off everything in store"

    changelog = f"{settings.group_id}-state-changelog"
    wait_consumed(settings)  # the warm-up's commit records follow its decision: let them land first
    before = asyncio.run(end_offsets(settings, changelog))
    result = check(
        settings,
        "--app",
        "shop",
        "--sender",
        "promo",
        "--text",
        text,
        "--recipients",
        str(recipients),
        "--at",
        str(t),
        "--json",
    )
    assert result.returncode == 0, result.stderr.decode()
    answer = orjson.loads(result.stdout)
    table = check(
        settings, "--app", "shop", "--sender", "promo", "--text", text, "--recipients", str(recipients), "--at", str(t)
    )
    assert table.returncode == 0, table.stderr.decode()
    assert asyncio.run(end_offsets(settings, changelog)) == before  # no row written
    assert len(decisions(settings, 1)) == 1  # and no decision

    summary = answer["summary"]
    # the warm-up used one of the 10 free recipients, and its recipient (fan001) counts once
    assert summary["now"] == 10 and summary["refused"] == 10 + 40
    assert summary["refused_by_reason"] == {"opted_out": 10, "no_conversation": 40}
    assert summary["paced"] == 200 - 10 - 50
    lines = table.stdout.decode().splitlines()
    assert lines[0].startswith("shop / promo on sms at ") and "10 now, 140 paced" in lines[0]
    assert len(lines) == 2 + 200 and lines[2].split()[:3] == ["fan000", "rejected", "opted_out"]

    publish(
        settings,
        [
            ev("send", request_id=f"spring-{u}", app="shop", sender="promo", userkey=u, network="sms", text=text, ts=t)
            for u in audience
        ],
    )
    real = decisions(settings, 1 + 200)[1:]
    assert [(d["userkey"], d["outcome"], d["reason"], d.get("deliver_at")) for d in real] == [
        (r["userkey"], r["outcome"], r["reason"], r["deliver_at"]) for r in answer["recipients"]
    ]
