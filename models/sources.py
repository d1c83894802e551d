"""Who may say what: signed records, keys and the rights of their roles.

Kafka's ACLs decide who may write to the events topic, but not what a record says: any producer
that may write could publish an `inbound` from a user who never wrote, or grant its own app
unrestricted outbound. So every record says who says it: header `sendgate-key` names a key of the
keyring, header `sendgate-sig` is the lowercase hex HMAC-SHA-256 of the record's value under that
key's secret, and the key's role bounds what it may say (`RIGHTS`). Any Kafka client can sign.

A key's validity (`not_before`, `not_after`) is judged in event time: the later of the record's
timestamp, the event's `ts` and its app's clock (which only moves forward), so a rotated or
revoked key decides history in a replay exactly as it did live, and a producer holding a revoked
key cannot backdate its records past an app's clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import events as ev
from .decisions import iso
from .policy import load_toml

KEY_HEADER = "sendgate-key"
SIG_HEADER = "sendgate-sig"
MIN_SECRET_BYTES = 16  # HMAC-SHA-256 keys shorter than this are guessable offline from one signed record

APP, NETWORK, OPERATOR, GATEWAY, WORKER = "app", "network", "operator", "gateway", "worker"
_APP_SAYS = frozenset({"send", "cancel", "opt_in", "opt_out"})
# What each role may say, and why:
RIGHTS: dict[str, frozenset[str]] = {
    # An app asks to send and cancels its own requests; it may record consent it collected itself
    # (a web form, a keyword on another channel) and must honour opt-outs it hears of (CTIA,
    # FCC 64.1200(a)(10)) -- for its own users only. It never says what a user wrote: that is
    # how consent is captured (seed 000), and an app that could say it could mint consent.
    APP: _APP_SAYS,
    # A trusted front door that authenticates apps itself: what any app may say, for any app.
    GATEWAY: _APP_SAYS,
    # The messaging networks' connectors see what users write, what was delivered, contact lists
    # and the junk button: the facts consent, reputation and the junk index are built from; and
    # where a user is (recipient_profile): an app that could say it could move its recipients out
    # of their quiet hours.
    NETWORK: frozenset({"inbound", "delivery_status", "contact", "junk_report", "recipient_profile"}),
    # The platform operator grants unrestricted outbound at its own discretion (seed 000), vouches
    # for a sender's age, and may say anything else (a correction, a tick).
    OPERATOR: frozenset(ev.EVENT_TYPES),
    # The worker appends its clock ticks, its automatic revocations of grants (it may take a
    # grant away, never give one) and the junk reports it shares with every partition (a
    # network's junk_report, decided first; an app cannot say them, or it could blacklist a rival's text).
    WORKER: frozenset({"tick", "app_policy", "junk_shared"}),
}
ROLES = tuple(RIGHTS)


class Unauthorized(ev.InvalidEvent):
    """A record whose source may not say it; dead-lettered as `unauthorized: <rule>: ...`."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"unauthorized: {rule}: {message}", ev.Refusal.UNAUTHORIZED)
        self.rule = rule


# The rules a record can break, for metrics and docs (each raised in exactly one place below).
RULES = (
    "unsigned",
    "unknown_key",
    "bad_signature",
    "key_not_valid_yet",
    "key_expired",
    "role",
    "other_app",
    "grants_only_revoked",
    "no_consent_evidence",
)


def signature(secret: bytes, value: bytes | None) -> str:
    """The `sendgate-sig` header of a record value (an empty value for a record with none)."""
    return hmac.digest(secret, value or b"", "sha256").hex()


@dataclass(frozen=True, slots=True)
class SigningKey:
    id: str
    role: str
    secret: bytes
    app: str | None = None  # the one app an `app` key speaks for
    not_before: int | None = None  # epoch ms, event time
    not_after: int | None = None

    def __repr__(self) -> str:  # never the secret, in logs or test reports
        return f"SigningKey(id={self.id!r}, role={self.role!r}, app={self.app!r})"

    def headers(self, value: bytes | None) -> list[tuple[str, bytes]]:
        """The two headers that sign `value` with this key (aiokafka's header form)."""
        return [(KEY_HEADER, self.id.encode()), (SIG_HEADER, signature(self.secret, value).encode())]

    def valid_at(self, at_ms: int) -> bool:
        return (self.not_before is None or at_ms >= self.not_before) and (
            self.not_after is None or at_ms <= self.not_after
        )


