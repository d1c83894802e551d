"""Fuzz the running HTTP API from its own OpenAPI description (schemathesis): whatever a client
sends, on every operation, the answer is never a 5xx. Real broker, worker and API process;
bounded: a few dozen examples an operation."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from harness import make_settings

from sendgate.streams.api.keys import add_api_key
from sendgate.streams.local.broker import free_port
from sendgate.streams.local.process import ApiProcess, WorkerProcess


@pytest.fixture(scope="module")
def running_api(bootstrap, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    # a short wait keeps the examples quick; a rate no fuzzer reaches keeps 429 out of the way
    settings = make_settings(bootstrap, tmp / "worker", api_wait_s=0.3, api_rate=10_000.0, api_burst=10_000)
    key = add_api_key(settings.keyring_file, "shop")
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    api = ApiProcess(settings, tmp / "api.log", free_port()).start()
    try:
        worker.wait_ready()
        api.wait_ready(60)
        yield api.url, key
    finally:
        api.stop()
        worker.stop()
        print(f"--- api.log (tail) ---\n{api.log_tail(3000)}")


def test_no_input_gets_a_server_error(running_api):
    url, key = running_api
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5, [op.label for op in operations]
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
        )
        def fuzz(case) -> None:
            # the app's key; generated headers (Idempotency-Key) as they come
            headers = {"Authorization": f"Bearer {key}", **(case.headers or {})}
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        fuzz()
