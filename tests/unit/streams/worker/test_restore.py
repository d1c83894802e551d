"""restore.py store_path: the fast restore writes the stores the worker's Faust app opens, and a
restart after kill -9 keeps (restoring from a changelog on a broker: tests/integration/test_kafka_restore.py)."""

from __future__ import annotations

from pathlib import Path

from sendgate.streams.config import Settings
from sendgate.streams.worker.app import build_worker
from sendgate.streams.worker.restore import store_path
from sendgate.streams.worker.checkpoint import after_unclean_stop


def test_the_restored_store_of_a_partition_is_the_one_faust_opens_and_survives_an_unclean_stop(tmp_path):
    settings = Settings(data_dir=str(tmp_path), group_id="gate-eu", web_enabled=False, auth=False)
    worker = build_worker(settings, ticker=False)  # never started: no broker needed
    path = store_path(settings, 5)
    assert path == worker.store.table.data.partition_path(5)
    path.mkdir(parents=True)
    (path.parent / "junk-0.db").mkdir()
    # the worker's store directory after kill -9 (streams/worker/lifecycle.py), under at_least_once
    removed = after_unclean_stop(Path(settings.data_dir) / settings.group_id, keep_state=True)
    assert "junk-0.db" in removed and path.is_dir() and path.name not in removed
