"""local/process.py WorkerProcess: when a worker counts as ready, and what a stopped one answers
(real worker processes: tests/integration/harness.py)."""

from __future__ import annotations

import sys

from sendgate.streams.config import Settings
from sendgate.streams.local.broker import free_port
from sendgate.streams.local.process import WorkerProcess


def test_without_its_web_server_a_worker_is_ready_once_faust_logs_it(tmp_path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"[2026-01-01 00:00:00][INFO] [^Worker]: Starting...\n")
    worker = WorkerProcess(Settings(web_enabled=False), log)
    assert not worker.ready()
    with log.open("ab") as fh:
        fh.write(b"[2026-01-01 00:00:05][INFO] [^Worker]: Ready\n")
    assert worker.ready()
    # with it, the log is not enough: /readyz must answer 200 too (here nothing listens)
    assert not WorkerProcess(Settings(web_port=free_port()), log).ready()


def test_a_worker_never_started_is_not_running_and_stops_at_once(tmp_path):
    worker = WorkerProcess(Settings(), tmp_path / "worker.log")
    assert not worker.running and worker.stop() is None
    worker.kill()
    assert worker.log_tail() == ""  # no log yet
    (tmp_path / "worker.log").write_text("x" * 10 + "the end")
    assert worker.log_tail(7) == "the end"


def test_a_worker_process_gets_its_own_environment_beside_the_settings(tmp_path):
    class Printer(WorkerProcess):
        def argv(self) -> list[str]:
            return [
                sys.executable,
                "-c",
                "import os; print(os.environ['MALLOC_ARENA_MAX'], os.environ['SENDGATE_PARTITIONS'])",
            ]

    worker = Printer(Settings(partitions=3), tmp_path / "worker.log", env={"MALLOC_ARENA_MAX": "2"}).start()
    assert worker.process.wait(timeout=30) == 0
    assert worker.log_tail().split() == ["2", "3"]
