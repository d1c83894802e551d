"""Fixtures for tests against a real Kafka broker (see harness.py for the helpers)."""

from __future__ import annotations

import os

import pytest

from harness import Workers, make_settings
from sendgate.streams.local.broker import LocalKafka
from sendgate.streams.config import Settings


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bootstrap():
    """The broker: SENDGATE_BOOTSTRAP if set, else a local KRaft broker started for the session."""
    existing = os.environ.get("SENDGATE_BOOTSTRAP")
    if existing:
        yield existing
        return
    kafka = LocalKafka()
    kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        kafka.close()


@pytest.fixture
def settings(bootstrap, tmp_path) -> Settings:
    """Settings with topics, group and store of this test alone."""
    return make_settings(bootstrap, tmp_path / "worker")


@pytest.fixture
def workers(tmp_path):
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def worker(workers, settings):
    return workers.start(settings)
