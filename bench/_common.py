"""What every benchmark shares: the corpus, seeded texts and events, timing, and the results files.

Nothing here talks to Kafka. Every generator is seeded; every timing is a median of repeats,
because the benchmark machines are small and shared.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as md
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import timeit
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import orjson

ROOT = Path(__file__).resolve().parents[1]  # the project root (holds models/, bench/)
DATA = ROOT / ".." / "shared" / "data" / "sms_spam_collection.tsv"  # never copied into the project
RESULTS = ROOT / "bench" / "results"
SCRATCH = Path(tempfile.gettempdir()) / "sendgate-bench"  # --quick runs write here unless --out says otherwise

T0 = 1_700_000_000_000  # base event time of every scenario (2023-11-14T22:13:20Z)
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


# --- corpus and texts ----------------------------------------------------------------------------


def load_corpus(path: Path = DATA) -> list[tuple[str, str]]:
    """(label, text) pairs of the SMS Spam Collection, in file order (header skipped)."""
    if not path.exists():
        sys.exit(f"corpus not found: {path} (expected ../shared/data/sms_spam_collection.tsv from the project root)")
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:2] != ["Label", "SMS"]:
            sys.exit(f"{path}: unexpected header {header!r}")
        return [
            (label, text) for raw in fh if (line := raw.rstrip("\r\n")) for label, _, text in [line.partition("\t")]
        ]


def labelled(corpus: list[tuple[str, str]], label: str) -> list[str]:
    return [t for lbl, t in corpus if lbl == label]


def distinct_texts(texts: list[str], count: int, sketcher=None, max_sim: float = 0.3, min_len: int = 40) -> list[str]:
    """`count` texts whose sketches are pairwise below `max_sim` (each starts its own cluster)."""
    import numpy as np

    from sendgate.models.similarity import Sketcher, similarities

    sketcher = sketcher or Sketcher()
    chosen, rows = [], []
    for text in texts:
        if len(text) < min_len:
            continue
        sk = sketcher.sketch(text)
        if rows and similarities(sk, np.stack(rows)).max() >= max_sim:
            continue
        chosen.append(text)
        rows.append(sk)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"only {len(chosen)} distinct texts found")


FIRST_NAMES = (
    "Anna",
    "Ben",
    "Chloe",
    "Dev",
    "Emma",
    "Finn",
    "Grace",
    "Hugo",
    "Isla",
    "Jack",
    "Kofi",
    "Lena",
    "Mohammed",
    "Nadia",
    "Oliver",
    "Priya",
    "Quentin",
    "Rosa",
    "Sam",
    "Tariq",
    "Ursula",
    "Viktor",
    "Wen",
    "Xavier",
    "Yasmin",
    "Zoe",
    "Alexandra",
    "Christopher",
    "Jo",
    "Li",
)
LINK = re.compile(
    r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|co\.uk|uk|ly|io|biz|info)\b\S*",
    re.IGNORECASE,
)


def random_link(rng: random.Random) -> str:
    host = rng.choice(("bit.ly", "tinyurl.com", "win-now.co.uk", "offers.example.com", "x.co"))
    return f"http://{host}/{''.join(rng.choice('abcdefghijkmnpqrstuvwxyz23456789') for _ in range(rng.randint(4, 9)))}"


def campaign(rng: random.Random, spam: str) -> str:
    """The template as a campaign writes it: one without a link gets one at the end."""
    return spam if LINK.search(spam) else f"{spam} {random_link(rng)}"


def variant(rng: random.Random, template: str) -> str:
    """One recipient's copy of a template: name inserted, digits redrawn, link(s) changed."""
    text = LINK.sub(lambda _: random_link(rng), re.sub(r"\d", lambda _: str(rng.randrange(10)), template))
    greeting = rng.choice(("{n}, ", "Hi {n}! ", "Dear {n}, ", "{n}: ")).format(n=rng.choice(FIRST_NAMES))
    if rng.random() < 0.7:
        return greeting + text
    cut = max(text.find(". "), text.find("! "))  # else the name after the first sentence, or at the end
    if cut > 0:
        return f"{text[: cut + 2]}{rng.choice(FIRST_NAMES)}, {text[cut + 2 :]}"
    return f"{text} - {rng.choice(FIRST_NAMES)}"


# --- the workload generator: events as JSON records, or as model events in time order --------------


def doc(type_: str, id_: str, app: str, ts: int | None = None, **fields) -> dict:
    """An event as its JSON carries it; `id_` is a send's request_id, any other event's event_id."""
    out = {"type": type_, "request_id" if type_ == "send" else "event_id": id_, "app": app, **fields}
    if type_ in ("send", "inbound"):
        out.setdefault("network", "sms")
    return out if ts is None else {**out, "ts": ts}


