"""state.after_unclean_stop: after kill -9, the state table's local stores are kept under
at_least_once (they hold only acknowledged, whole batches), every other local store is removed."""
from __future__ import annotations

from pathlib import Path

from sendgate.streams.worker.state import after_unclean_stop


def stores(root: Path) -> set[str]:
    return {p.name for p in (root / "v1" / "tables").iterdir()}


def make(root: Path) -> None:
    tables = root / "v1" / "tables"
    for name in ("state-0.db", "state-7.db", "junk-0.db", "apps-3.db", "state-backups", "junk-backups"):
        (tables / name).mkdir(parents=True)
        (tables / name / "CURRENT").write_text("x")


def test_at_least_once_keeps_the_state_stores_and_removes_the_global_tables(tmp_path):
    make(tmp_path)
    removed = after_unclean_stop(tmp_path, keep_state=True)
    assert stores(tmp_path) == {"state-0.db", "state-7.db"}
    assert sorted(removed) == ["apps-3.db", "junk-0.db", "junk-backups", "state-backups"]
    assert (tmp_path / "v1" / "tables" / "state-0.db" / "CURRENT").read_text() == "x"


def test_exactly_once_removes_every_store(tmp_path):
    make(tmp_path)
    after_unclean_stop(tmp_path, keep_state=False)
    assert stores(tmp_path) == set()


def test_a_store_directory_that_does_not_exist_is_nothing_to_do(tmp_path):
    assert after_unclean_stop(tmp_path / "missing", keep_state=True) == []
