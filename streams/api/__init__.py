"""The app's front door: an HTTP API that answers each send with its decision (docs/client.md, HTTP API).

An app holds an API key (`[[api_keys]]` of the keyring, by its SHA-256) instead of Kafka
credentials and a signing key. The API publishes what the app says signed with the keyring's
`gateway` key (a front door that authenticates apps itself: docs/security-and-privacy.md, Sources) and waits for the
decision on its `DecisionBook`, positioned before the server accepts a request. Each API process
reads every decision on its own, so any number may run side by side without shared state; what
one process does not hold (a request older than its start or its memory) a retried POST with the
same Idempotency-Key answers: the worker gives a retried request_id its first decision again.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sendgate.models.decisions import Decision
from sendgate.models.events import InvalidEvent
from sendgate.models.sources import GATEWAY, KeyringError

from ..client import Publisher
from ..client.book import NOT_PENDING, DecisionBook, answers_cancel, answers_send
from ..config import ConfigError, Settings
from .webhooks import WebhookDispatcher, hooks_of

log = logging.getLogger("sendgate.api")

SEND_FIELDS = ("sender", "userkey", "network", "text", "reply_to", "valid_for_s", "category")
CONSENT_FIELDS = {
    "opt_out": ("userkey", "source"),
    "opt_in": ("userkey", "source", "categories", "method", "consent_text", "consent_version", "location"),
}
PROBLEM = "application/problem+json"
FINAL = ("accepted", "rejected", "released", "cancelled")  # nothing can be cancelled after these


class Problem(Exception):
    """An RFC 9457 problem: the answer to a request that did not go through, saying what to do."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str, headers: dict | None = None, extra: dict | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers, self.extra = headers or {}, extra or {}

    def response(self) -> JSONResponse:
        # the problem's own members win: a decision's `detail` is already part of the problem's
        body = {
            **self.extra,
            "type": f"urn:sendgate:problem:{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return JSONResponse(body, self.status, headers=self.headers, media_type=PROBLEM)


class TokenBuckets:
    """Each API key's token bucket: `rate` requests a second, `burst` at once. In process: N API
    processes behind a balancer allow up to N times the rate (documented in docs/client.md)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # keyed by API key digest: as many as the keyring has

    def take(self, who: str, now: float | None = None) -> float:
        """0 when a request may go now (a token is spent), else the seconds until one may."""
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._buckets[who] = (tokens - 1, now)
            return 0.0
        self._buckets[who] = (tokens, now)
        return (1 - tokens) / self.rate if self.rate > 0 else math.inf


class Contained:
    """ASGI middleware: a failure is answered with a 500 problem, and logged with the path and the
    exception's type only (Starlette's own handler logs the traceback, whose last line is the
    exception's message: it could carry a userkey or a text)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # the lifespan's failure (no broker) is uvicorn's to report, and stop on
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("%s %s failed: %s", scope.get("method"), scope.get("path"), type(exc).__name__)
            if not started:
                await Problem(
                    500,
                    "internal",
                    "Internal error",
                    "the API could not handle this request; it is safe to retry it with the same Idempotency-Key",
                ).response()(scope, receive, send)


def _inlined(name: str, drop: tuple[str, ...]) -> dict:
    """The contract's JSON Schema of an event (models/schemas/), its references inlined (OpenAPI
    keeps no sibling files), without the fields the API sets itself."""
    folder = resources.files("sendgate.models") / "schemas"
    common = json.loads((folder / "common.json").read_text())["$defs"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                return resolve({**common[ref.rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: resolve(v) for k, v in node.items() if k not in ("$schema", "$id", "$comment")}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    schema = resolve(json.loads((folder / f"{name}.json").read_text()))
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in drop}
    schema["required"] = [k for k in schema["required"] if k not in drop]
    schema["additionalProperties"] = False
    return schema


def _body_doc(name: str, drop: tuple[str, ...]) -> dict:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _inlined(name, drop)}}},
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                "description": "becomes the request's id; a retry with it gets the first answer again",
            }
        ],
    }


