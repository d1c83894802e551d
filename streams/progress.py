"""A progress line for long-running commands (publish, replay, rebuild): bar, rate and ETA, on a
terminal only (redirected output gets the final summary alone)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, what: str, total: int | None, unit: str = "events") -> None:
        self.what, self.total, self.unit = what, total, unit
        self.started = time.monotonic()
        self.shown = 0.0
        self.tty = sys.stderr.isatty()

    def line(self, done: int, rate_done: int | None = None) -> str:
        """`done` of `total` (in `unit`); `rate_done` counts what the rate is of (default `done`)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (done if rate_done is None else rate_done) / elapsed
        per = "lines/s" if rate_done is not None else f"{self.unit}/s"
        if not self.total:
            return f"{self.what}: {done:,} {self.unit}, {rate:,.0f} {per}"
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 20)
        eta = (elapsed / share - elapsed) if share > 0 else float("inf")
        if eta == float("inf"):
            return f"{self.what}: [{bar:<20}]  0.0%"
        return (
            f"{self.what}: [{bar:<20}] {share:5.1%} {done:,}/{self.total:,} {self.unit}, {rate:,.0f} {per}, "
            f"ETA {eta:,.0f} s"
        )

    def update(self, done: int, rate_done: int | None = None) -> None:
        now = time.monotonic()
        if self.tty and now - self.shown >= 0.25:
            self.shown = now
            print("\r" + self.line(done, rate_done), end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)
