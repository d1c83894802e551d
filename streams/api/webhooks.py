"""Later outcomes pushed: a request's release, cancellation or expiry POSTed to its app's webhook.

One consumer group (`<group_id>-webhooks`) over `<prefix>decisions`: every API process joins it,
so each partition's outcomes are delivered by one process at a time. A partition's offset is
committed only after each of its outcomes was answered 2xx: at least once (after a crash, or a
rebalance, one may come again), so the receiver drops repeats by `decision_id`. A failing webhook
is retried with exponential backoff (0.5 s doubling to 60 s) until it answers; meanwhile the
outcomes of this process's other partitions wait too (one at a time, in order).

Each POST is signed like Stripe's: header `Sendgate-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA-256 of "<t>.<body>" under the app's webhook secret>`; the receiver recomputes it and
refuses an old `t` (a replayed request).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import dataclass

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from sendgate.models.decisions import Decision
from sendgate.models.sources import Keyring

from ..config import ConfigError, Settings
from ..client import require_topic
from ..kafka import start_client, stop_reader

log = logging.getLogger("sendgate.api.webhooks")
LATER = ("released", "cancelled")  # what comes after the first answer (expired is cancelled/expired)
SIGNATURE_HEADER = "Sendgate-Signature"


def sign(secret: bytes, body: bytes, t: int) -> str:
    return f"t={t},v1=" + hmac.digest(secret, str(t).encode() + b"." + body, "sha256").hex()


@dataclass(frozen=True)
class Hook:
    url: str
    secret: bytes


def hooks_of(keyring: Keyring, env: dict | None = None) -> dict[str, Hook]:
    """app -> its webhook, from the keyring's [[api_keys]] (the first entry of an app that names one)."""
    env = os.environ if env is None else env
    hooks: dict[str, Hook] = {}
    for entry in keyring.api_keys.values():
        if entry.webhook_url and entry.app not in hooks:
            secret = env.get(entry.webhook_secret_env or "")
            if not secret:
                raise ConfigError(
                    f"the webhook of app {entry.app!r} is signed with the secret in "
                    f"{entry.webhook_secret_env}, which is not set"
                )
            hooks[entry.app] = Hook(entry.webhook_url, secret.encode())
    return hooks


class _Joined(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.event.set()


class WebhookDispatcher:
    def __init__(self, settings: Settings, hooks: dict[str, Hook]) -> None:
        self.settings, self.hooks = settings, hooks
        self.topic = settings.topic("decisions")
        # a new group starts at the end: outcomes decided before the first API ran are not pushed
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=f"{settings.group_id}-webhooks",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            **settings.kafka_options(),
        )
        self._joined = _Joined()
        self._task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def ready(self) -> bool:
        """Joined its group (so positioned: what is decided from now on is pushed) and running."""
        return self._joined.event.is_set() and self._task is not None and not self._task.done()

    async def __aenter__(self) -> "WebhookDispatcher":
        try:
            await require_topic(self.settings, self.topic, 30)  # the workers make it: the API creates none
            await start_client(self._consumer, self.settings)
        except BaseException:
            await self._consumer.stop()
            raise
        self._consumer.subscribe([self.topic], listener=self._joined)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run(), name="webhooks")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_reader(self._task, self._consumer)
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for m in messages:
                    d = Decision.from_dict(orjson.loads(m.value))
                    hook = self.hooks.get(d.app)
                    if hook is not None and d.outcome in LATER:
                        await self._deliver(hook, d)
            if batch:
                await self._consumer.commit()

    async def _deliver(self, hook: Hook, d: Decision) -> None:
        body = d.to_json()
        backoff = 0.5
        while True:
            t = int(time.time())
            try:
                async with self._http.post(
                    hook.url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(hook.secret, body, t),
                        "Sendgate-Decision-Id": d.decision_id,
                    },
                ) as answer:
                    if 200 <= answer.status < 300:
                        return
                    why = f"HTTP {answer.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                why = type(exc).__name__
            # the app and the decision id only: the decision itself holds a userkey
            log.warning("webhook of app %s: %s for %s; retry in %.1f s", d.app, why, d.decision_id, backoff)
            await asyncio.sleep(backoff)  # the backoff between attempts, not a wait for a result
            backoff = min(backoff * 2, 60.0)
