"""Who may say what (models/sources.py): the keyring file, signatures, the rights of each role,
and a key's validity in event time -- through the gate's own decoder, as the worker calls it."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from sendgate.models import events as ev
from sendgate.models.gate import Gate, MemoryStore
from sendgate.models.sources import (
    KEY_HEADER,
    RIGHTS,
    SIG_HEADER,
    Keyring,
    KeyringError,
    api_key_digest,
    SigningKey,
    Unauthorized,
    signature,
)

T = 1_700_000_000_000
DAY = 86_400_000
SECRET = "0123456789abcdef0123456789abcdef"

RING = f"""
[[keys]]
id = "acme-app"
role = "app"
app = "acme"
secret = "{SECRET}a"

[[keys]]
id = "net"
role = "network"
secret_env = "NET_SECRET"

[[keys]]
id = "ops"
role = "operator"
secret = "{SECRET}c"

[[keys]]
id = "front"
role = "gateway"
secret = "{SECRET}d"

[[keys]]
id = "worker-1"
role = "worker"
secret = "{SECRET}e"
not_after = {T + DAY}

[[keys]]
id = "worker-2"
role = "worker"
secret = "{SECRET}f"
not_before = 2023-11-15T22:13:20Z
"""


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    path = tmp_path / "keyring.toml"
    path.write_text(RING)
    return Keyring.from_toml(str(path), env={"NET_SECRET": SECRET + "b"})


def record(event: dict, key: SigningKey | None, *, tamper: bool = False) -> tuple[bytes, bytes, list]:
    raw = orjson.dumps(event)
    headers = key.headers(raw) if key else []
    return event["app"].encode(), raw + (b" " if tamper else b""), headers


def decode(keyring: Keyring, event: dict, key_id: str | None, store: MemoryStore | None = None, **kw) -> ev.Event:
    key = keyring.keys[key_id] if key_id else None
    k, raw, headers = record(event, key, **kw)
    return Gate(keyring=keyring).decode(k, raw, event.get("ts", T), headers, store)


INBOUND = {
    "type": "inbound",
    "event_id": "i1",
    "app": "acme",
    "sender": "s",
    "userkey": "u",
    "network": "sms",
    "text": "hi",
    "ts": T,
}
SEND = {
    "type": "send",
    "request_id": "r1",
    "app": "acme",
    "sender": "s",
    "userkey": "u",
    "network": "sms",
    "text": "hello",
    "ts": T,
}
GRANT = {"type": "app_policy", "event_id": "g1", "app": "acme", "unrestricted": True, "ts": T}


def rule_of(keyring, event, key_id, **kw) -> str:
    with pytest.raises(Unauthorized) as refused:
        decode(keyring, event, key_id, **kw)
    assert str(refused.value).startswith(f"unauthorized: {refused.value.rule}: ")
    return refused.value.rule


def test_the_signature_is_hex_hmac_sha256_of_the_value_so_any_kafka_client_can_make_it():
    assert signature(b"k" * 16, b'{"a":1}') == hmac.new(b"k" * 16, b'{"a":1}', hashlib.sha256).hexdigest()
    key = SigningKey("id-1", "app", b"k" * 16, "acme")
    assert key.headers(b"v") == [(KEY_HEADER, b"id-1"), (SIG_HEADER, signature(b"k" * 16, b"v").encode())]
    assert "kkkk" not in repr(key)


def test_each_role_says_what_it_may(keyring):
    assert decode(keyring, INBOUND, "net").event_id == "i1"
    assert decode(keyring, SEND, "acme-app").request_id == "r1"
    assert decode(keyring, SEND, "front").request_id == "r1"
    assert decode(keyring, GRANT, "ops").unrestricted is True
    assert decode(keyring, {**GRANT, "unrestricted": False}, "worker-1").unrestricted is False
    assert decode(keyring, {"type": "tick", "app": "acme", "ts": T}, "worker-1").ts == T
    assert decode(keyring, SHARED, "worker-1").reporter == 7
    assert decode(keyring, PROFILE, "net").timezone == "Pacific/Kiritimati"


SHARED = {"type": "junk_shared", "event_id": "j", "app": "acme", "reporter": 7, "text": "x", "ts": T}
PROFILE = {
    "type": "recipient_profile",
    "event_id": "rp",
    "app": "acme",
    "userkey": "u",
    "timezone": "Pacific/Kiritimati",
    "region": "KI",
    "ts": T,
}


@pytest.mark.parametrize(
    "event,key_id,rule",
    [
        (INBOUND, "acme-app", "role"),  # an app minting the conversation consent rests on
        (INBOUND, "front", "role"),
        (GRANT, "acme-app", "role"),  # an app granting itself unrestricted outbound
        (
            {"type": "sender_profile", "event_id": "p", "app": "acme", "sender": "s", "registered_ts": 0, "ts": T},
            "acme-app",
            "role",
        ),
        (
            {
                "type": "junk_report",
                "event_id": "j",
                "app": "rival",
                "sender": "s",
                "userkey": "u",
                "text": "x",
                "ts": T,
            },
            "acme-app",
            "role",
        ),
        (
            {
                "type": "delivery_status",
                "event_id": "d",
                "app": "acme",
                "sender": "s",
                "userkey": "u",
                "request_id": "r",
                "status": "delivered",
                "ts": T,
            },
            "acme-app",
            "role",
        ),
        (SEND, "net", "role"),  # a network connector does not send for an app
        (SHARED, "acme-app", "role"),  # an app blacklisting a rival's text in every partition's index
        (SHARED, "net", "role"),  # a network reports junk_report, which the worker decides and shares
        (PROFILE, "acme-app", "role"),  # an app moving its recipients out of their quiet hours
        (PROFILE, "front", "role"),
        ({**SEND, "app": "rival"}, "acme-app", "other_app"),
        (
            {"type": "opt_in", "event_id": "o", "app": "rival", "userkey": "u", "source": "form", "ts": T},
            "acme-app",
            "other_app",
        ),
        (
            {"type": "opt_in", "event_id": "o", "app": "acme", "userkey": "u", "ts": T},
            "acme-app",
            "no_consent_evidence",
        ),
        (GRANT, "worker-1", "grants_only_revoked"),
        (SEND, None, "unsigned"),
    ],
)
def test_what_a_role_may_not_say_is_refused_with_the_rule(keyring, event, key_id, rule):
    assert rule_of(keyring, event, key_id) == rule


def test_an_unknown_key_and_a_tampered_value_are_refused(keyring):
    stranger = SigningKey("stranger", "operator", SECRET.encode())
    k, raw, headers = record(SEND, stranger)
    with pytest.raises(Unauthorized, match="unknown_key"):
        Gate(keyring=keyring).decode(k, raw, T, headers)
    assert rule_of(keyring, SEND, "acme-app", tamper=True) == "bad_signature"
    forged = SigningKey("acme-app", "app", b"a guess at the secret", "acme")  # the right id, the wrong secret
    k, raw, headers = record(SEND, forged)
    with pytest.raises(Unauthorized, match="bad_signature"):
        Gate(keyring=keyring).decode(k, raw, T, headers)


def test_a_key_is_valid_in_event_time_and_an_apps_clock_cannot_be_backdated_past(keyring):
    late = {"type": "tick", "app": "acme", "ts": T + 2 * DAY}
    assert rule_of(keyring, late, "worker-1") == "key_expired"
    assert rule_of(keyring, {**late, "ts": T}, "worker-2") == "key_not_valid_yet"
    assert decode(keyring, late, "worker-2").ts == T + 2 * DAY
    # a holder of the revoked key backdates its record, but the app's clock has moved past not_after
    gate, store = Gate(keyring=keyring), MemoryStore()
    k, raw, headers = record(late, keyring.keys["worker-2"])
    gate.handle_record(k, raw, T + 2 * DAY, store, headers)
    backdated = {"type": "tick", "app": "acme", "ts": T}
    with pytest.raises(Unauthorized, match="key_expired"):
        decode(keyring, backdated, "worker-1", store)
    assert decode(keyring, backdated, "worker-1", MemoryStore()).ts == T  # another app's clock: not moved


def test_the_worker_signs_with_the_key_valid_at_the_time_rotation(keyring):
    assert keyring.signing_key("worker", T).id == "worker-1"
    assert keyring.signing_key("worker", T + 2 * DAY).id == "worker-2"
    with pytest.raises(KeyringError, match="no gateway key valid"):
        Keyring([]).signing_key("gateway", T)


def test_rights_name_only_event_types():
    assert set().union(*RIGHTS.values()) <= set(ev.EVENT_TYPES)
    assert RIGHTS["operator"] == frozenset(ev.EVENT_TYPES)


@pytest.mark.parametrize(
    "text,error",
    [
        ('[[keys]]\nid = "a"\nrole = "king"\nsecret = "' + SECRET + '"', "'role' must be one of"),
        ('[[keys]]\nid = "a"\nrole = "app"\nsecret = "' + SECRET + '"', "an app key must name its 'app'"),
        ('[[keys]]\nid = "a"\nrole = "network"\napp = "x"\nsecret = "' + SECRET + '"', "only app keys name an 'app'"),
        ('[[keys]]\nid = "a"\nrole = "network"\nsecret = "short"', "at least 16 are needed"),
        ('[[keys]]\nid = "a"\nrole = "network"', "exactly one of secret"),
        ('[[keys]]\nid = "a"\nrole = "network"\nsecret_env = "NOPE"', "NOPE (secret_env) is not set"),
        ('[[keys]]\nid = "a"\nrole = "network"\nsecret_file = "/nonexistent/s"', "cannot read secret_file"),
        ('[[keys]]\nid = "a"\nrole = "network"\nsecrets = "x"', "unknown field(s) secrets"),
        (
            '[[keys]]\nid = "a"\nrole = "network"\nsecret = "' + SECRET + '"\nnot_after = 2020-01-01',
            "date-time with an offset",
        ),
        (
            '[[keys]]\nid = "a"\nrole = "network"\nsecret = "' + SECRET + '"\n[[keys]]\nid = "a"\nrole = "operator"\n'
            'secret = "' + SECRET + '"',
            "appears twice",
        ),
        ('[key]\nid = "a"', "unknown table(s) key"),
        ('[[api_keys]]\napp = "shop"\nsha256 = "abc"', "'sha256' must be the lowercase hex SHA-256"),
        ('[[api_keys]]\nsha256 = "' + "a" * 64 + '"', "'app' must be the app's id"),
        ('[[api_keys]]\napp = "shop"\nsha256 = "' + "a" * 64 + '"\nkey = "plain"', "unknown field(s) key"),
        (
            '[[api_keys]]\napp = "shop"\nsha256 = "'
            + "a" * 64
            + '"\n[[api_keys]]\napp = "rival"\nsha256 = "'
            + "a" * 64
            + '"',
            "appears twice",
        ),
        (
            '[[api_keys]]\napp = "shop"\nsha256 = "' + "a" * 64 + '"\nwebhook_url = "https://shop.example/hook"',
            "give webhook_url and webhook_secret_env together",
        ),
        (
            '[[api_keys]]\napp = "shop"\nsha256 = "'
            + "a" * 64
            + '"\nwebhook_url = "ftp://x"\nwebhook_secret_env = "S"',
            "'webhook_url' must be an http(s) URL",
        ),
        ("[[keys]\n", "not valid TOML"),
    ],
)
def test_a_keyring_that_cannot_be_used_says_where(tmp_path, text, error):
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(KeyringError) as refused:
        Keyring.from_toml(str(path), env={})
    assert error in str(refused.value)


def test_an_api_key_names_its_app_by_its_digest_alone(tmp_path):
    key = "sg_live_0123456789abcdef"
    (tmp_path / "k.toml").write_text(f'[[api_keys]]\napp = "shop"\nsha256 = "{api_key_digest(key)}"\n')
    ring = Keyring.from_toml(str(tmp_path / "k.toml"), env={})
    assert api_key_digest(key) == hashlib.sha256(key.encode()).hexdigest()
    assert ring.api_app(key) == "shop"
    assert ring.api_app(key + "x") is None and ring.api_app("") is None
    assert key not in (tmp_path / "k.toml").read_text()


def test_a_secret_file_is_read_and_stripped(tmp_path):
    (tmp_path / "s").write_text(SECRET + "\n")
    (tmp_path / "k.toml").write_text(f'[[keys]]\nid = "a"\nrole = "network"\nsecret_file = "{tmp_path / "s"}"\n')
    assert Keyring.from_toml(str(tmp_path / "k.toml")).keys["a"].secret == SECRET.encode()


def test_without_a_keyring_every_record_is_taken_at_its_word():
    k, raw, _ = record(INBOUND, None)
    assert Gate().decode(k, raw, T).event_id == "i1"
