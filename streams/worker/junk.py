"""The junk index across workers: one writer, every worker's view converging on it.

Reports of every app count on one shared index (a text reported as junk is suspicious on every
sender). Two workers that each read a template row, add their reporter and write it back lose
one of the reporters, so the rows have a single writer: a worker that decides a `junk_report`
sends the report (`JunkReport`) to `<prefix>junk-reports`, a topic of one partition, and the
worker that owns that partition (`JunkOwner`) applies the reports in order to its index and
alone writes the global `junk` table. Every worker's `JunkView` loads the table's changes every
few seconds; the reports it sent itself count in its view at once, and are applied again over
each refresh (on the owner's templates once it has written them) until the owner's rows must
have caught up with them (applying a report twice changes nothing).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from copy import copy
from typing import Any

from sendgate.models.junk import JunkIndex, JunkReport, JunkTemplate
from sendgate.models.policy import Policy

log = logging.getLogger("sendgate.junk")

JUNK_REPORTS = "junk-reports"  # the topic name after the prefix: one partition, the owner's input
OWN_REPORTS_S = 60.0  # how long this worker re-applies its own reports over refreshes of the table


def apply(index: JunkIndex, report: JunkReport, policy: Policy) -> dict[str, JunkTemplate | None]:
    return index.apply(report, policy.similarity_threshold, policy.junk_reject_reporters, policy.max_junk_templates)


class JunkView:
    """A worker's junk index: the global table's rows, plus the reports it sent and the owner may
    not have written yet."""

    def __init__(self, table: Any, policy: Policy) -> None:
        self.table = table
        self.policy = policy
        self.index = JunkIndex()
        self._seen: dict[bytes, bytes] = {}  # the table's rows as last loaded
        self._own: deque[tuple[float, JunkReport]] = deque()
        self._local_only: set[str] = set()  # templates of the index that are not (yet) the owner's
        self._undo: dict[str, JunkTemplate | None] = {}  # the batch's changes: template -> as it was
        self._batch_reports = 0
        self._loaded = False

    def report(self, report: JunkReport) -> None:
        """Count one of this worker's reports in its view at once (later sends of the batch see it);
        `abort` takes the batch's reports back, `commit` keeps them."""
        for template_id in self._touched(report):
            if template_id not in self._undo:
                old = self.index.get(template_id)
                self._undo[template_id] = None if old is None else copy(old)
        self._apply_own(report)
        self._own.append((time.monotonic(), report))
        self._batch_reports += 1

    def commit(self) -> None:
        self._undo.clear()
        self._batch_reports = 0

    def abort(self) -> None:
        """Undo the failed batch's reports, so that deciding it again sees the view it first saw."""
        for template_id, old in self._undo.items():
            if old is None:
                self.index.remove(template_id)
                self._local_only.discard(template_id)
            else:
                self.index.put(template_id, old)
        for _ in range(self._batch_reports):
            self._own.pop()
        self.commit()

    def _touched(self, report: JunkReport) -> list[str]:
        """The templates applying `report` may change: the one it matches (or its new one) and
        the one it may evict."""
        found = self.index.match(report.sketch, self.policy.similarity_threshold)
        touched = [found[0] if found else report.template_id]
        if found is None and len(self.index) >= self.policy.max_junk_templates:
            touched.append(self.index.oldest())
        return touched

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    def refresh(self) -> None:
        """Bring the index up to date with the global table (the owner's writes), then count this
        worker's recent reports over it again: on the owner's templates where it has them, so a
        template this worker made up before the owner wrote its own does not outlive the refresh."""
        current = dict(self.table.items())
        for key in set(self._seen) - set(current):
            self.index.remove(key.decode())
        for template_id in self._local_only:
            self.index.remove(template_id)
        for key, raw in current.items():
            if self._seen.get(key) != raw or key.decode() not in self.index:
                self.index.put(key.decode(), JunkTemplate.from_bytes(raw))
        self._seen, self._local_only = current, set()
        horizon = time.monotonic() - OWN_REPORTS_S
        while self._own and self._own[0][0] < horizon:
            self._own.popleft()
        for _, report in self._own:
            self._apply_own(report)
        self._loaded = True

    def _apply_own(self, report: JunkReport) -> None:
        for template_id in apply(self.index, report, self.policy):
            if template_id.encode() not in self._seen:
                self._local_only.add(template_id)


class JunkOwner:
    """The single writer of the junk table: the worker that owns `<prefix>junk-reports`."""

    def __init__(self, table: Any, policy: Policy) -> None:
        self.table = table
        self.policy = policy
        self._index: JunkIndex | None = None

    def reset(self) -> None:
        """After a rebalance: the partition may have moved, read the table again before writing."""
        self._index = None

    def apply(self, report: JunkReport) -> None:
        if self._index is None:
            self._index = JunkIndex()
            for key, raw in self.table.items():
                self._index.put(key.decode(), JunkTemplate.from_bytes(raw))
        for template_id, template in apply(self._index, report, self.policy).items():
            if template is None:
                self.table.pop(template_id.encode(), None)
            else:
                self.table[template_id.encode()] = template.to_bytes()
