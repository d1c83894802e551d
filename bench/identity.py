"""Decision identity: a digest of every record the in-process gate decides, and of its final rows.

A refactoring of the rules must leave both digests unchanged. Two runs over the throughput
bench's generated log (bench/throughput.py `generate`, texts of the shared SMS corpus):

- `default`: the default policy, each record through `Gate.handle_record`, as the worker takes it;
- `strict`: a policy with every optional control on (recipient limits, validity, duplicate texts,
  contact lists, a short horizon, a tight loop guard, a userkey secret), and the log's events mixed
  with the events the generator never writes (junk reports, delivery results, grants, contacts,
  HELP, loop repeats, cancels, ticks, retries, skewed times), through `Gate.handle_in_one_log`.

    .venv/bin/python -m bench.identity [--events 60000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time

from sendgate.models import events as ev
from sendgate.models.events import InvalidEvent
from sendgate.models.gate import JUNK, TABLES, Gate, MemoryStore
from sendgate.models.policy import Policy

from .throughput import generate, record_time

STRICT = Policy(
    recipient_limits=((2, 1800), (4, 86400)),
    default_valid_for_s=1200,
    duplicate_text_limit=2,
    duplicate_text_window_s=900,
    contact_list_networks=("xmpp",),
    conversation_horizon_days=1,
    loop_repeats=2,
    loop_reject_repeats=4,
    loop_delay_s=60,
    request_memory_s=600,
    grant_revoke_junk_reports=3,
    grant_revoke_refused_blasts=5,
    grant_revoke_min_results=5,
    max_delay_s=1800,
)


class Digest:
    def __init__(self) -> None:
        self.records = hashlib.sha256()
        self.count = 0

    def add(self, out: list) -> None:
        for record in out:
            self.records.update(type(record).__name__.encode() + b"\x00" + record.to_json() + b"\n")
            self.count += 1

    def rows(self, store: MemoryStore) -> str:
        h = hashlib.sha256()
        for table in (*TABLES, JUNK):
            for k, v in sorted(store.tables[table].items()):
                h.update(table.name.encode() + b"\x00" + k + b"\x00" + v + b"\n")
        return h.hexdigest()


def run_default(records: list[tuple[bytes, bytes]]) -> tuple[Digest, str, float]:
    gate, store, digest = Gate(), MemoryStore(), Digest()
    started = time.perf_counter()
    for k, value in records:
        try:
            digest.add(gate.handle_record(k, value, record_time(value), store))
        except InvalidEvent:
            digest.add([])
    return digest, digest.rows(store), time.perf_counter() - started


def strict_events(records: list[tuple[bytes, bytes]]) -> list[tuple[ev.Event, int | None]]:
    """The log's events with the ones it lacks mixed in, each with the record time it is decided at."""
    decoder = Gate()
    rng = random.Random(7)
    out: list[tuple[ev.Event, int | None]] = []
    sends: list[ev.Send] = []
    inbounds: list[ev.Inbound] = []
    for i, (k, value) in enumerate(records):
        e = decoder.decode(k, value, record_time(value) or 0)
        out.append((e, None))
        if isinstance(e, ev.Send):
            sends.append(e)
        elif isinstance(e, ev.Inbound):
            inbounds.append(e)
        roll = rng.random()
        if not sends or roll > 0.25:
            continue
        s = rng.choice(sends[-200:])
        if roll < 0.03:
            out.append((ev.JunkReport(f"jr-{i}", s.app, s.sender, s.userkey, s.text, s.request_id, e.ts), None))
        elif roll < 0.07:
            status = rng.choice(("delivered", "not_delivered", "failed"))
            out.append((ev.DeliveryStatus(f"ds-{i}", s.app, s.sender, s.userkey, s.request_id, status, e.ts), None))
        elif roll < 0.075:
            out.append((ev.AppPolicy(f"ap-{i}", s.app, rng.random() < 0.7, "operator", e.ts), None))
        elif roll < 0.09:
            out.append((ev.Contact(f"ct-{i}", s.app, s.userkey, "xmpp", rng.random() < 0.8, e.ts), None))
            out.append((ev.Send(f"x-{i}", s.app, s.sender, s.userkey, "xmpp", s.text, None, e.ts), None))
        elif roll < 0.11:  # HELP, then its answer
            out.append((ev.Inbound(f"help-{i}", s.app, s.sender, s.userkey, "sms", "HELP", e.ts), None))
            out.append(
                (
                    ev.Send(f"hr-{i}", s.app, s.sender, s.userkey, "sms", "Reply STOP to stop", f"help-{i}", e.ts + 1),
                    None,
                )
            )
        elif roll < 0.14 and inbounds:  # the same text again and again, answered each time: the loop guard
            n = inbounds[-1]
            for j in range(6):
                out.append(
                    (ev.Inbound(f"lp-{i}-{j}", n.app, n.sender, n.userkey, n.network, "auto: away", e.ts + j), None)
                )
                out.append(
                    (
                        ev.Send(
                            f"lr-{i}-{j}", n.app, n.sender, n.userkey, n.network, "thanks!", f"lp-{i}-{j}", e.ts + j
                        ),
                        None,
                    )
                )
        elif roll < 0.16:
            out.append((ev.Cancel(s.request_id, s.app, e.ts), None))
        elif roll < 0.18:  # a producer retry, and a request id reused for another text
            out.append((s, None))
            out.append((ev.Send(s.request_id, s.app, s.sender, s.userkey, s.network, s.text + "!", None, e.ts), None))
        elif roll < 0.20:
            out.append((ev.Tick(s.app, e.ts + rng.randrange(3_600_000)), None))
        elif roll < 0.21:  # event time trailing its record time: decided at the app's clock, with a note
            out.append((ev.Send(f"sk-{i}", s.app, s.sender, s.userkey, s.network, s.text, None, e.ts - 900_000), e.ts))
        else:  # the same text to the same userkey again, and with a validity
            out.append((ev.Send(f"dup-{i}", s.app, s.sender, s.userkey, s.network, s.text, None, e.ts, 60), None))
    return out


def run_strict(records: list[tuple[bytes, bytes]]) -> tuple[Digest, str, float]:
    events = strict_events(records)
    gate, store, digest = Gate(STRICT, userkey_secret=b"identity-secret"), MemoryStore(), Digest()
    started = time.perf_counter()
    for e, record_ts in events:  # a log of one partition: a junk report's share right after it
        digest.add(gate.handle_in_one_log(e, store, record_ts))
    return digest, digest.rows(store), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    args = ap.parse_args()
    records = generate(args.events).records
    for name, run in (("default", run_default), ("strict", run_strict)):
        digest, rows, seconds = run(records)
        print(f"{name}: {digest.count} records {digest.records.hexdigest()[:16]} rows {rows[:16]} ({seconds:.2f} s)")


if __name__ == "__main__":
    main()
