"""The junk index: texts that recipients reported as junk, shared by every app and sender.

Each reported template is one `JunkTemplate` row (sketch plus the hashed reporters, at most as
many as it takes to reject). `JunkIndex` is the in-memory view a worker matches sends against.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import orjson

from .similarity import similarities


@dataclass(slots=True)
class JunkTemplate:
    sketch: np.ndarray
    reporters: list[int] = field(default_factory=list)
    last_ts: int = 0

    def add_reporter(self, reporter: int, ts: int, cap: int) -> None:
        if reporter not in self.reporters and len(self.reporters) < cap:
            self.reporters.append(reporter)
        self.last_ts = max(self.last_ts, ts)

    def to_bytes(self) -> bytes:
        return orjson.dumps([base64.b64encode(self.sketch.astype("<u4").tobytes()).decode(),
                             self.reporters, self.last_ts])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "JunkTemplate":
        blob, reporters, last_ts = orjson.loads(raw)
        return cls(np.frombuffer(base64.b64decode(blob), dtype="<u4").copy(), reporters, last_ts)


class JunkIndex:
    def __init__(self) -> None:
        self._templates: dict[str, JunkTemplate] = {}
        self._keys: list[str] = []
        self._matrix: np.ndarray | None = None  # rebuilt lazily after a change

    def __len__(self) -> int:
        return len(self._templates)

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
