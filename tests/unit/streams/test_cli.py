"""cli.py: a command that meets no broker says so in one line and exits 2 (no traceback)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sendgate.streams.local.broker import free_port


@pytest.mark.parametrize("command", [["publish", "-"], ["replay", "--name", "x"], ["rebuild"]])
def test_an_unreachable_broker_is_one_line_and_exit_2(command):
    nobody = f"127.0.0.1:{free_port()}"  # a free port: nothing listens there
    out = subprocess.run([sys.executable, "-m", "sendgate.streams.cli", *command],
                         input=b'{"type":"opt_in","event_id":"o","app":"a","userkey":"u"}\n', capture_output=True,
                         timeout=120, env={**os.environ, "SENDGATE_BOOTSTRAP": nobody})
    assert out.returncode == 2, out.stderr.decode()
    assert out.stderr.decode().strip().splitlines() == [
        f"sendgate: cannot reach Kafka at {nobody}: start one with `sendgate broker`, or point SENDGATE_BOOTSTRAP "
        f"(or --bootstrap) at a running broker"]
