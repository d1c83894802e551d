"""The userkey secret that built a group's state, kept beside it as a fingerprint.

With SENDGATE_USERKEY_SECRET the tables key userkeys by HMAC-SHA-256 under it. A worker started
with another secret (or none) would look every userkey up under another key and find none of the
earlier opt-outs: it would accept sends to users who said STOP. So the first worker of a group
writes a fingerprint of its secret (an HMAC of a fixed label, never the secret) to the compacted
topic `<group_id>-identity`, and every worker, replay and rebuild compares its own before it starts.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from aiokafka import AIOKafkaProducer

from .config import ConfigError, Settings
from .kafka import end_offsets, ensure_topics, partitions_of, read_log, start_client

SECRET_KEY = b"userkey_secret"
_LABEL = b"sendgate userkey secret fingerprint v1"


def identity_topic(settings: Settings) -> str:
    return f"{settings.group_id}-identity"


def fingerprint(secret: str | None) -> str:
    """What is stored of a secret: enough to tell two apart, useless to recover one (for a secret of
    at least 128 random bits, as docs/security-and-privacy.md asks)."""
    if not secret:
        return "none"
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).hexdigest()[:32]


async def stored_fingerprint(settings: Settings) -> str | None:
    topic = identity_topic(settings)
    await ensure_topics(settings, [topic], partitions=1, compact=True)
    await partitions_of(settings, topic, 60)
    found = None
    async for record in read_log(settings, topic, await end_offsets(settings, topic)):
        if record.key == SECRET_KEY and record.value:
            found = orjson.loads(record.value)["fingerprint"]
    return found


async def write_fingerprint(settings: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", **settings.kafka_options())
    await start_client(producer, settings)
    try:
        await producer.send_and_wait(
            identity_topic(settings),
            key=SECRET_KEY,
            partition=0,
            value=orjson.dumps({"fingerprint": fingerprint(settings.userkey_secret)}),
        )
    finally:
        await producer.stop()


async def check_userkey_secret(settings: Settings, who: str, adopt: bool = True) -> None:
    """Refuse (ConfigError) when the group's state was built under another userkey secret. A group
    with no fingerprint yet takes this one when `adopt` (a worker, a rebuild that writes state)."""
    stored = await stored_fingerprint(settings)
    ours = fingerprint(settings.userkey_secret)
    if stored is None:
        if adopt:
            await write_fingerprint(settings)
        return
    if stored != ours:
        built = "without a secret" if stored == "none" else "with another SENDGATE_USERKEY_SECRET"
        given = "none is set" if ours == "none" else "this one differs"
        raise ConfigError(
            f"{who}: the state of group {settings.group_id} was built {built}, and {given}: the tables key "
            f"userkeys by that secret, so this {who} would find none of the earlier opt-outs. Start it with the "
            f"secret that built the state; to change the secret, stop the workers and rebuild the state from the "
            f"log under the new one (`sendgate rebuild --new-userkey-secret`)"
        )
