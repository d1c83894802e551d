"""Decision ids are unique across apps, on a real broker.

Request ids are the app's own (every app has an `order-1`), so a decision id made of
`request_id:outcome:reason` alone collides across apps, and subscribers that drop duplicates by
decision_id (the client does by default) silently lose the second app's decision. The id is
`{app}:{request_id}:{outcome}:{reason}`, with `%` written `%25` and `:` written `%3A` in the
app, so that an app name containing ':' cannot forge another app's ids; deliveries carry the
decision's id.
"""

from __future__ import annotations

import asyncio
import time

from harness import DEADLINE_S, MIN, collect, decisions, ev, publish

from sendgate.streams.client import decisions as subscribe

# app -> how it is written in a decision id. "a:b" and "a%3Ab" must not collide either.
APPS = {"shop": "shop", "bank": "bank", "a:b": "a%3Ab", "a%3Ab": "a%253Ab"}
MARKERS = {app: f"end-{n}" for n, app in enumerate(APPS)}


def same_request_in_every_app(settings) -> None:
    """In each app: an inbound i1 from u1, the send `order-1` answering it, then a marker send with a
    request id of its own (each app lives on one partition, so its marker follows its `order-1`)."""
    t = int(time.time() * 1000) - 60 * MIN
    events = []
    for app, marker in MARKERS.items():
        common = dict(app=app, sender="s1", userkey="u1", network="sms")
        events += [
            ev("inbound", event_id="i1", text="Is my order shipped?", ts=t, **common),
            ev("send", request_id="order-1", text="Yes, it left today.", reply_to="i1", ts=t + 1000, **common),
            ev("send", request_id=marker, text="Anything else?", reply_to="i1", ts=t + 2000, **common),
        ]
    publish(settings, events)


def test_decision_ids_name_their_app_and_deliveries_carry_them(settings, worker):
    same_request_in_every_app(settings)
    got = decisions(settings, 2 * len(APPS))
    orders = {d["app"]: d for d in got if d["request_id"] == "order-1"}
    assert {app: (d["outcome"], d["reason"]) for app, d in orders.items()} == {
        app: ("accepted", "reply") for app in APPS
    }
    ids = {app: d["decision_id"] for app, d in orders.items()}
    assert ids == {app: f"{written}:order-1:accepted:reply" for app, written in APPS.items()}, (
        f"decision ids of order-1 per app: {ids}"
    )
    assert len({d["decision_id"] for d in got}) == len(got), sorted(d["decision_id"] for d in got)
    assert orders["shop"]["decision_id"] == "shop:order-1:accepted:reply"
    assert orders["a:b"]["decision_id"] == "a%3Ab:order-1:accepted:reply"

    deliveries = collect(settings, settings.topic("deliveries.sms"), lambda r: len(r) >= 2 * len(APPS))
    delivered = {d["app"]: d["decision_id"] for d in deliveries if d["request_id"] == "order-1"}
    assert delivered == ids, f"deliveries of order-1 carry {delivered}, their decisions {ids}"
    assert len({d["decision_id"] for d in deliveries}) == len(deliveries), sorted(d["decision_id"] for d in deliveries)


def test_deduplicating_subscriber_yields_the_same_request_id_of_every_app(settings, worker):
    same_request_in_every_app(settings)

    async def read() -> list:
        seen: list = []

        async def take() -> None:
            async for d in subscribe(settings, from_beginning=True):  # dedupe on, as by default
                seen.append(d)
                if set(MARKERS.values()) <= {x.request_id for x in seen}:
                    return

        await asyncio.wait_for(take(), DEADLINE_S)
        return seen

    seen = asyncio.run(read())
    orders = sorted(d.app for d in seen if d.request_id == "order-1")
    assert orders == sorted(APPS), (
        f"the client yielded order-1 of {orders} only, of {sorted(APPS)}: it dropped "
        f"the others as duplicates of {[d.decision_id for d in seen][:2]}"
    )
    assert len({d.decision_id for d in seen}) == len(seen) == 2 * len(APPS)