def _answer(d: Decision) -> dict:
    doc = {
        "request_id": d.request_id,
        "outcome": d.outcome,
        "reason": d.reason,
        "detail": d.detail,
        "decision_id": d.decision_id,
        "ts": d.ts,
    }
    if d.deliver_at is not None:
        doc["deliver_at"] = d.deliver_at
    if d.retry_after_s is not None:
        doc["retry_after_s"] = d.retry_after_s
    return doc


def _then(detail: str, advice: str) -> str:
    return f"{detail.rstrip()}{'' if detail.rstrip().endswith('.') else '.'} {advice}"


def _rejected(d: Decision, status_url: str) -> Problem:
    """A rejected send as a problem: 429 when retrying later can succeed (pacing), 409 for an id
    reused for another request, 403 when the policy refuses it (consent), each saying what to do."""
    doc = {**_answer(d), "status_url": status_url}
    if d.retry_after_s is not None:
        # the same Idempotency-Key would get this first answer again (the worker's request memory)
        advice = f"Retry after {d.retry_after_s} s (Retry-After) with a new Idempotency-Key."
        return Problem(
            429,
            d.reason,
            "Rejected for now: retry later",
            _then(d.detail, advice),
            {"Retry-After": str(d.retry_after_s)},
            doc,
        )
    if d.reason == "request_id_reused":
        return Problem(
            409,
            d.reason,
            "Idempotency-Key already used for another message",
            _then(d.detail, "Use a new Idempotency-Key for a new message."),
            extra=doc,
        )
    return Problem(
        403,
        d.reason,
        "Rejected by the gate's policy",
        _then(d.detail, "Sending it again will get the same answer until that changes."),
        extra=doc,
    )


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    keyring = settings.keyring()
    if keyring is None:
        raise ConfigError(
            "the API needs SENDGATE_KEYRING: its [[api_keys]] say which app a key belongs to, "
            "and its gateway key signs what the apps say (SENDGATE_AUTH=off does not apply to it)"
        )
    if not keyring.api_keys:
        raise ConfigError(
            f"the keyring {settings.keyring_file} has no [[api_keys]]: add one with `sendgate keys add-api-key APP`"
        )
    try:
        gateway = keyring.signing_key(GATEWAY, int(time.time() * 1000))
    except KeyringError as exc:
        raise ConfigError(f"SENDGATE_KEYRING: {exc} (the API signs what apps say with it)") from None
    buckets = TokenBuckets(settings.api_rate, settings.api_burst)
    hooks = hooks_of(keyring)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # each send waits for its ack before its answer can come: linger as short as the worker's
            app.state.publisher = await stack.enter_async_context(
                Publisher(settings, key=gateway, linger_ms=settings.linger_ms)
            )
            app.state.book = await stack.enter_async_context(DecisionBook(settings, settings.api_memory))
            app.state.webhooks = await stack.enter_async_context(WebhookDispatcher(settings, hooks)) if hooks else None
            yield

    app = FastAPI(
        title="sendgate",
        version="1",
        lifespan=lifespan,
        description="Ask to send a message and get the gate's decision (docs/client.md, HTTP API). "
        "Authorization: Bearer <API key>.",
    )

    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_problem(_: Request, exc: HTTPException) -> JSONResponse:
        return Problem(
            exc.status_code, "http", str(exc.detail), f"{exc.detail}: see /docs for the API", dict(exc.headers or {})
        ).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return Problem(422, "invalid", "Invalid request", "; ".join(errors)).response()

    def caller(request: Request) -> str:
        """The app of the request's API key; a key over its rate gets 429."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise Problem(
                401,
                "unauthenticated",
                "API key missing",
                "send your API key as 'Authorization: Bearer <key>' (`sendgate keys add-api-key APP` makes one)",
                {"WWW-Authenticate": "Bearer"},
            )
        app_id = keyring.api_app(key.strip())
        if app_id is None:
            raise Problem(
                401,
                "unauthenticated",
                "API key not valid",
                "this API key is not in the keyring; check it, or ask for a new one",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        wait = buckets.take(app_id + "\x1f" + key)
        if wait:
            seconds = math.ceil(wait)
            raise Problem(
                429,
                "rate_limited",
                "Too many requests",
                f"this API key may make {settings.api_rate:g} "
                f"requests a second ({settings.api_burst} at once); retry after {seconds} s",
                {"Retry-After": str(seconds)},
                {"retry_after_s": seconds},
            )
        return app_id

    async def body(request: Request, fields: tuple[str, ...]) -> dict:
        """The request's JSON object, at most SENDGATE_API_MAX_BODY bytes, with only `fields`."""
        limit = settings.api_max_body
        too_big = Problem(413, "too_large", "Body too large", f"the body may be at most {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_big
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "not_json", "Body is not JSON", f"the body must be a JSON object: {exc}") from None
        if not isinstance(doc, dict):
            raise Problem(422, "invalid", "Invalid body", f"the body must be a JSON object, got {type(doc).__name__}")
        extra = sorted(set(doc) - set(fields))
        if extra:
            raise Problem(
                422,
                "invalid",
                "Invalid body",
                f"field(s) {', '.join(map(repr, extra))} not accepted "
                f"here: the fields are {', '.join(fields)} (the app is your API key's, the request_id the "
                f"Idempotency-Key header, the time the API's)",
                extra={"field": extra[0]},
            )
        return doc

    def request_id(request: Request) -> str:
        return request.headers.get("idempotency-key") or uuid.uuid4().hex

    def invalid(exc: InvalidEvent) -> Problem:
        message = (
            str(exc)
            .replace("field 'request_id'", "header Idempotency-Key")
            .replace("field 'event_id'", "header Idempotency-Key")
        )
        return Problem(422, "invalid", "Invalid message", message)

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        state = request.app.state
        ready = state.book.healthy and (state.webhooks is None or state.webhooks.ready)
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    @app.post(
        "/v1/messages",
        status_code=201,
        openapi_extra=_body_doc("send", ("type", "app", "request_id", "ts")),
        responses={
            202: {"description": "delayed (deliver_at), or undecided in time (status_url)"},
            401: {},
            403: {},
            409: {},
            413: {},
            422: {},
            429: {},
        },
    )
    async def post_message(request: Request) -> JSONResponse:
        """Ask to send a message; the answer is the gate's decision (or `undecided` after SENDGATE_API_WAIT_S)."""
        app_id = caller(request)
        fields = await body(request, SEND_FIELDS)
        rid = request_id(request)
        send = {"type": "send", "request_id": rid, "app": app_id, **fields}
        status_url = f"/v1/messages/{rid}"
        state = request.app.state
        try:
            d = await state.book.ask(
                lambda: state.publisher.publish(send), app_id, rid, answers_send, settings.api_wait_s
            )
        except InvalidEvent as exc:
            raise invalid(exc) from None
        if d is None:
            return JSONResponse(
                {
                    "request_id": rid,
                    "outcome": "undecided",
                    "status_url": status_url,
                    "detail": f"no decision within {settings.api_wait_s:g} s; GET {status_url} for it",
                },
                202,
                headers={"Location": status_url},
            )
        if d.outcome == "rejected":
            raise _rejected(d, status_url)
        return JSONResponse(
            {**_answer(d), "status_url": status_url},
            201 if d.outcome == "accepted" else 202,
            headers={"Location": status_url},
        )

    def history(request: Request, app_id: str, rid: str) -> list[Decision]:
        book: DecisionBook = request.app.state.book
        seen = book.history(app_id, rid)
        if seen is None:  # also another app's request: whose it is stays unsaid
            raise Problem(
                404,
                "unknown_request",
                "No decision known for this request",
                f"this API process has no decision of request {rid!r} of your app: it keeps those it read "
                f"since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(book.since_ms / 1000))}, "
                f"for the last {book.size} requests. For an older one, POST it again with the same "
                f"Idempotency-Key: within the gate's request memory (24 h) you get its first answer again, "
                f"and it is not sent twice.",
            )
        return seen

    @app.get("/v1/messages/{request_id}", responses={401: {}, 404: {}, 429: {}})
    async def get_message(request_id: str, request: Request) -> JSONResponse:
        """Everything decided for the request so far: its answer, then released, cancelled or expired
        (`undecided` with no decisions: asked through this process, not decided yet)."""
        app_id = caller(request)
        seen = history(request, app_id, request_id)
        current = [d for d in seen if d.reason != NOT_PENDING][-1:] or seen[-1:]
        # asked through this process and not decided yet: undecided, not unknown
        return JSONResponse(
            {
                "request_id": request_id,
                "outcome": current[0].outcome if current else "undecided",
                "decisions": [_answer(d) for d in seen],
            }
        )

    @app.delete("/v1/messages/{request_id}", responses={401: {}, 404: {}, 409: {}, 429: {}})
    async def cancel_message(request_id: str, request: Request) -> JSONResponse:
        """Cancel a delayed request before it goes out."""
        app_id = caller(request)
        seen = [d for d in history(request, app_id, request_id) if d.reason != NOT_PENDING]
        if seen and seen[-1].outcome in FINAL:
            raise Problem(
                409,
                "not_pending",
                "Not pending",
                f"request {request_id!r} is {seen[-1].outcome}; only a delayed request can be cancelled",
                extra=_answer(seen[-1]),
            )
        state = request.app.state
        cancel = {"type": "cancel", "request_id": request_id, "app": app_id}
        d = await state.book.ask(
            lambda: state.publisher.publish(cancel), app_id, request_id, answers_cancel, settings.api_wait_s
        )
        if d is None:
            return JSONResponse(
                {"request_id": request_id, "outcome": "undecided", "status_url": f"/v1/messages/{request_id}"}, 202
            )
        if d.outcome != "cancelled":
            raise Problem(409, "not_pending", "Not pending", d.detail, extra=_answer(d))
        return JSONResponse(_answer(d))

    async def consent(request: Request, kind: str) -> JSONResponse:
        app_id = caller(request)
        fields = await body(request, CONSENT_FIELDS[kind])
        if kind == "opt_in" and not fields.get("source"):  # the worker would dead-letter it (no_consent_evidence)
            raise Problem(
                422,
                "invalid",
                "Invalid body",
                "field 'source' is required: say where the user gave "
                "consent (a web form, a date), so that it can be proved",
                extra={"field": "source"},
            )
        event = {"type": kind, "event_id": request_id(request), "app": app_id, **fields}
        try:
            await request.app.state.publisher.publish(event)
        except InvalidEvent as exc:
            raise invalid(exc) from None
        return JSONResponse({"event_id": event["event_id"], "type": kind, "status": "recorded"}, 202)

    # an opt_in needs its evidence (`source`), required here as the worker requires it of an app
    opt_in_doc = _body_doc("opt_in", ("type", "app", "event_id", "ts"))
    opt_in_doc["requestBody"]["content"]["application/json"]["schema"]["required"].append("source")

    @app.post("/v1/opt-ins", status_code=202, openapi_extra=opt_in_doc, responses={401: {}, 413: {}, 422: {}, 429: {}})
    async def opt_in(request: Request) -> JSONResponse:
        """Record consent the app collected itself, with where it was given (`source`)."""
        return await consent(request, "opt_in")

    @app.post(
        "/v1/opt-outs",
        status_code=202,
        openapi_extra=_body_doc("opt_out", ("type", "app", "event_id", "ts")),
        responses={401: {}, 413: {}, 422: {}, 429: {}},
    )
    async def opt_out(request: Request) -> JSONResponse:
        """Record an opt-out the app heard of (a support call, a web form): nothing more goes to that user."""
        return await consent(request, "opt_out")

    app.add_middleware(Contained)
    return app
