"""The sendgate domain: events, decisions, consent and burst rules. No Kafka, no asyncio."""
