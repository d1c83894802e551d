"""junk.py: reported templates (distinct reporters, capped) and the shared index sends match against."""

from __future__ import annotations

import numpy as np

from conftest import PARCEL, T, TEMPLATE, UNRELATED
from sendgate.models.junk import JunkIndex, JunkTemplate
from sendgate.models.similarity import Sketcher

SK = Sketcher()


def template(text: str, last_ts: int = T) -> JunkTemplate:
    return JunkTemplate(SK.sketch(text), last_ts=last_ts)


def test_reporters_are_distinct_and_capped():
    t = template(PARCEL, last_ts=0)
    t.add_reporter(11, T, cap=3)
    t.add_reporter(11, T + 1, cap=3)  # same reporter again: counted once
    t.add_reporter(22, T + 5, cap=3)
    t.add_reporter(33, T + 2, cap=3)
    t.add_reporter(44, T + 3, cap=3)  # beyond the cap: not stored
    assert t.reporters == [11, 22, 33]
    assert t.last_ts == T + 5  # latest report, not the last one processed


def test_template_round_trip_keeps_64_bit_reporters():
    t = template(PARCEL)
    t.reporters = [2**64 - 1, 1, 2**63]
    back = JunkTemplate.from_bytes(t.to_bytes())
    assert np.array_equal(back.sketch, t.sketch)
    assert (back.reporters, back.last_ts) == (t.reporters, t.last_ts)


def test_empty_index_matches_nothing():
    index = JunkIndex()
    assert len(index) == 0
    assert index.match(SK.sketch(PARCEL), 0.6) is None


def test_index_matches_the_most_similar_template_at_or_above_the_threshold():
    index = JunkIndex()
    index.put("a", template(UNRELATED[0]))
    index.put("b", template(PARCEL))
    found = index.match(SK.sketch(TEMPLATE.format(name="Zoe", num="1", url="x.com")), 0.6)
    assert found is not None
    key, tmpl, similarity = found
    assert key == "b"
    assert np.array_equal(tmpl.sketch, SK.sketch(PARCEL))
    assert 0.6 <= similarity < 1.0
    assert index.match(SK.sketch(UNRELATED[1]), 0.6) is None


def test_threshold_is_inclusive():
    index = JunkIndex()
    index.put("a", template(PARCEL))
    assert index.match(SK.sketch(PARCEL), 1.0)[2] == 1.0


def test_index_sees_templates_added_and_removed_after_a_match():
    index = JunkIndex()
    index.put("a", template(UNRELATED[0]))
    assert index.match(SK.sketch(PARCEL), 0.6) is None  # builds the matrix
    index.put("b", template(PARCEL))
    assert index.match(SK.sketch(PARCEL), 0.6)[0] == "b"
    index.remove("b")
    index.remove("missing")  # harmless
    assert len(index) == 1
    assert index.match(SK.sketch(PARCEL), 0.6) is None


def test_oldest_is_the_least_recently_reported():
    index = JunkIndex()
    index.put("a", template(UNRELATED[0], last_ts=T + 5))
    index.put("b", template(UNRELATED[1], last_ts=T + 1))
    index.put("c", template(UNRELATED[2], last_ts=T + 9))
    assert index.oldest() == "b"
