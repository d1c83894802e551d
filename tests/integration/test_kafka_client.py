"""The integrator's side on a real broker: the typed client and the inspection endpoints."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request

import orjson
import pytest

from harness import DAY, MIN, T0, decisions, ev, publish

from sendgate.models.decisions import Decision, Delivery
from sendgate.models.events import InvalidEvent
from sendgate.streams.local.broker import free_port
from sendgate.streams.client import Publisher
from sendgate.streams.client import decisions as subscribe
from sendgate.streams.client import deliveries


async def first(iterator, count: int, timeout: float = 60.0) -> list:
    out = []

    async def take() -> None:
        async for item in iterator:
            out.append(item)
            if len(out) == count:
                return

    await asyncio.wait_for(take(), timeout)
    return out


def test_publisher_validates_keys_by_app_and_subscribers_filter(settings, worker):
    async def run() -> None:
        async with Publisher(settings) as pub:
            with pytest.raises(InvalidEvent, match="missing required field 'userkey'"):
                await pub.publish({"type": "opt_in", "event_id": "x", "app": "acme"})
            meta = await pub.publish(ev("opt_in", event_id="o1", app="acme", userkey="u1", ts=T0))
            assert meta.topic == settings.topic("events") and meta.offset == 0
            await pub.publish(ev("opt_in", event_id="o2", app="beta", userkey="u1", ts=T0))
            for app in ("acme", "beta"):
                await pub.publish(
                    ev(
                        "send",
                        request_id=f"{app}-r1",
                        app=app,
                        sender="s",
                        userkey="u1",
                        network="sms",
                        text="hello",
                        ts=T0 + 1,
                    )
                )
                await pub.publish(
                    ev(
                        "send",
                        request_id=f"{app}-r2",
                        app=app,
                        sender="s",
                        userkey="nobody",
                        network="sms",
                        text="hello",
                        ts=T0 + 2,
                    )
                )
        beta_rejected = await first(subscribe(settings, from_beginning=True, app="beta", outcome="rejected"), 1)
        assert isinstance(beta_rejected[0], Decision)
        assert (beta_rejected[0].request_id, beta_rejected[0].reason) == ("beta-r2", "no_conversation")
        sms = await first(deliveries("sms", settings, from_beginning=True, app="acme"), 1)
        assert isinstance(sms[0], Delivery) and sms[0].request_id == "acme-r1" and sms[0].text == "hello"
        grouped = await first(subscribe(settings, group_id="auditors", from_beginning=True), 4)
        assert {d.request_id for d in grouped} == {"acme-r1", "acme-r2", "beta-r1", "beta-r2"}

    asyncio.run(run())


def get_json(url: str, deadline: float) -> tuple[int, dict]:
    """GET with retries until the worker's web server answers (it starts with the worker)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503:  # 503: partitions not assigned yet
                return exc.code, orjson.loads(exc.read())
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from {url}")
        time.sleep(0.2)  # polling an endpoint that is not up yet, not waiting for a result


def test_inspection_endpoints_answer_from_the_owning_worker(settings, workers):
    port = free_port()
    workers.start(settings.with_(web_enabled=True, web_port=port))
    t = T0 + 3 * 60 * MIN
    events = [ev("sender_profile", event_id="p", app="acme", sender="s1", registered_ts=t - 400 * DAY, ts=t - 61 * MIN)]
    events += [
        ev(
            "inbound",
            event_id=f"i{i}",
            app="acme",
            sender="s1",
            userkey=f"u{i}",
            network="sms",
            text="hi",
            ts=t - 60 * MIN,
        )
        for i in range(12)
    ]
    events += [
        ev(
            "inbound",
            event_id="stop",
            app="acme",
            sender="s1",
            userkey="u0",
            network="sms",
            text="STOP",
            ts=t - 30 * MIN,
        )
    ]
    events += [
        ev(
            "send",
            request_id=f"b{i}",
            app="acme",
            sender="s1",
            userkey=f"u{i}",
            network="sms",
            text=f"Hi u{i}, our summer sale starts now: code {i * 11}",
            ts=t + i,
        )
        for i in range(1, 12)
    ]
    publish(settings, events)
    decisions(settings, 11)
    base = f"http://127.0.0.1:{port}/sendgate"
    deadline = time.monotonic() + 60
    # The rows reach the worker's store once the broker acknowledged the batch's send, which a
    # subscriber may see its decisions a moment before: until then the userkey is unknown (404).
    status, body = get_json(f"{base}/userkeys/acme/u0?sender=s1", deadline)
    while status == 404 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval
        status, body = get_json(f"{base}/userkeys/acme/u0?sender=s1", deadline)
    assert status == 200 and body["opted_out"] is True and "rule per_se" in body["how"]
    assert body["conversation"]["recent_inbound_ids"] == ["stop"]  # i0 is older than the reply window
    status, body = get_json(f"{base}/senders/acme/s1?ts={t + 20}", deadline)
    assert status == 200 and body["risk"] is None and body["conversing_userkeys"] == 12
    [cluster] = body["clusters"]
    assert cluster["recipients"] == 11 and cluster["paced"] == 1
    assert [p["request_id"] for p in body["pending"]] == ["b11"]
    status, body = get_json(f"{base}/senders/acme/nobody", deadline)
    assert status == 404 and body == {"error": "no state for sender 'nobody' in app 'acme'"}
    odd = urllib.parse.quote("<script>x</script>", safe="")
    status, body = get_json(f"{base}/userkeys/acme/{odd}", deadline)
    assert status == 404 and "<script>x</script>" in body["error"]  # echoed only inside JSON


def test_a_publisher_on_a_topic_nobody_made_fails_clearly_and_creates_nothing(settings):
    """A typo in the prefix must not create a new unbounded events topic (and producers hold no CREATE)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from sendgate.streams.client import MissingTopic

    typo = settings.with_(topic_prefix="x" + settings.topic_prefix)

    async def run() -> list[str]:
        with pytest.raises(MissingTopic, match=f"topic {typo.topic('events')} does not exist"):
            async with Publisher(typo, wait_for_topic_s=0):
                pass
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    assert typo.topic("events") not in asyncio.run(run())
