"""Shared helpers of the in-process benchmarks: corpus, timing, memory and the results files.

Nothing here talks to Kafka. Every generator is seeded; every timing is a median of repeats,
because the benchmark machines are small and shared.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import timeit
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]  # the project root (holds models/, bench/)
DATA = ROOT / ".." / "shared" / "data" / "sms_spam_collection.tsv"  # never copied into the project
RESULTS = ROOT / "bench" / "results"

T0 = 1_700_000_000_000  # base event time of every scenario (2023-11-14T22:13:20Z)
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def load_corpus(path: Path = DATA) -> list[tuple[str, str]]:
    """(label, text) pairs of the SMS Spam Collection, in file order (header skipped)."""
    if not path.exists():
        sys.exit(f"corpus not found: {path} (expected ../shared/data/sms_spam_collection.tsv "
                 f"relative to the project root)")
    rows: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:2] != ["Label", "SMS"]:
            sys.exit(f"{path}: unexpected header {header!r}")
        for line in fh:
            line = line.rstrip("\r\n")
            if not line:
                continue
            label, _, text = line.partition("\t")
            rows.append((label, text))
    return rows


def median_us(fn: Callable[[], object], number: int, repeat: int = 7,
              setup: Callable[[], object] | None = None, per: int = 1) -> float:
    """Median over `repeat` timeit runs of µs per call of `fn` (each run calls it `number` times);
    `per` divides further when one call handles `per` items."""
    timer = timeit.Timer(fn, setup=setup) if setup is not None else timeit.Timer(fn)
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number / per * 1e6


def side_by_side(fns: dict[str, Callable[[], object]], number: int, repeat: int = 7,
                 per: int = 1) -> dict[str, list[float]]:
    """Time several callables alternately (A, B, C, A, B, C, ...): µs per item of each run.
    Ratios taken per repeat are robust against a neighbour that loads the machine for a while."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            seconds = timeit.Timer(fn).timeit(number=number)
            out[name].append(seconds / number / per * 1e6)
    return out


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def vmrss_kb() -> int:
    """Resident set size of this process in kB (from /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def header(name: str, title: str) -> str:
    """The first lines of every results file: what ran, where, when."""
    import datasketch
    import numpy
    import orjson
    cmd = "python -m bench." + name + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "\n".join([
        f"# {title}",
        "",
        f"- command: `{cmd}` (from the project root)",
        f"- date: {now}",
        f"- nproc: {nproc()}; load average at start: {_LOAD_AT_START}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"numpy {numpy.__version__}, datasketch {datasketch.__version__}, orjson {orjson.__version__}",
        f"- machine: {platform.machine()}, {platform.system()} {platform.release()}",
        "",
    ])


_LOAD_AT_START = loadavg()


def write_results(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text.rstrip() + "\n")
    return path


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"