class KeyringError(ValueError):
    """A keyring file that cannot be used; the message names the entry and field."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An app's key to the HTTP API (`sendgate api`): the keyring keeps its SHA-256 only, so a
    leaked keyring file does not hand out the keys themselves."""

    app: str
    sha256: str  # lowercase hex of SHA-256 over the key's UTF-8 bytes
    # where the app's later outcomes (released, cancelled, expired) are POSTed, signed with the
    # secret in this environment variable (the keyring holds no webhook secret either)
    webhook_url: str | None = None
    webhook_secret_env: str | None = None


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Keyring:
    def __init__(self, keys: Iterable[SigningKey], api_keys: Iterable[ApiKey] = ()) -> None:
        self.keys: dict[str, SigningKey] = {}
        for k in keys:
            if k.id in self.keys:
                raise KeyringError(f"key id {k.id!r} appears twice")
            self.keys[k.id] = k
        self.api_keys: dict[str, ApiKey] = {}
        for a in api_keys:
            if a.sha256 in self.api_keys:
                raise KeyringError(f"api key sha256 {a.sha256[:12]}... appears twice")
            self.api_keys[a.sha256] = a

    def api_app(self, key: str) -> str | None:
        """The app an API key belongs to, or None. The lookup is by the key's digest, so its time
        does not depend on how much of a guess matches a stored key."""
        entry = self.api_keys.get(api_key_digest(key))
        return entry.app if entry else None

    @classmethod
    def from_toml(cls, path: str, env: Mapping[str, str] | None = None) -> "Keyring":
        doc = load_toml(path, "keyring", KeyringError)
        unknown = set(doc) - {"keys", "api_keys"}
        if unknown:
            raise KeyringError(
                f"keyring {path}: unknown table(s) {', '.join(sorted(unknown))} (expected [[keys]] and [[api_keys]])"
            )
        env = os.environ if env is None else env
        return cls(
            (_key(entry, i, env, path) for i, entry in enumerate(doc.get("keys", []))),
            (_api_key(entry, i, path) for i, entry in enumerate(doc.get("api_keys", []))),
        )

    def verify(self, headers: Iterable[tuple[str, bytes]] | None, value: bytes | None) -> SigningKey:
        """The key that signed `value`, or `Unauthorized`. Checked before the value is parsed."""
        key_id = sig = None
        for name, data in headers or ():
            if name == KEY_HEADER:
                key_id = data
            elif name == SIG_HEADER:
                sig = data
        if key_id is None or sig is None:
            raise Unauthorized(
                "unsigned",
                f"the record has no {KEY_HEADER} and {SIG_HEADER} headers; sign its value "
                f"with HMAC-SHA-256 under a key of the keyring (docs/security-and-privacy.md, Sources)",
            )
        shown = key_id.decode(errors="replace")[:64]
        key = self.keys.get(shown)
        if key is None:
            raise Unauthorized("unknown_key", f"key {shown!r} is not in the worker's keyring")
        if not hmac.compare_digest(signature(key.secret, value).encode(), sig):
            raise Unauthorized(
                "bad_signature", f"{SIG_HEADER} is not the HMAC-SHA-256 of the record's value under key {shown!r}"
            )
        return key

    def authorize(self, key: SigningKey, event: ev.Event, at_ms: int) -> None:
        """Raise `Unauthorized` unless `key` may say `event` at event time `at_ms`."""
        if key.not_before is not None and at_ms < key.not_before:
            raise Unauthorized(
                "key_not_valid_yet",
                f"key {key.id!r} is valid from {iso(key.not_before)}; the record's event time is {iso(at_ms)}",
            )
        if key.not_after is not None and at_ms > key.not_after:
            raise Unauthorized(
                "key_expired",
                f"key {key.id!r} was valid until {iso(key.not_after)}; the record's event time is {iso(at_ms)}",
            )
        kind = ev.event_type(event)
        if kind not in RIGHTS[key.role]:
            raise Unauthorized(
                "role",
                f"a {key.role} key ({key.id!r}) may not say {kind}; a {key.role} key may say "
                f"{', '.join(sorted(RIGHTS[key.role]))}",
            )
        if key.role == APP and event.app != key.app:
            raise Unauthorized("other_app", f"key {key.id!r} speaks for app {key.app!r}, not {event.app!r}")
        if key.role == WORKER and isinstance(event, ev.AppPolicy) and event.unrestricted:
            raise Unauthorized("grants_only_revoked", f"a worker key ({key.id!r}) may revoke a grant, never give one")
        if key.role in (APP, GATEWAY) and isinstance(event, ev.OptIn) and not event.source:
            raise Unauthorized(
                "no_consent_evidence",
                "an app's opt_in must say where the consent was given "
                "(field 'source'): the sender must be able to prove it",
            )

    def signing_key(self, role: str, at_ms: int) -> SigningKey:
        """A key of `role` valid at `at_ms` to sign with (the one valid since latest: rotation)."""
        valid = [k for k in self.keys.values() if k.role == role and k.valid_at(at_ms)]
        if not valid:
            raise KeyringError(f"the keyring has no {role} key valid at {iso(at_ms)}")
        return max(valid, key=lambda k: k.not_before or 0)


