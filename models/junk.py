"""The junk index: texts that recipients reported as junk, shared by every app and sender.

Each reported template is one `JunkTemplate` row (sketch plus the hashed reporters, at most as
many as it takes to reject). `JunkIndex` is the in-memory view a worker matches sends against.
A `JunkReport` is one report as the index applies it (`JunkIndex.apply`): with several workers
the reports go to one owner, which alone writes the rows (streams/worker/junk.py), so that no two
workers' read-modify-writes of one row can lose a reporter.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from .rows import Row, by_field_count, version_first
from .similarity import similarities


@dataclass(slots=True)
class JunkTemplate(Row):
    sketch: np.ndarray
    reporters: list[int] = field(default_factory=list)
    last_ts: int = 0

    row_version = 1  # [sketch in base64, reporters, last_ts] (models/rows.py)
    untagged = by_field_count({3: 1})

    def __copy__(self) -> "JunkTemplate":
        return JunkTemplate(self.sketch, list(self.reporters), self.last_ts)

    def add_reporter(self, reporter: int, ts: int, cap: int) -> None:
        if reporter not in self.reporters and len(self.reporters) < cap:
            self.reporters.append(reporter)
        self.last_ts = max(self.last_ts, ts)

    def to_bytes(self) -> bytes:
        return self.pack([base64.b64encode(self.sketch.astype("<u4").tobytes()).decode(), self.reporters, self.last_ts])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "JunkTemplate":
        blob, reporters, last_ts = cls.unpack(raw)
        return cls(np.frombuffer(base64.b64decode(blob), dtype="<u4").copy(), reporters, last_ts)


@dataclass(frozen=True, slots=True)
class JunkReport(Row):
    template_id: str  # the id a new template gets: the reporting app and event
    sketch: np.ndarray
    reporter: int  # the reporting recipient, hashed
    ts: int

    row_version = 1  # [template_id, sketch in base64, reporter, ts]: a message, versioned as a row is
    untagged = version_first

    def to_bytes(self) -> bytes:
        return self.pack(
            [self.template_id, base64.b64encode(self.sketch.astype("<u4").tobytes()).decode(), self.reporter, self.ts]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> "JunkReport":
        template_id, blob, reporter, ts = cls.unpack(raw)
        return cls(template_id, np.frombuffer(base64.b64decode(blob), dtype="<u4").copy(), reporter, ts)


class JunkIndex:
    def __init__(self) -> None:
        self._templates: dict[str, JunkTemplate] = {}
        self._keys: list[str] = []
        self._matrix: np.ndarray | None = None  # rebuilt lazily after a change

    def __len__(self) -> int:
        return len(self._templates)

    def __contains__(self, key: str) -> bool:
        return key in self._templates

    def get(self, key: str) -> JunkTemplate | None:
        return self._templates.get(key)

    def put(self, key: str, template: JunkTemplate) -> None:
        if key not in self._templates:
            self._matrix = None
        self._templates[key] = template

    def remove(self, key: str) -> None:
        if self._templates.pop(key, None) is not None:
            self._matrix = None

    def match(self, sketch: np.ndarray, threshold: float) -> tuple[str, JunkTemplate, float] | None:
        """The most similar reported template at or above `threshold`, if any."""
        if not self._templates:
            return None
        if self._matrix is None:
            self._keys = list(self._templates)
            self._matrix = np.stack([self._templates[k].sketch for k in self._keys])
        sims = similarities(sketch, self._matrix)
        best = int(np.argmax(sims))
        if sims[best] < threshold:
            return None
        key = self._keys[best]
        return key, self._templates[key], float(sims[best])

    def oldest(self) -> str:
        return min(self._templates, key=lambda k: self._templates[k].last_ts)

    def apply(
        self, report: JunkReport, threshold: float, reject_reporters: int, max_templates: int
    ) -> dict[str, JunkTemplate | None]:
        """Count a report: on the most similar template, or on a new one (evicting the least
        recently reported when the index is full). Returns the rows it changed (None: evicted).
        Applying the same report again changes nothing but the row's rewrite."""
        changed: dict[str, JunkTemplate | None] = {}
        found = self.match(report.sketch, threshold)
        if found is None:
            if len(self) >= max_templates:
                oldest = self.oldest()
                self.remove(oldest)
                changed[oldest] = None
            template_id, template = report.template_id, JunkTemplate(report.sketch)
        else:
            template_id, template, _ = found
        template.add_reporter(report.reporter, report.ts, reject_reporters)
        self.put(template_id, template)
        changed[template_id] = template
        return changed
