"""worker/junk.py (tests/unit/test_junk.py is models/junk.py's): one writer of the junk table, and
every worker's view converging on it."""
from __future__ import annotations

from sendgate.models.junk import JunkReport
from sendgate.models.policy import Policy
from sendgate.models.similarity import Sketcher
from sendgate.streams.worker.junk import JunkOwner, JunkView

POLICY = Policy(junk_reject_reporters=6)
SKETCH = Sketcher().sketch("WINNER!! You have won a 1000 GBP prize, call 09061701461 to claim now")
T = 1_700_000_000_000


def reports(app: str, reporters: range) -> list[JunkReport]:
    return [JunkReport(f"{app}\x1fe{r}", SKETCH, r, T + r) for r in reporters]


def reporters_seen(view: JunkView) -> int:
    found = view.index.match(SKETCH, POLICY.similarity_threshold)
    return len(found[1].reporters) if found else 0


def test_reports_of_two_workers_all_count_once_the_owner_wrote_them():
    table: dict[bytes, bytes] = {}  # the global table, as every worker reads it
    a, b, owner = JunkView(table, POLICY), JunkView(table, POLICY), JunkOwner(table, POLICY)
    sent_a, sent_b = reports("app-a", range(0, 3)), reports("app-b", range(3, 6))
    for report in sent_a:
        a.report(report)
    for report in sent_b:
        b.report(report)
    assert reporters_seen(a) == reporters_seen(b) == 3  # each counts its own reports at once
    for report in [x for pair in zip(sent_b, sent_a) for x in pair]:  # the topic's order, interleaved
        owner.apply(report)
    assert len(table) == 1  # one template, written by its one writer
    for view in (a, b):
        view.refresh()
        assert reporters_seen(view) == 6
        assert len(view.index) == 1  # the template a worker made up itself is gone


def test_a_report_the_owner_has_not_written_yet_still_counts_after_a_refresh():
    table: dict[bytes, bytes] = {}
    view = JunkView(table, POLICY)
    [report] = reports("app-a", range(1))
    view.report(report)
    view.refresh()  # the owner is behind: the table is still empty
    assert reporters_seen(view) == 1


def test_applying_a_report_twice_changes_nothing():
    table: dict[bytes, bytes] = {}
    owner = JunkOwner(table, POLICY)
    [report] = reports("app-a", range(1))
    owner.apply(report)
    first = dict(table)
    owner.reset()  # as after a rebalance: the owner reads the table again
    owner.apply(report)
    assert table == first


def test_an_aborted_batch_takes_its_reports_back_so_the_retry_sees_the_view_it_first_saw():
    table: dict[bytes, bytes] = {}
    view, owner = JunkView(table, POLICY), JunkOwner(table, POLICY)
    first, second = reports("app-a", range(2))
    view.report(first)
    view.commit()  # its batch was written
    view.report(second)
    assert reporters_seen(view) == 2
    view.abort()  # the broker refused the batch: it is decided again from the same records
    assert reporters_seen(view) == 1
    view.report(second)
    view.commit()
    owner.apply(first)
    owner.apply(second)
    view.refresh()
    assert reporters_seen(view) == 2 and len(view.index) == 1


def test_an_aborted_report_that_made_a_template_leaves_none():
    view = JunkView({}, POLICY)
    [report] = reports("app-a", range(1))
    view.report(report)
    view.abort()
    assert len(view.index) == 0
    view.refresh()
    assert len(view.index) == 0