@dataclass
class Log:
    """A generated event log: (key = app, JSON value) records in publish order, counted by type."""

    seed: int = 0
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    types: Counter = field(default_factory=Counter)
    apps: int = 0
    senders: int = 0
    userkeys: int = 0
    blasts: list[tuple[str, str, int]] = field(default_factory=list)  # (app, sender, recipients)
    event_hours: float = 0.0
    mix: object = None  # the throughput generator's Mix that shaped it

    def emit(self, *args, **fields) -> None:
        d = doc(*args, **fields)
        self.types[d["type"]] += 1
        self.records.append((d["app"].encode(), orjson.dumps(d)))


class Timeline(list):
    """Model events added in any order, handed out by event time (ties in the order added)."""

    def add(self, e) -> None:
        self.append((e.ts, len(self), e))

    def ordered(self) -> list:
        return [e for _, _, e in sorted(self, key=lambda x: x[:2])]


# --- timing and memory -------------------------------------------------------------------------------


def median_us(
    fn: Callable[[], object], number: int, repeat: int = 7, setup: Callable[[], object] | None = None, per: int = 1
) -> float:
    """Median over `repeat` timeit runs of µs per call of `fn` (each run calls it `number` times);
    `per` divides further when one call handles `per` items."""
    timer = timeit.Timer(fn, setup=setup) if setup is not None else timeit.Timer(fn)
    return statistics.median(timer.repeat(repeat=repeat, number=number)) / number / per * 1e6


def each_us(fn: Callable, items: Sequence, repeat: int, *args, setup=None) -> float:
    """Median µs per item of `fn(item, *args)` over all the items, in a plain loop."""

    def run():
        for item in items:
            fn(item, *args)

    return median_us(run, 1, repeat, setup=setup, per=len(items))


def side_by_side(
    fns: dict[str, Callable[[], object]], number: int, repeat: int = 7, per: int = 1
) -> dict[str, list[float]]:
    """Time several callables alternately (A, B, C, A, B, C, ...): µs per item of each run.
    Ratios taken per repeat are robust against a neighbour that loads the machine for a while."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            out[name].append(timeit.Timer(fn).timeit(number=number) / number / per * 1e6)
    return out


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def proc_kb(name: str, path: str = "/proc/self/status") -> int:
    """A kB figure of /proc (VmRSS of a process's status, MemAvailable of /proc/meminfo)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{name} not found in {path}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the results files -------------------------------------------------------------------------------


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, rows)])


def cli(doc: str, quick: str, name: str, quick_name: str = "") -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick (what it shrinks to) and --out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument(
        "--out",
        help=f"results file (default bench/results/{name}.md; --quick: "
        f"{SCRATCH / (quick_name or name + '.quick.md')}, the committed results untouched)",
    )
    return ap


def out_path(out: str | None, quick: bool, name: str, quick_name: str = "") -> Path:
    return Path(out) if out else SCRATCH / (quick_name or f"{name}.quick.md") if quick else RESULTS / f"{name}.md"


_LOAD_AT_START = loadavg()


def write_report(
    path: Path,
    title: str,
    prog: str,
    facts: Sequence[str],
    sections: Sequence[str],
    bootstrap: bool = False,
    echo: bool = True,
) -> str:
    """The one results format: the title, what ran (command, where, when, versions), the sections."""
    cmd = f"{prog} {' '.join(sys.argv[1:])}".strip()
    if bootstrap and os.environ.get("SENDGATE_BOOTSTRAP"):
        cmd = f"SENDGATE_BOOTSTRAP={os.environ['SENDGATE_BOOTSTRAP']} {cmd}"
    installed = {d.metadata["Name"].lower(): d.version for d in md.distributions()}
    versions = [
        f"{p} {installed[p]}"
        for p in (
            "faust-streaming",
            "aiokafka",
            "orjson",
            "datasketch",
            "numpy",
            "confusable-homoglyphs",
            "rocksdict",
            "matplotlib",
        )
        if p in installed
    ]
    head = [
        f"# {title}",
        "",
        f"- command: `{cmd}` (from the project root)",
        f"- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S UTC}",
        f"- nproc: {len(os.sched_getaffinity(0))}; load average at start {_LOAD_AT_START}, at end {loadavg()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); {', '.join(versions)}",
        f"- machine: {platform.machine()}, {platform.system()} {platform.release()}",
        *(f"- {f}" for f in facts),
    ]
    text = "\n".join(head) + "\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"{text if echo else ''}\nwrote {path}", flush=True)
    return text
