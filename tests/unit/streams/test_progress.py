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


def test_nothing_done_yet_shows_an_empty_bar_and_more_than_the_total_a_full_one():
    bar = Progress("rebuild", 400)
    assert bar.line(0) == "rebuild: [                    ]  0.0%"
    assert re.fullmatch(r"rebuild: \[#{20}\] 100\.0% 500/400 events, [\d,]+ events/s, ETA 0 s", bar.line(500))


def test_a_bar_of_bytes_can_give_its_rate_in_lines():
    line = Progress("publish", 2_000_000, "bytes").line(1_000_000, rate_done=4_321)
    assert re.fullmatch(r"publish: \[#{10} {10}\] 50\.0% 1,000,000/2,000,000 bytes, [\d,]+ lines/s, ETA [\d,]+ s", line)


class Terminal:
    """Standard error as a terminal: what is printed to it, in order."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_on_a_terminal_the_line_is_redrawn_at_most_four_times_a_second(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = Progress("replay", 10)
    bar.update(1)
    bar.update(2)  # at once after the first: not drawn
    bar.shown -= 0.25  # a quarter of a second later
    bar.update(3)
    bar.finish()
    drawn = "".join(terminal.written).split("\r")
    assert drawn[0] == "" and len(drawn) == 3, drawn  # each drawing starts at the line's beginning
    assert re.fullmatch(r"replay: \[#{2} {18}\] 10\.0% 1/10 events, .*", drawn[1])
    assert re.fullmatch(r"replay: \[#{6} {14}\] 30\.0% 3/10 events, .* s\n", drawn[2])  # finish ends the line
