"""Kafka security settings reach every client: SASL/SCRAM on a real broker, TLS at the config level.

The SASL tests start their own broker (`LocalKafka(scram=...)`, whatever SENDGATE_BOOTSTRAP says):
its SASL_PLAINTEXT listener is the only address the clients are given, so the worker, the publisher,
the admin calls and the subscriber all have to log in. The settings themselves (SASL and TLS, with a
real TLS handshake) are unit-tested in tests/unit/streams/test_config_security.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from harness import T0, ev, make_settings, publish

from sendgate.streams.local.broker import LocalKafka
from sendgate.streams.client import Publisher, decisions
from sendgate.streams.config import KafkaAuthError, Settings

USER, PASSWORD = "sendgate-test", "s3cret-pw"
AUTH_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory):
    kafka = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka-scram"), scram=(USER, PASSWORD))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.close()


def sasl_settings(kafka: LocalKafka, data_dir: Path, **overrides) -> Settings:
    return make_settings(kafka.sasl_bootstrap, data_dir, **{**kafka.scram_settings, **overrides})


def test_scram_login_publish_decide_subscribe(scram_kafka, workers, tmp_path):
    settings = sasl_settings(scram_kafka, tmp_path / "worker")
    workers.start(settings)  # the Faust worker: its consumer, producer and topic creation log in

    async def run() -> list:
        async with Publisher(settings) as pub:
            await pub.publish(
                ev("inbound", event_id="i1", app="acme", sender="s", userkey="u1", network="sms", text="hi", ts=T0)
            )
            await pub.publish(
                ev(
                    "send",
                    request_id="r1",
                    app="acme",
                    sender="s",
                    userkey="u1",
                    network="sms",
                    text="hello back",
                    reply_to="i1",
                    ts=T0 + 1,
                )
            )
        got = []
        async for decision in decisions(settings, from_beginning=True, app="acme"):
            got.append(decision)
            return got

    got = asyncio.run(asyncio.wait_for(run(), 90))
    assert [(d.request_id, d.outcome, d.reason) for d in got] == [("r1", "accepted", "reply")]


@pytest.mark.parametrize(
    "override",
    [
        {"sasl_password": "wrong"},
        {"sasl_username": "nobody"},
        {"sasl_mechanism": "SCRAM-SHA-512"},
    ],  # the broker enables only 256
    ids=["wrong-password", "unknown-user", "mechanism-not-enabled"],
)
def test_refused_login_fails_fast_and_says_so(scram_kafka, tmp_path, override):
    settings = sasl_settings(scram_kafka, tmp_path / "worker", **override)

    async def open_publisher() -> None:
        async with Publisher(settings):
            pass

    started = time.monotonic()
    with pytest.raises(KafkaAuthError, match="authentication failed") as info:
        asyncio.run(asyncio.wait_for(open_publisher(), AUTH_DEADLINE_S))
    assert time.monotonic() - started < AUTH_DEADLINE_S
    assert scram_kafka.sasl_bootstrap in str(info.value)
    assert PASSWORD not in str(info.value) and "wrong" not in str(info.value)  # never echo a password


def test_cli_prints_one_clear_line_on_refused_login(scram_kafka, tmp_path):
    settings = sasl_settings(scram_kafka, tmp_path / "worker", sasl_password="wrong")
    result = publish(settings, [ev("opt_in", event_id="o1", app="acme", userkey="u1")], expect_rc=2)
    ours = [line for line in result.stderr.decode().splitlines() if line.startswith("sendgate:")]
    assert len(ours) == 1 and "authentication failed" in ours[0], result.stderr.decode()
