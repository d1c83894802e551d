"""Local development: a Kafka broker from Maven Central, worker processes, the demo."""
