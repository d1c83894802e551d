"""The HTTP API (`sendgate api`) over real HTTP, with a real broker and worker: API keys, each
outcome's status and body, an Idempotency-Key retry answered with its first decision and
delivered once, cancel and release seen by GET, `undecided` and then GET, rate limiting."""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.request
from pathlib import Path

import orjson
import pytest

from harness import DEADLINE_S, ev, publish, read_topic

from sendgate.streams.api.keys import add_api_key
from sendgate.streams.kafka import ensure_topics
from sendgate.streams.local.broker import free_port
from sendgate.streams.local.process import ApiProcess

PROBLEM = "application/problem+json"


class Http:
    def __init__(self, url: str, key: str | None) -> None:
        self.url, self.key = url, key

    def __call__(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        key: str | None = "",
        headers: dict | None = None,
    ) -> tuple[int, dict, dict]:
        key = self.key if key == "" else key
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={
                **({"Authorization": f"Bearer {key}"} if key else {}),
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, head, raw = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            status, head, raw = exc.code, dict(exc.headers), exc.read()
        return status, {k.lower(): v for k, v in head.items()}, orjson.loads(raw)

    def until(self, path: str, pred, timeout: float = DEADLINE_S) -> dict:
        """GET `path` until `pred(status, body)` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            status, _, doc = self("GET", path)
            if pred(status, doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"deadline: GET {path} is {status} {doc}")
            time.sleep(0.1)  # poll interval


@pytest.fixture
def apis(tmp_path):
    started: list[ApiProcess] = []

    def start(settings) -> ApiProcess:
        api = ApiProcess(settings, tmp_path / f"api-{len(started)}.log", free_port()).start()
        started.append(api)
        return api.wait_ready(60)

    yield start
    for api in started:
        api.stop()
        print(f"--- {api.log_path.name} (tail) ---\n{api.log_tail(3000)}")


def topics_of_a_worker(settings) -> None:
    """The topics a worker made before it stopped: the API, a producer, creates none."""
    asyncio.run(ensure_topics(settings, [settings.topic("events"), settings.topic("decisions")]))


def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.toml"
    # young senders (no sender_profile): one recipient free, then one every 60 s, none past 100 s
    path.write_text("risky_free_recipients = 1\npace_interval_s = 30.0\nmax_delay_s = 100\n")
    return str(path)


def now_ms() -> int:
    return int(time.time() * 1000)


def send(userkey: str, text: str = "Our winter sale starts today: 20% off everything", **extra) -> dict:
    return {"sender": "shop-sms", "userkey": userkey, "network": "sms", "text": text, **extra}


def test_each_outcome_over_http(settings, workers, apis, tmp_path):
    settings = settings.with_(policy_file=policy(tmp_path))
    shop_key = add_api_key(settings.keyring_file, "shop")
    rival_key = add_api_key(settings.keyring_file, "rival")
    workers.start(settings)
    api = apis(settings)
    http, rival = Http(api.url, shop_key), Http(api.url, rival_key)

    # who: no key, a wrong key
    for key in (None, shop_key + "x"):
        status, head, doc = http("POST", "/v1/messages", send("u1"), key=key)
        assert (status, head["content-type"], doc["status"]) == (401, PROBLEM, 401), doc
        assert head["www-authenticate"].startswith("Bearer")

    # no consent yet: rejected, as a problem that says what to do
    status, head, doc = http("POST", "/v1/messages", send("u0"))
    assert (status, head["content-type"], doc["outcome"], doc["reason"]) == (
        403,
        PROBLEM,
        "rejected",
        "no_conversation",
    ), doc
    assert doc["type"] == "urn:sendgate:problem:no_conversation" and doc["title"] and doc["decision_id"]
    assert "consent" in doc["detail"] or "opt" in doc["detail"], doc["detail"]

    # bad input: the field is named, never a traceback
    status, head, doc = http("POST", "/v1/messages", {"sender": "s", "userkey": "u", "network": "sms"})
    assert (status, head["content-type"]) == (422, PROBLEM) and "'text'" in doc["detail"], doc
    status, _, doc = http("POST", "/v1/messages", send("u1", network="S M S"))
    assert status == 422 and "'network'" in doc["detail"], doc
    status, _, doc = http("POST", "/v1/messages", {**send("u1"), "app": "rival"})
    assert status == 422 and doc["field"] == "app", doc
    status, _, doc = http("POST", "/v1/messages", b"{not json")
    assert status == 400 and doc["type"] == "urn:sendgate:problem:not_json", doc
    status, _, doc = http("POST", "/v1/messages", send("u1", text="x" * 70_000))
    assert status == 413, doc

    publish(settings, [ev("app_policy", event_id="grant", app="shop", unrestricted=True, ts=now_ms())])

    # accepted: 201; a retry with its Idempotency-Key gets the same decision, and it is delivered once
    first = http("POST", "/v1/messages", send("u1"), headers={"Idempotency-Key": "k1"})
    assert (first[0], first[2]["outcome"], first[2]["request_id"]) == (201, "accepted", "k1"), first
    again = http("POST", "/v1/messages", send("u1"), headers={"Idempotency-Key": "k1"})
    assert (again[0], again[2]["decision_id"]) == (201, first[2]["decision_id"]), again
    deliveries = [d for d in read_topic(settings, settings.topic("deliveries.sms")) if d["request_id"] == "k1"]
    assert len(deliveries) == 1, deliveries
    # the same key for another message: refused, 409
    status, head, doc = http(
        "POST", "/v1/messages", send("u1", text="Another message"), headers={"Idempotency-Key": "k1"}
    )
    assert (status, head["content-type"], doc["reason"]) == (409, PROBLEM, "request_id_reused"), doc

    # the same text to a second user: delayed, 202 with deliver_at; a third: past the pacing limit, 429
    status, head, delayed = http("POST", "/v1/messages", send("u2"), headers={"Idempotency-Key": "k2"})
    assert (status, delayed["outcome"], delayed["reason"]) == (202, "delayed", "burst_paced"), delayed
    assert delayed["deliver_at"] > now_ms() and head["location"] == "/v1/messages/k2"
    status, head, doc = http("POST", "/v1/messages", send("u3"))
    assert (status, doc["outcome"], doc["reason"]) == (429, "rejected", "burst_limit"), doc
    assert int(head["retry-after"]) == doc["retry_after_s"] > 0

    # another app's key sees nothing of it and cancels nothing
    assert rival("GET", "/v1/messages/k2")[0] == 404
    assert rival("DELETE", "/v1/messages/k2")[0] == 404

    # cancel the delayed one; GET tells its story
    status, _, doc = http("DELETE", "/v1/messages/k2")
    assert (status, doc["outcome"], doc["reason"]) == (200, "cancelled", "cancelled_by_app"), doc
    status, _, doc = http("GET", "/v1/messages/k2")
    assert (status, doc["outcome"], [d["outcome"] for d in doc["decisions"]]) == (
        200,
        "cancelled",
        ["delayed", "cancelled"],
    ), doc
    assert http("DELETE", "/v1/messages/k2")[0] == 409  # no longer pending

    # the app's own rights: an opt-out stops what follows; an opt-in needs its evidence
    assert http("POST", "/v1/opt-outs", {"userkey": "u6", "source": "support call"})[0] == 202
    status, _, doc = http("POST", "/v1/messages", send("u6", text="Your parcel is on its way"))
    assert (status, doc["reason"]) == (403, "opted_out"), doc
    status, _, doc = http("POST", "/v1/opt-ins", {"userkey": "u7"})
    assert status == 422 and doc["field"] == "source", doc

    # a delayed request released when its time comes (a tick moves the app's clock past it)
    other = "Reminder: your appointment is tomorrow at 10"
    assert http("POST", "/v1/messages", send("u4", text=other))[0] == 201
    status, _, held = http("POST", "/v1/messages", send("u5", text=other), headers={"Idempotency-Key": "k5"})
    assert (status, held["outcome"]) == (202, "delayed"), held
    publish(settings, [ev("tick", app="shop", ts=held["deliver_at"] + 1000)])
    doc = http.until("/v1/messages/k5", lambda s, d: s == 200 and d["outcome"] == "released")
    assert [d["outcome"] for d in doc["decisions"]] == ["delayed", "released"]

    # its OpenAPI description
    status, _, doc = http("GET", "/openapi.json", key=None)
    assert status == 200 and {"/v1/messages", "/v1/messages/{request_id}", "/v1/opt-ins"} <= set(doc["paths"])


def test_undecided_then_get(settings, workers, apis):
    """No worker yet: the POST answers `undecided` with where to ask; once a worker decides, GET has it."""
    settings = settings.with_(api_wait_s=0.5)
    key = add_api_key(settings.keyring_file, "shop")
    topics_of_a_worker(settings)
    http = Http(apis(settings).url, key)
    status, head, doc = http("POST", "/v1/messages", send("u1"), headers={"Idempotency-Key": "late"})
    assert (status, doc["outcome"], doc["status_url"], head["location"]) == (
        202,
        "undecided",
        "/v1/messages/late",
        "/v1/messages/late",
    ), doc
    status, _, doc = http("GET", "/v1/messages/late")
    assert (status, doc["outcome"], doc["decisions"]) == (200, "undecided", []), doc
    workers.start(settings)
    doc = http.until("/v1/messages/late", lambda s, d: s == 200 and d["decisions"])
    assert [(d["outcome"], d["reason"]) for d in doc["decisions"]] == [("rejected", "no_conversation")]


def test_each_key_is_rate_limited(settings, apis):
    settings = settings.with_(api_rate=0.2, api_burst=3)
    key, other = add_api_key(settings.keyring_file, "shop"), add_api_key(settings.keyring_file, "rival")
    topics_of_a_worker(settings)
    http = Http(apis(settings).url, key)
    assert [http("GET", "/v1/messages/r1")[0] for _ in range(3)] == [404, 404, 404]
    status, head, doc = http("GET", "/v1/messages/r1")
    assert (status, head["content-type"], doc["type"]) == (429, PROBLEM, "urn:sendgate:problem:rate_limited"), doc
    assert int(head["retry-after"]) == doc["retry_after_s"] >= 1
    assert http("GET", "/v1/messages/r1", key=other)[0] == 404  # each key its own bucket


class Receiver:
    """An app's webhook endpoint: records every POST; answers 500 to the first (a retry must follow)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.calls) == 1 else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_webhook_receives_the_release_signed(settings, workers, apis, tmp_path, monkeypatch):
    settings = settings.with_(policy_file=policy(tmp_path))
    receiver = Receiver()
    monkeypatch.setenv("SHOP_HOOK_SECRET", "whsec-0123456789abcdef")  # the API process inherits it
    key = add_api_key(settings.keyring_file, "shop", receiver.url, "SHOP_HOOK_SECRET")
    workers.start(settings)
    http = Http(apis(settings).url, key)
    publish(settings, [ev("app_policy", event_id="grant", app="shop", unrestricted=True, ts=now_ms())])
    assert http("POST", "/v1/messages", send("u1"))[0] == 201
    status, _, held = http("POST", "/v1/messages", send("u2"), headers={"Idempotency-Key": "k2"})
    assert (status, held["outcome"]) == (202, "delayed"), held
    assert receiver.calls == []  # first answers are not pushed: the POST returned them
    publish(settings, [ev("tick", app="shop", ts=held["deliver_at"] + 1000)])
    deadline = time.monotonic() + DEADLINE_S
    while len(receiver.calls) < 2:  # the first attempt fails (500): the release comes again
        assert time.monotonic() < deadline, receiver.calls
        time.sleep(0.1)  # poll interval
    try:
        for headers, body in receiver.calls[:2]:
            doc = orjson.loads(body)
            assert (doc["request_id"], doc["outcome"]) == ("k2", "released"), doc
            assert headers["sendgate-decision-id"] == doc["decision_id"]
            t, v1 = (part.split("=", 1)[1] for part in headers["sendgate-signature"].split(","))
            expected = hmac.digest(b"whsec-0123456789abcdef", t.encode() + b"." + body, "sha256").hex()
            assert hmac.compare_digest(v1, expected) and abs(int(t) - time.time()) < 300
    finally:
        receiver.server.shutdown()


def test_api_processes_side_by_side_share_nothing(settings, workers, apis):
    """A send posted to one API process is answered there, and another process's GET has it too:
    each reads every decision itself."""
    key = add_api_key(settings.keyring_file, "shop")
    workers.start(settings)
    one, two = Http(apis(settings).url, key), Http(apis(settings).url, key)
    status, _, doc = one("POST", "/v1/messages", send("u1"), headers={"Idempotency-Key": "both"})
    assert (status, doc["reason"]) == (403, "no_conversation"), doc
    doc = two.until("/v1/messages/both", lambda s, d: s == 200)  # the other reads it in its own time
    assert [d["decision_id"] for d in doc["decisions"]] == ["shop:both:rejected:no_conversation"]
