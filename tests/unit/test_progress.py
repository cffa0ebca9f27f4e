"""Progress of every long command: custom units and stages, and on the CLI's stderr only.

The CLI tests run in this process (the ``cli`` fixture), where stderr is pytest's capture:
not a terminal, so progress comes as plain lines. With ``--json`` there is none, and stdout
is one JSON document either way.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attractor.runs.progress import PlainLines, Progress, Stages
from tests.conftest import CliResult, tiny_config, write_toml

pytestmark = pytest.mark.usefixtures("one_thread")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---- the building blocks ---------------------------------------------------------------


def test_plain_lines_with_a_custom_name_and_unit() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = PlainLines(
        5, "rendering page.html", stream, name="report", unit="sections", clock=clock
    )
    lines.start()
    for _ in range(5):
        clock.now += 1.0
        lines.advance(1)
    lines.stop()
    assert stream.getvalue().splitlines() == [
        "rendering page.html",
        "report: 1/5 sections (20 %), 1 s",
        "report: 2/5 sections (40 %), 2 s",
        "report: 3/5 sections (60 %), 3 s",
        "report: 4/5 sections (80 %), 4 s",
        "report: 5/5 sections (100 %), 5 s",
    ]


def test_progress_passes_its_name_and_unit_to_the_plain_lines() -> None:
    stream = io.StringIO()
    with Progress(3, True, "searching", stream, name="search", unit="rounds") as bar:
        for _ in range(3):
            bar.advance()  # one unit by default
    out = stream.getvalue().splitlines()
    assert out[0] == "searching"
    assert out[-1].startswith("search: 3/3 rounds (100 %)")
    assert not any("member-steps" in line for line in out)


def test_progress_on_a_terminal_shows_the_custom_unit_in_the_bar() -> None:
    stream = _Terminal()
    with Progress(4, True, "rendering", stream, name="report", unit="sections") as bar:
        bar.advance(4)
    text = stream.getvalue()
    assert "4/4" in text and "sections" in text and "member-steps" not in text
    assert "report:" not in text  # a bar, not plain lines


def test_progress_defaults_are_training_member_steps() -> None:
    stream = io.StringIO()
    with Progress(total=2, enabled=True, label="training 1 of 1 members", stream=stream) as bar:
        bar.advance(2)
    assert stream.getvalue().splitlines()[-1].startswith("training: 2/2 member-steps (100 %)")


def test_stages_one_line_each_and_done() -> None:
    stream, clock = io.StringIO(), _Clock()
    with Stages("hparam-map", 2, True, stream, clock=clock) as stages:
        stages.begin("training the grid")
        clock.now = 9.4
        stages.begin("measuring 13 cells")
        clock.now = 10.2
    assert stream.getvalue().splitlines() == [
        "hparam-map [1/2] at 0 s: training the grid",
        "hparam-map [2/2] at 9 s: measuring 13 cells",
        "hparam-map: done in 10 s",
    ]


def test_stages_say_nothing_when_off_or_after_an_error() -> None:
    quiet = io.StringIO()
    with Stages("measure", 2, False, quiet) as stages:
        stages.begin("function space")
    assert quiet.getvalue() == ""
    failed = io.StringIO()
    with pytest.raises(ValueError), Stages("measure", 2, True, failed) as stages:
        stages.begin("function space")
        raise ValueError
    assert failed.getvalue().splitlines() == ["measure [1/2] at 0 s: function space"]


def test_stages_write_lines_on_a_terminal_too() -> None:
    # A stage may draw its own bar (training does): the stages never hold a live display.
    stream = _Terminal()
    with Stages("shortcuts", 1, True, stream) as stages:
        stages.begin("variant 'sgd'")
    assert stream.getvalue().splitlines()[0] == "shortcuts [1/1] at 0 s: variant 'sgd'"
    assert "\x1b" not in stream.getvalue()


# ---- the commands ------------------------------------------------------------------------

#: Any progress line: a stage, the end of the stages, counted work (and its label).
PROGRESS = re.compile(
    r"^(\S+ \[\d+/\d+\] at \d+ s: .+|\S+: done in \d+ s|\S+: \d+/\d+ \S+ \(\d+ %\), \d+ s"
    r"|rendering .+|training \d+ of \d+ members.*|searching: .+)$"
)


def _stderr_lines(result: CliResult) -> list[str]:
    return result.err.strip().splitlines()


def _assert_progress(result: CliResult, *expected: str) -> list[str]:
    """Exit 0; every stderr line is progress and each pattern matches one of them."""
    assert result.code == 0, result.err
    lines = _stderr_lines(result)
    assert all(PROGRESS.match(line) for line in lines), lines
    for pattern in expected:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines)
    return lines


def _assert_json_only(result: CliResult) -> dict[str, Any]:
    """Exit 0, nothing on stderr, and stdout one JSON document."""
    assert result.code == 0, result.err
    assert result.err == ""
    return json.loads(result.out)


def _config() -> Any:
    return tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 6, "batch_size": 16},
        plan={"members": 3},
        run={"snapshots": 2},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished three-member run (what measure and diff read)."""
    from attractor.runs.launch import train

    root = tmp_path_factory.mktemp("progress") / "run"
    train(_config(), root)
    return root


def test_measure_shows_its_stages_on_stderr(cli: Callable[..., CliResult], run_dir: Path) -> None:
    shown = cli("measure", run_dir, "--draws", "20")
    lines = _assert_progress(
        shown,
        r"measure \[1/5\] at \d+ s: function space: 3 members on \d+ test examples",
        r"measure \[5/5\] at \d+ s: linear mode connectivity: \d+ pairs",
        r"measure: done in \d+ s",
    )
    assert [line.split(" at ")[0] for line in lines[:-1]] == [
        f"measure [{i}/5]" for i in range(1, 6)
    ]
    assert "measure [" not in shown.out  # progress never on stdout
    data = _assert_json_only(cli("measure", run_dir, "--draws", "20", "--json"))
    assert "summary" in json.dumps(data)


