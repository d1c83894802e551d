"""progress.py: the line long-running commands show on a terminal."""
from __future__ import annotations

import re

from sendgate.streams.progress import Progress


def test_a_known_total_gives_a_bar_a_rate_and_an_eta():
    line = Progress("replay", 1_000).line(250)
    assert re.fullmatch(r"replay: \[#{5} {15}\] 25\.0% 250/1,000 events, [\d,]+ events/s, ETA [\d,]+ s", line), line


def test_an_unknown_total_gives_the_count_and_rate():
    assert re.fullmatch(r"publish: 7 lines, [\d,]+ lines/s", Progress("publish", None, "lines").line(7))


def test_nothing_is_drawn_off_a_terminal(capsys):
    bar = Progress("rebuild", 10)
    bar.update(5)
    bar.finish()
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal
