"""Read-only inspection for operators, on Faust's web server.

    GET /sendgate/userkeys/{app}/{userkey}[?sender=S]   consent state, and why
    GET /sendgate/senders/{app}/{sender}[?ts=MS]         profile, risk, clusters, pending requests
    POST /sendgate/check/{app}                           a campaign pre-flight (`sendgate check`)

Every row of an app lives on the partition of the app's events, so a request is answered by the
worker that holds that partition: the partition comes from state (the apps table), never from
the key, because producers' partitioners differ. Answers are JSON; unknown keys give 404.

They show personal data (consent state, pending userkeys) and `check` decides up to 5,000 sends
on the event loop, so they answer only an operator: `Authorization: Bearer <SENDGATE_OPERATOR_TOKEN>`.
Without a token set they answer on a loopback address only (`OperatorDoor`).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from sendgate.models.burst import SenderState
from sendgate.models.categories import ALL, names
from sendgate.models.consent import AppGrant, Conversation, Userkey
from sendgate.models.events import InvalidEvent, validate
from sendgate.models.gate import (
    CLUSTERS,
    CONVERSATIONS,
    GRANTS,
    PENDING,
    SCHEDULES,
    SENDERS,
    SKETCHES,
    USERKEYS,
    Gate,
    OverlayStore,
    due_entries,
    key,
)
from sendgate.models.pending import PendingRequest, ReleaseSchedule
from sendgate.models.reputation import SIGNALS

from .faust_internals import route_to_owner
from .checkpoint import STATE, CheckpointStore


class OperatorDoor:
    """Who may use the inspection views: the bearer of the operator token; with no token set,
    anyone, but only while the web port is bound to a loopback address."""

    def __init__(self, token: str | None, bind: str) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self.bind = bind
        self.open_locally = token is None and _loopback(bind)

    def refusal(self, request: Request) -> tuple[int, str] | None:
        """(status, why) when `request` may not inspect, else None."""
        if self._expected is None:
            if self.open_locally:
                return None
            return 403, (
                f"inspection is off: the web port is bound to {self.bind}, a non-loopback address, and "
                f"SENDGATE_OPERATOR_TOKEN is not set; set it and send Authorization: Bearer <token>"
            )
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return 401, "this view needs the operator token: Authorization: Bearer <SENDGATE_OPERATOR_TOKEN>"
        return None

    def allows(self, request: Request) -> bool:
        return self.refusal(request) is None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def register_views(faust_app: faust.App, gate: Gate, store: CheckpointStore, door: OperatorDoor) -> None:
    read = store.read

    def error(view: View, status: int, message: str) -> Response:
        return view.json({"error": message}, status=status)

    async def owner_answer(view: View, request: Request, app_name: str) -> Response | None:
        """The owner's answer when another worker holds the app, a 404 for an unknown app, or None:
        answer here (or a refusal: `door`)."""
        refused = door.refusal(request)
        if refused is not None:
            return error(view, *refused)
        partition = store.home_of(app_name)
        if partition is None:
            return error(view, 404, f"no state for app {app_name!r}: no event of it has been decided")
        return await route_to_owner(faust_app, STATE, partition, view.web, request)

    class OwnedView(View):
        """Answered by the worker that owns the app's partition (forwarded there if not this one)."""

        async def get(self, request: Request, app_name: str, **path: str) -> Response:
            answer = await owner_answer(self, request, app_name)
            return self.local(request, app_name, **path) if answer is None else answer

    @faust_app.page("/sendgate/userkeys/{app_name}/{userkey}")
    class UserkeyView(OwnedView):
        def local(self, request: Request, app_name: str, userkey: str) -> Response:
            stored = gate.stored_userkey(userkey)
            raw = read(USERKEYS, key(app_name, stored))
            sender = request.query.get("sender")
            conv_raw = read(CONVERSATIONS, key(app_name, sender, stored)) if sender else None
            if raw is None and conv_raw is None:
                return error(
                    self,
                    404,
                    f"no consent state for userkey {userkey!r} in app {app_name!r}"
                    + (f" and sender {sender!r}" if sender else ""),
                )
            user = Userkey.from_bytes(raw)
            grant = AppGrant.from_bytes(read(GRANTS, key(app_name)))
            body: dict[str, Any] = {
                "app": app_name,
                "userkey": userkey,
                "opted_out": user.opted_out,
                "opted_in": user.opted_in,
                "changed_ts": user.changed_ts or None,
                "how": user.how or None,
                "app_unrestricted": grant.unrestricted,
                "grant_since_ts": grant.since_ts or None,
            }
            if sender:
                conv = Conversation.from_bytes(conv_raw)
                body["conversation"] = {
                    "sender": sender,
                    "exists": conv.exists,
                    "first_ts": conv.first_ts or None,
                    "last_ts": conv.last_ts or None,
                    "recent_inbound_ids": conv.inbound_ids,
                }
            stopped = "nothing may be sent" if user.stopped == ALL else f"no {' or '.join(names(user.stopped))} message"
            body["why"] = (
                f"opted out: {stopped}"
                if user.opted_out
                else "opted in to the app"
                if user.opted_in
                else "no app-wide consent; a sender may message it only after it wrote to that sender"
                + (" (the app holds an unrestricted grant)" if grant.unrestricted else "")
            )
            return self.json(body)

    @faust_app.page("/sendgate/senders/{app_name}/{sender}")
    class SenderView(OwnedView):
        def local(self, request: Request, app_name: str, sender: str) -> Response:
            raw = read(SENDERS, key(app_name, sender))
            if raw is None:
                return error(self, 404, f"no state for sender {sender!r} in app {app_name!r}")
            try:
                at = int(request.query.get("ts") or time.time() * 1000)
            except ValueError:
                return error(self, 400, "query parameter ts must be epoch milliseconds")
            state = SenderState.from_rows(
                raw,
                lambda cid: read(CLUSTERS, key(app_name, sender, cid)),
                lambda cid: read(SKETCHES, key(app_name, sender, cid)),
                gate.policy.num_perm,
            )
            return self.json(
                {
                    "app": app_name,
                    "sender": sender,
                    "registered_ts": state.registered_ts,
                    "conversing_userkeys": state.conversing,
                    "risk_at": at,
                    "risk": state.risk(at, gate.policy),
                    "reputation": {
                        "score": state.reputation.effect(at, gate.policy),
                        "exact": round(state.reputation.now(at, gate.policy), 4),
                        "reasons": state.reputation.reasons(),
                        "signals": dict(zip(SIGNALS, state.reputation.counts)),
                        "last_signal_ts": state.reputation.at or None,
                    },
                    "clusters": [
                        {
                            "cluster_id": c.cluster_id,
                            "recipients": c.count,
                            "paced": c.paced,
                            "window_start": c.window_start,
                            "next_slot": c.next_slot,
                            "last_ts": c.last_ts,
                        }
                        for c in state.clusters
                    ],
                    "pending": _pending_of(read, app_name, sender),
                }
            )

    @faust_app.page("/sendgate/check/{app_name}")
    class CheckView(View):
        async def post(self, request: Request, app_name: str) -> Response:
            refused = door.refusal(request)
            if refused is not None:
                return error(self, *refused)
            partition = store.home_of(app_name)  # an app no worker has seen yet is answered here
            answer = None if partition is None else await route_to_owner(faust_app, STATE, partition, self.web, request)
            if answer is not None:
                return answer
            try:
                body = orjson.loads(await request.read())
                return self.json(check_answer(gate, read, store.junk_of(app_name), app_name, body))
            except (orjson.JSONDecodeError, ValueError) as exc:
                return error(self, 400, f"check: {exc}")


MAX_CHECK_RECIPIENTS = 5_000  # decided in the event loop, like a batch: ~0.1-0.5 ms a recipient


def check_answer(gate: Gate, read: Callable[[str, bytes], bytes | None], junk: Any, app_name: str, body: Any) -> dict:
    """The pre-flight of a campaign described by a /sendgate/check body; ValueError says what is
    wrong with the body."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    userkeys, count = body.get("recipients"), body.get("count")
    if type(count) is int and count > MAX_CHECK_RECIPIENTS:  # before the list is built
        raise ValueError(f"at most {MAX_CHECK_RECIPIENTS} recipients per check, got {count}")
    if userkeys is None and type(count) is int and count > 0:
        userkeys = [f"new-recipient-{i}" for i in range(1, count + 1)]  # userkeys never seen
    if not isinstance(userkeys, list) or not userkeys:
        raise ValueError("give 'recipients' (a list of userkeys) or 'count' (a positive integer)")
    if len(userkeys) > MAX_CHECK_RECIPIENTS:
        raise ValueError(f"at most {MAX_CHECK_RECIPIENTS} recipients per check, got {len(userkeys)}")
    ts = body.get("ts")
    ts = int(time.time() * 1000) if ts is None else ts
    doc = {
        "type": "send",
        "request_id": "check",
        "app": app_name,
        "sender": body.get("sender"),
        "network": body.get("network", "sms"),
        "text": body.get("text"),
        "valid_for_s": body.get("valid_for_s"),
        "category": body.get("category"),
        "ts": ts,
    }
    try:
        sends = [validate({**doc, "userkey": userkey}, ts) for userkey in userkeys]
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from None
    first = sends[0]
    decided = gate.check(
        app_name,
        first.sender,
        first.text,
        [s.userkey for s in sends],
        first.ts,
        OverlayStore(read, junk),
        first.network,
        first.valid_for_s,
        first.category,
    )
    rows = [
        {
            "userkey": d.userkey,
            "outcome": d.outcome,
            "reason": d.reason,
            "deliver_at": d.deliver_at,
            "retry_after_s": d.retry_after_s,
            "detail": d.detail,
        }
        for d in decided
    ]
    now = [d for d in decided if d.outcome == "accepted"]
    paced = [d for d in decided if d.outcome == "delayed"]
    refused = [d for d in decided if d.outcome == "rejected"]
    return {
        "app": app_name,
        "sender": first.sender,
        "network": first.network,
        "ts": first.ts,
        "recipients": rows,
        "summary": {
            "now": len(now),
            "paced": len(paced),
            "refused": len(refused),
            "last_slot": max((d.deliver_at for d in paced), default=None),
            "refused_by_reason": dict(Counter(d.reason for d in refused)),
        },
    }


def _pending_of(read: Callable[[str, bytes], bytes | None], app_name: str, sender: str) -> list[dict]:
    """The sender's delayed requests, found through the app's release schedule (≤ 361 minutes)."""
    schedule = ReleaseSchedule.from_bytes(read(SCHEDULES, key(app_name)))
    found = []
    for minute in schedule.minutes:
        for deliver_at, request_id in due_entries(read, app_name, schedule, minute):
            raw = read(PENDING, key(app_name, request_id))
            if raw is None:
                continue
            held = PendingRequest.from_bytes(raw)
            if held.send.sender == sender:
                found.append(
                    {
                        "request_id": request_id,
                        "userkey": held.send.userkey,
                        "deliver_at": deliver_at,
                        "cluster_id": held.cluster_id,
                    }
                )
    return found