_FIELDS = {"id", "role", "app", "secret", "secret_env", "secret_file", "not_before", "not_after"}


def _key(entry: Any, i: int, env: Any, path: str) -> SigningKey:
    where = f"keyring {path}, keys[{i}]"
    if not isinstance(entry, dict):
        raise KeyringError(f"{where} must be a table")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise KeyringError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    key_id, role, app = entry.get("id"), entry.get("role"), entry.get("app")
    if not isinstance(key_id, str) or not 1 <= len(key_id) <= 64 or not key_id.isprintable():
        raise KeyringError(f"{where}: 'id' must be 1-64 printable characters")
    where = f"keyring {path}, key {key_id!r}"
    if role not in RIGHTS:
        raise KeyringError(f"{where}: 'role' must be one of {', '.join(ROLES)}, got {role!r}")
    if (role == APP) != (app is not None):
        raise KeyringError(
            f"{where}: "
            + (
                "an app key must name its 'app'"
                if role == APP
                else f"only app keys name an 'app' (a {role} key speaks for every app)"
            )
        )
    if app is not None and not isinstance(app, str):
        raise KeyringError(f"{where}: 'app' must be a string")
    sources = [name for name in ("secret", "secret_env", "secret_file") if name in entry]
    if len(sources) != 1:
        raise KeyringError(f"{where}: give exactly one of secret, secret_env, secret_file")
    source = entry[sources[0]]
    if not isinstance(source, str):
        raise KeyringError(f"{where}: '{sources[0]}' must be a string")
    if sources[0] == "secret":
        secret = source.encode()
    elif sources[0] == "secret_env":
        if not env.get(source):
            raise KeyringError(f"{where}: environment variable {source} (secret_env) is not set")
        secret = env[source].encode()
    else:
        try:
            with open(source, "rb") as fh:
                secret = fh.read().strip()
        except OSError as exc:
            raise KeyringError(f"{where}: cannot read secret_file {source}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyringError(
            f"{where}: the secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
            f"(e.g. `openssl rand -hex 32`)"
        )
    not_before, not_after = (_instant(entry.get(name), name, where) for name in ("not_before", "not_after"))
    if not_before is not None and not_after is not None and not_after < not_before:
        raise KeyringError(f"{where}: not_after is before not_before")
    return SigningKey(key_id, role, secret, app, not_before, not_after)


_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")


def _api_key(entry: Any, i: int, path: str) -> ApiKey:
    where = f"keyring {path}, api_keys[{i}]"
    if not isinstance(entry, dict):
        raise KeyringError(f"{where} must be a table")
    unknown = set(entry) - {"app", "sha256", "webhook_url", "webhook_secret_env"}
    if unknown:
        raise KeyringError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
            f"(expected app, sha256, webhook_url, webhook_secret_env)"
        )
    app, digest = entry.get("app"), entry.get("sha256")
    if not isinstance(app, str) or not 1 <= len(app) <= ev.MAX_ID_CHARS:
        raise KeyringError(f"{where}: 'app' must be the app's id (a string of 1-{ev.MAX_ID_CHARS} characters)")
    if not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise KeyringError(
            f"{where}: 'sha256' must be the lowercase hex SHA-256 of the API key (64 characters); "
            f"the key itself is never stored (`sendgate keys add-api-key APP` writes the entry)"
        )
    url, secret_env = entry.get("webhook_url"), entry.get("webhook_secret_env")
    if (url is None) != (secret_env is None):
        raise KeyringError(f"{where}: give webhook_url and webhook_secret_env together (a webhook is always signed)")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise KeyringError(f"{where}: 'webhook_url' must be an http(s) URL, got {url!r:.80}")
    if secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
        raise KeyringError(f"{where}: 'webhook_secret_env' must name an environment variable")
    return ApiKey(app, digest, url, secret_env)


def _instant(value: Any, name: str, where: str) -> int | None:
    """A TOML date-time with an offset (1979-05-27T07:32:00Z) or integer epoch milliseconds."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= ev.MAX_TS:
        return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return int(value.timestamp() * 1000)
    raise KeyringError(
        f"{where}: '{name}' must be a date-time with an offset (2027-01-01T00:00:00Z) "
        f"or epoch milliseconds, got {value!r}"
    )