def test_report_counts_its_sections(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attractor.report import render_directory

    capsys.readouterr()
    page = render_directory(run_dir, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[0] == f"rendering {page}"
    counted = [
        re.fullmatch(r"report: (\d+)/(\d+) sections \((\d+) %\), \d+ s", x) for x in lines[1:]
    ]
    assert all(counted), lines
    assert counted[-1] and counted[-1].group(1) == counted[-1].group(2)  # every section done
    render_directory(run_dir)  # quiet by default
    assert capsys.readouterr().err == ""


def test_report_command_measures_and_renders_with_progress_on_stderr(
    cli: Callable[..., CliResult], run_dir: Path
) -> None:
    shown = cli("report", run_dir)
    _assert_progress(
        shown,
        r"measure \[1/5\] at \d+ s: function space: 3 members on \d+ test examples",
        r"report: (\d+)/\1 sections \(100 %\), \d+ s",
    )
    assert shown.out.strip() == f"report: {run_dir / 'report.html'}"
    assert _assert_json_only(cli("report", run_dir, "--json")) == {
        "report": str(run_dir / "report.html")
    }


def test_diff_shows_its_stages_and_its_page(
    cli: Callable[..., CliResult], run_dir: Path, tmp_path: Path
) -> None:
    args = ["diff", f"{run_dir}:0", f"{run_dir}:1", "--points", "2", "--budget", "0"]
    args += ["--restarts", "1", "--steps", "2"]
    _assert_progress(
        cli(*args, "--out", tmp_path / "shown"),
        r"diff \[1/3\] at \d+ s: search: 2 points x 1 restarts x 2 PGD steps on 2 models",
        r"diff \[3/3\] at \d+ s: certificate: one-shot bounds on 2 points",
        r"diff: done in \d+ s",
        rf"rendering {re.escape(str(tmp_path / 'shown' / 'report.html'))}",
        r"report: (\d+)/\1 sections \(100 %\), \d+ s",
    )
    data = _assert_json_only(cli(*args, "--out", tmp_path / "json", "--json"))
    assert data["files"]["json"].endswith("diff.json")


def test_hparam_map_shows_the_outer_stages_around_training(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "c.toml", _config())
    args = ["hparam-map", config, "--lr", "0.01:0.1:2", "--momentum", "0", "--seeds", "2"]
    args += ["--draws", "10"]
    lines = _assert_progress(
        cli(*args, "--out", tmp_path / "shown"),
        r"hparam-map \[1/2\] at \d+ s: training the grid: 2 cells x 2 seeds = 4 members",
        r"training: 24/24 member-steps \(100 %\), \d+ s",  # the inner run's own progress
        r"hparam-map \[2/2\] at \d+ s: measuring 2 cells: .+",
        r"hparam-map: done in \d+ s",
    )
    first, second = (i for i, x in enumerate(lines) if x.startswith("hparam-map ["))
    assert any(x.startswith("training: ") for x in lines[first:second])  # training in between
    data = _assert_json_only(cli(*args, "--out", tmp_path / "json", "--json"))
    assert "cells" in json.dumps(data)


def test_instability_and_shortcuts_show_their_stages(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "c.toml", _config())
    instability = ["instability", config, "--spawn-steps", "0,3", "--pairs", "2"]
    _assert_progress(
        cli(*instability, "--out", tmp_path / "inst"),
        r"instability \[1/3\] at \d+ s: training the parent: 6 steps",
        r"instability \[3/3\] at \d+ s: spawn step 3: training 4 copies for 3 steps, 2 paths",
    )
    _assert_json_only(cli(*instability, "--out", tmp_path / "inst-json", "--json"))
    shortcuts = ["shortcuts", config, "-t", "sgd:optimizer=sgd", "-t", "adam:optimizer=adam"]
    shortcuts += ["--seeds", "2", "--draws", "10"]
    _assert_progress(
        cli(*shortcuts, "--out", tmp_path / "sc"),
        r"shortcuts \[1/2\] at \d+ s: variant 'sgd': training and measuring 2 members",
        r"shortcuts \[2/2\] at \d+ s: variant 'adam': training and measuring 2 members",
    )
    _assert_json_only(cli(*shortcuts, "--out", tmp_path / "sc-json", "--json"))


def test_trainer2_counts_the_rounds_of_its_search(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    mapping = _config().resolved()
    mapping["trainer2"] = {
        "trials": 2,
        "startup_trials": 1,
        "sampler_seeds": 2,
        "validation_bootstraps": 0,
        "final_members": 2,
        "draws": 10,
        "threads": 1,
    }
    config = write_toml(tmp_path / "t2.toml", mapping)
    _assert_progress(
        cli("trainer2", config, "--no-report", "--out", tmp_path / "shown"),
        r"trainer2 \[1/3\] at \d+ s: search: 2 studies x 2 trials \(in lockstep\)",
        r"searching: 2 rounds of training",
        r"search: 2/2 rounds \(100 %\), \d+ s",
        r"trainer2 \[2/3\] at \d+ s: final ensembles: .+",
        r"trainer2 \[3/3\] at \d+ s: spread of the outcomes .+",
        r"trainer2: done in \d+ s",
    )
    _assert_json_only(cli("trainer2", config, "--no-report", "--out", tmp_path / "j", "--json"))
