"""topology.py: the broker URL Faust is given (the app, topics and tables on a broker:
tests/integration/test_kafka_*.py)."""

from __future__ import annotations

from sendgate.streams.worker.topology import faust_broker_url


def test_every_bootstrap_host_becomes_a_faust_broker_url():
    assert faust_broker_url("10.0.0.1:9092") == "kafka://10.0.0.1:9092"
    assert faust_broker_url(" a:9092, b:9093 ,") == "kafka://a:9092;kafka://b:9093"
