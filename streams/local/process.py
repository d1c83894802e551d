"""A worker (or an API server) as a child process: how the demo, the tests and the benchmarks run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..config import Settings


class WorkerProcess:
    command = "worker"  # the `sendgate` subcommand it runs

    def __init__(
        self, settings: Settings, log_path: str | os.PathLike, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = Path(log_path)
        self.args = args
        self.env = env or {}  # more environment, beside the settings' (e.g. glibc's MALLOC_ARENA_MAX)
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sendgate.streams.cli", self.command, *self.args]

    def start(self) -> "WorkerProcess":
        env = {**os.environ, **self.settings.to_env(), **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv(),
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 120.0) -> "WorkerProcess":
        """Wait until the worker's /readyz answers 200 (recovered, not rebalancing, the gate agent
        running); without its web server, until Faust logs it ready (needs log level info).

        Records that arrive while a worker is still recovering can be dropped from Faust's
        in-memory queues when recovery ends (faust-streaming #596): the partition then stalls
        until the next rebalance. Publishing after this returns avoids that window.
        """
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.running:
                raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.command} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)  # poll interval
        return self

    def ready(self) -> bool:
        # Faust's own "Ready" (logged at level info) first: /readyz can answer 200 in the moment
        # between a first, partial assignment and the rebalance that follows it.
        logged = b"[^Worker]: Ready" in self.log_path.read_bytes()
        if not self.settings.web_enabled or not logged:
            return logged
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/readyz", timeout=2) as answer:
                return answer.status == 200
        except (OSError, ValueError):  # not listening yet, or 503 (HTTPError is an OSError)
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 90.0) -> int | None:
        """Graceful stop (SIGTERM: Faust flushes and commits offsets), then SIGKILL if it hangs.

        Returns the exit code: 0 after a clean stop, -9 if it had to be killed. The flush can wait
        for the producer's retries (e.g. a just-created topic without a leader yet), hence the
        generous timeout.
        """
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def kill(self) -> None:
        """Crash it: SIGKILL, no chance to commit or flush."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ApiProcess(WorkerProcess):
    """`sendgate api` on 127.0.0.1:`port`; ready once its /readyz answers 200 (its decisions
    reader positioned: a send posted then cannot miss its decision)."""

    command = "api"

    def __init__(self, settings: Settings, log_path: str | os.PathLike, port: int) -> None:
        super().__init__(settings, log_path, "--port", str(port))
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                return answer.status == 200
        except (OSError, ValueError):
            return False
