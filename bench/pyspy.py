"""py-spy samples of a worker: the raw collapsed stacks (not committed: bench/results/*profile*.txt is
ignored by git) and a committed-size summary of them next to it (`<raw>.md`).

    python -m bench.pyspy RAW.txt --seconds 20   # (re)write RAW.md from a raw file
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ._common import ROOT, md_table

TOP = 25  # frames in each top list
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<path>[^():]*)(?::\d+)?\)$")
CATEGORIES = [  # first match over the stack (without its root frames) wins
    ("tables: Faust Table get/set, RocksDB, changelog", ("faust/tables/", "faust/stores/")),
    ("gate: decode, consent, burst, sketches (sendgate.models)", ("models/",)),
    (
        "outputs: topic.send, producer buffer, aiokafka producer",
        ("faust/topics.py", "faust/channels.py", "faust/transport/producer", "aiokafka/producer/"),
    ),
    ("input: aiokafka consumer, fetch, record parsing", ("aiokafka/consumer/", "aiokafka/record/")),
    ("Faust stream, agent, event and commit machinery", ("faust/",)),
    ("aiokafka client and connections (other)", ("aiokafka/",)),
    (
        "sendgate.streams glue (GateWorker.process itself)",
        ("streams/worker/app.py", "streams/worker/batch.py", "streams/worker/holes.py", "streams/worker/ticker.py"),
    ),
    ("mode services, threads and timers", ("mode/",)),
]
CROSS_CUTTING = [  # shares that cut across the categories (a sample may be in several)
    (
        "logging: LogRecords built for debug calls (Faust's worker sets the root logger to DEBUG for its spinner "
        "when the level is warning or above)",
        lambda fn, fp: fp.startswith("logging/"),
    ),
    (
        "socket writes (asyncio transport.write, i.e. send syscalls)",
        lambda fn, fp: fn == "_SelectorSocketTransport.write",
    ),
    ("Faust table changelog sends (ProducerBuffer)", lambda fn, fp: fn.startswith("ProducerBuffer.")),
    ("decisions and deliveries: GateWorker.process -> Topic.send", lambda fn, fp: fn == "Topic.send"),
    (
        "Gate.handle_record (all of the pure gate, its table reads and writes included)",
        lambda fn, fp: fn == "Gate.handle_record",
    ),
    ("sketching: Sketcher.sketch (normalise, shingles, MinHash)", lambda fn, fp: fn == "Sketcher.sketch"),
]
# in every stack of the main thread
ROOT_FRAMES = ("mode/worker.py", "streams/cli.py", "streams/worker/lifecycle.py", "<frozen runpy>")
GENERIC_FRAMES = ROOT_FRAMES + ("asyncio/base_events.py", "asyncio/events.py")


@dataclass
class Profile:
    samples: int
    seconds: float
    rate: int
    self_top: list[tuple[str, int]]
    incl_top: list[tuple[str, int]]
    categories: list[tuple[str, int]]
    path: Path
    threads: list[tuple[str, int, int]] = field(default_factory=list)  # (thread, busy, waiting)
    idle: int = 0
    cross: list[tuple[str, int]] = field(default_factory=list)


def pyspy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, title: str, rate: int = 100) -> Profile | str:
    """Sample `pid` into `out` (raw), summarise it into `out`.md; a string says why there is none."""
    if (exe := pyspy()) is None:
        return "py-spy is not installed (pip install py-spy)"
    proc = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "-o",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        return f"py-spy failed ({proc.returncode}): {text.decode(errors='replace')[-500:]}"
    return summarize(out, seconds, rate, title)


def _short(path: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "python3.11/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(path: Path, seconds: float, rate: int, title: str) -> Profile:
    """Aggregate py-spy's collapsed stacks, and write their summary to `path`.md. Samples whose leaf
    is the selector's epoll wait are the event loop waiting for I/O (py-spy's idle detection does not
    catch them here): counted per thread, then left out of every CPU share."""
    self_c, incl_c, cats, threads, cross = Counter(), Counter(), Counter(), Counter(), Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [
            (m.group("fn"), _short(m.group("path"))) if (m := _FRAME.match(raw.strip())) else (raw.strip(), "")
            for raw in stack.split(";")
        ]
        thread = (
            "other threads (Faust's aiokafka consumer thread)"
            if any(fn == "Thread._bootstrap" for fn, _ in frames)
            else "main thread (event loop: agent, producer, tables, timers)"
        )
        if frames[-1][1] == "selectors.py":
            threads[(thread, "waiting in epoll")] += n
            idle += n
            continue
        threads[(thread, "busy")] += n
        total += n
        names = [f"{fn} ({p})" for fn, p in frames]
        self_c[names[-1]] += n
        for name in {nm for nm, (_, fp) in zip(names, frames) if fp not in GENERIC_FRAMES}:
            incl_c[name] += n  # inclusive: once per sample, without the frames every stack has
        for label, test in CROSS_CUTTING:
            if any(test(fn, fp) for fn, fp in frames):
                cross[label] += n
        paths = [p for _, p in frames if p not in ROOT_FRAMES]
        cats[
            next(
                (
                    label
                    for label, markers in CATEGORIES
                    if any(p.startswith(mk) or f"/{mk}" in p for p in paths for mk in markers)
                ),
                "event loop: callbacks, other stdlib",
            )
        ] += n
    rows = [(t, threads[(t, "busy")], threads[(t, "waiting in epoll")]) for t in sorted({t for t, _ in threads})]
    p = Profile(
        total,
        seconds,
        rate,
        self_c.most_common(TOP),
        incl_c.most_common(TOP),
        cats.most_common(),
        path,
        rows,
        idle,
        [(label, cross[label]) for label, _ in CROSS_CUTTING],
    )
    path.with_suffix(".md").write_text(f"# Profile: {title}\n\n{profile_md(p)}\n")
    return p


def profile_md(p: Profile | str | None) -> str:
    if not isinstance(p, Profile):
        return p or "not run"

    def table(what: str, rows: list[tuple[str, int]]) -> str:
        return md_table([what, "samples", "share of busy"], [[f, n, f"{100 * n / p.samples:.1f} %"] for f, n in rows])

    return "\n\n".join(
        [
            f"py-spy {p.rate} Hz for {p.seconds:.0f} s: {p.samples:,} busy samples, {p.idle:,} waiting in epoll "
            "(the event loop idle; left out of the shares below). Raw collapsed stacks: "
            f"`{p.path.name}` (not committed; speedscope or flamegraph.pl read it).",
            md_table(
                ["thread", "busy samples", "waiting samples", "busy share of wall time"],
                [[t, b, w, f"{100 * b / (p.seconds * p.rate):.0f} %"] for t, b, w in p.threads],
            ),
            "Where the busy time goes (each sample counted once: the first category, in this order, with a frame "
            "in the stack; a table write made by the gate counts as tables):",
            table("category", p.categories),
            "Across categories (a sample can count in several rows):",
            table("samples with a frame of", p.cross),
            "Top functions by own time:",
            table("function (file)", p.self_top),
            "Top functions by inclusive time:",
            table("function (file)", p.incl_top),
        ]
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", type=Path)
    ap.add_argument("--seconds", type=float, required=True, help="how long py-spy sampled")
    ap.add_argument("--rate", type=int, default=100, help="py-spy's sampling rate (Hz)")
    ap.add_argument("--title", default="", help="what was profiled")
    a = ap.parse_args()
    summarize(a.raw, a.seconds, a.rate, a.title or a.raw.stem)
    print(f"wrote {a.raw.with_suffix('.md')}")
