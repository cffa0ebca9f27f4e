"""Progress on stderr: plain periodic lines when it is not a terminal, a rich bar when it is."""

from __future__ import annotations

import io
import re

from attractor.runs.progress import PlainLines, Progress

LINE = re.compile(r"training: (\d+)/4000 member-steps \((\d+) %\), (\d+) s")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_tenth_of_the_work() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = PlainLines(4000, "training 8 of 8 members", stream, clock=clock)
    lines.start()
    for _ in range(400):
        clock.now += 0.01
        lines.advance(10)
    lines.stop()
    out = stream.getvalue().splitlines()
    assert out[0] == "training 8 of 8 members"
    found = [LINE.fullmatch(line) for line in out[1:]]
    assert all(found), out
    assert [int(m.group(2)) for m in found] == list(range(10, 101, 10))
    assert found[2].group(0) == "training: 1200/4000 member-steps (30 %), 1 s"


def test_plain_lines_every_ten_seconds_when_slow() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = PlainLines(4000, "label", stream, clock=clock)
    lines.start()
    for _ in range(30):
        clock.now += 1.0
        lines.advance(1)  # 30 member-steps in 30 s: far from a tenth
    assert stream.getvalue().splitlines()[1:] == [
        "training: 10/4000 member-steps (0 %), 10 s",
        "training: 20/4000 member-steps (0 %), 20 s",
        "training: 30/4000 member-steps (0 %), 30 s",
    ]
    lines.stop()
    assert len(stream.getvalue().splitlines()) == 4  # nothing new since the last line


def test_progress_off_a_terminal_prints_lines_not_a_redrawn_bar() -> None:
    stream = io.StringIO()
    with Progress(total=100, enabled=True, label="training 1 of 1 members", stream=stream) as bar:
        for _ in range(100):
            bar.advance(1)
    out = stream.getvalue()
    assert "\r" not in out and "\x1b" not in out and "…" not in out
    assert out.splitlines()[-1].startswith("training: 100/100 member-steps (100 %)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_keeps_the_rich_bar() -> None:
    stream = _Terminal()
    with Progress(total=10, enabled=True, label="training", stream=stream) as bar:
        bar.advance(10)
    assert "10/10" in stream.getvalue() and "training:" not in stream.getvalue()


def test_progress_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    with Progress(total=10, enabled=False, label="training", stream=stream) as bar:
        bar.advance(10)
    assert stream.getvalue() == ""
