"""The HTTP API's parts that need no broker: the token bucket, the OpenAPI body schemas taken from
the contract, API keys written to a keyring, and a failure answered without leaking what was asked."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from sendgate.models.sources import Keyring
from sendgate.streams.api import TokenBuckets, _inlined, build_app
from sendgate.streams.api.keys import add_api_key
from sendgate.streams.config import ConfigError, Settings
from sendgate.streams.local.keyring import write_local_keyring


def test_a_token_bucket_spends_its_burst_then_refills_at_its_rate():
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=100.0) == pytest.approx(0.5)  # the next token in 1/rate s
    assert buckets.take("other", now=100.0) == 0.0  # each key its own bucket
    assert buckets.take("k", now=100.5) == 0.0
    assert buckets.take("k", now=100.5) > 0


def test_the_body_schema_is_the_contracts_without_what_the_api_sets():
    schema = _inlined("send", ("type", "app", "request_id", "ts"))
    assert set(schema["properties"]) == {"sender", "userkey", "network", "text", "reply_to", "valid_for_s", "category"}
    assert schema["required"] == ["sender", "userkey", "network", "text"]
    assert schema["properties"]["text"]["maxLength"] == 10_000  # from common.json, inlined
    assert "$ref" not in repr(schema) and schema["additionalProperties"] is False


def test_an_api_key_is_printed_once_and_kept_as_its_digest(tmp_path):
    path = tmp_path / "keyring.toml"
    write_local_keyring(path)
    key = add_api_key(str(path), "shop")
    assert key not in path.read_text()
    assert Keyring.from_toml(str(path)).api_app(key) == "shop"
    with pytest.raises(ConfigError, match="field 'app'"):
        add_api_key(str(path), "")
    with pytest.raises(ConfigError, match="does not exist"):
        add_api_key(str(tmp_path / "none.toml"), "shop")


def test_the_api_refuses_to_start_without_api_keys(tmp_path):
    path = tmp_path / "keyring.toml"
    write_local_keyring(path)
    with pytest.raises(ConfigError, match="no \\[\\[api_keys\\]\\]"):
        build_app(Settings(keyring_file=str(path)))


def test_a_failure_is_a_problem_and_its_log_holds_no_request_data(tmp_path, caplog):
    path = tmp_path / "keyring.toml"
    write_local_keyring(path)
    key = add_api_key(str(path), "shop")
    # without its lifespan the app has no decisions reader: every read of one fails. The test
    # client raises what escapes the app, as uvicorn would log it with its traceback: nothing may.
    client = TestClient(build_app(Settings(keyring_file=str(path))))
    with caplog.at_level(logging.INFO):
        answer = client.get("/v1/messages/secret-userkey-in-id", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:sendgate:problem:internal"
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in logged] == ["GET /v1/messages/secret-userkey-in-id failed: AttributeError"]
    assert logged[0].exc_info is None  # no traceback, whose last line would be the exception's message
