"""The keyed-hash option: tables hold no userkey (except delayed requests, which must be
delivered), and the decisions are the same as without it."""

from __future__ import annotations

from sendgate.models.decisions import Decision
from sendgate.models.events import validate
from sendgate.models.gate import PENDING, USERKEYS, Gate, MemoryStore

T = 1_700_000_000_000
PHONE = "+15550001234"


def scenario() -> list[dict]:
    users = [PHONE] + [f"+1555000{i:04d}" for i in range(12)]
    events = [{"type": "sender_profile", "event_id": "p", "app": "a", "sender": "s", "registered_ts": T - 10**11}]
    events += [
        {
            "type": "inbound",
            "event_id": f"i{i}",
            "app": "a",
            "sender": "s",
            "userkey": u,
            "network": "sms",
            "text": "hi",
        }
        for i, u in enumerate(users)
    ]
    events += [
        {"type": "junk_report", "event_id": "j", "app": "a", "sender": "s2", "userkey": PHONE, "text": "free money now"}
    ]
    events += [
        {
            "type": "send",
            "request_id": f"r{i}",
            "app": "a",
            "sender": "s",
            "userkey": u,
            "network": "sms",
            "text": f"Sale! code {i}",
            "ts": T + 3_600_000 + i,
        }
        for i, u in enumerate(users)
    ]
    events += [{"type": "opt_out", "event_id": "o", "app": "a", "userkey": PHONE, "ts": T + 3_700_000}]
    return events


def run(gate: Gate) -> tuple[list[dict], MemoryStore]:
    store = MemoryStore()
    out = []
    for doc in scenario():
        out += [r.to_dict() for r in gate.handle(validate(doc, T), store) if isinstance(r, Decision)]
    return out, store


def test_decisions_are_the_same_and_still_carry_the_userkey():
    plain, _ = run(Gate())
    hashed, _ = run(Gate(userkey_secret=b"s3cret"))
    assert hashed == plain
    assert {d["userkey"] for d in hashed} >= {PHONE}


def test_no_table_outside_pending_holds_a_userkey():
    _, store = run(Gate(userkey_secret=b"s3cret"))
    digits = PHONE.encode()
    assert store.tables[PENDING], "the scenario should leave delayed requests"
    for table, rows in store.tables.items():
        for k, v in rows.items():
            if table != PENDING:
                assert digits not in k and digits not in v, (table, k, v)
    _, plain_store = run(Gate())
    assert any(digits in k for k in plain_store.tables[USERKEYS])  # the check above can fail


def test_the_stored_userkey_is_a_keyed_hash():
    a, b = Gate(userkey_secret=b"one"), Gate(userkey_secret=b"two")
    assert a.stored_userkey(PHONE) != b.stored_userkey(PHONE)
    assert len(a.stored_userkey(PHONE)) == 64 and Gate().stored_userkey(PHONE) == PHONE


def test_the_worker_settings_pass_the_secret_to_the_gate():
    from sendgate.streams.config import Settings

    env = {"SENDGATE_USERKEY_SECRET": "s3cret", "SENDGATE_AUTH": "off"}
    assert Settings.from_env(env).gate().stored_userkey(PHONE) == Gate(userkey_secret=b"s3cret").stored_userkey(PHONE)
    assert Settings.from_env({"SENDGATE_AUTH": "off"}).gate().stored_userkey(PHONE) == PHONE
    assert "s3cret" not in repr(Settings.from_env(env))
