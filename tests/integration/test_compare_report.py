"""`attractor report RUN_A RUN_B` (and `compare --report`): two tiny runs side by side."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from attractor.runs.launch import train
from tests.conftest import assert_user_error, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(lr: float, hidden: int = 8) -> object:
    return tiny_config(
        task={"hidden": [hidden]},
        trainer={"steps": 8, "batch_size": 16, "lr": lr},
        plan={"members": 3},
        run={"snapshots": 2},
    )


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison without --out lands in ./runs/compare-<hash>: here, not in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs of one task with different learning rates, and one of another task."""
    root = tmp_path_factory.mktemp("compare")
    made = {"slow": _config(0.01), "fast": _config(0.2), "wide": _config(0.01, hidden=12)}
    for name, config in made.items():
        train(config, root / name)
    return {name: root / name for name in made}


def _listing(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size and mtime (to show nothing was written there)."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_page_puts_both_runs_side_by_side(
    runs: dict[str, Path], cli: Callable, tmp_path: Path
) -> None:
    before = {name: _listing(path) for name, path in runs.items()}
    out = tmp_path / "side"
    result = cli("report", runs["slow"], runs["fast"], "--out", out)
    assert result.code == 0, result.err
    assert f"report: {out / 'report.html'}" in result.out
    assert "pairwise_js:" in result.out  # each measure's reading, in plain words

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "A · slow" in page and "A · fast" not in page and "B · fast" in page
    for key in ("compare-runs", "compare-paired", "compare-final", "compare-clouds"):
        assert f'<section id="{key}"' in page
    # The config diff names the one key that differs, with both values.
    diff = page.split("What differs")[1].split("</table>")[0]
    assert "trainer.lr" in diff and "0.01" in diff and "0.2" in diff
    assert "trainer.momentum" not in diff
    # The paired table: every measure with A, B and A - B, each with its interval.
    paired = page.split('id="compare-paired"')[1].split("</section>")[0]
    for measure in ("accuracy", "loss", "accuracy_sd", "pairwise_js", "disagreement"):
        assert re.search(f"<td[^>]*>{measure}</td>", paired)
    assert re.search(r"[+-]\d[.\d]*(e-?\d+)? \[[+-]\d[.\d]*(e-?\d+)?, [+-]", paired)  # A − B [l, h]
    assert "interval of A - B" in paired and ("excludes 0" in paired or "includes 0" in paired)

    stored = json.loads((out / "compare.json").read_text())
    assert stored["config_diff"] == [{"key": "trainer.lr", "a": 0.01, "b": 0.2}]
    assert {row["measure"] for row in stored["paired"]} >= {"accuracy", "pairwise_js"}
    for row in stored["paired"]:
        assert row["low"] <= row["difference"] <= row["high"] or row["measure"] == "accuracy_sd"
    assert stored["runs"]["A"]["path"] == str(runs["slow"].resolve())
    # Never a file written or touched in either run's directory.
    assert {name: _listing(path) for name, path in runs.items()} == before


@pytest.mark.parametrize("mode", [[], ["--static"]], ids=["interactive", "static"])
def test_page_is_one_file_that_needs_nothing_online(
    runs: dict[str, Path], cli: Callable, tmp_path: Path, mode: list[str]
) -> None:
    out = tmp_path / "offline"
    assert cli("report", runs["slow"], runs["fast"], "--out", out, *mode, "--json").code == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "compare.final.parquet",
        "compare.json",
        "compare.parquet",
        "manifest.json",
        "report.html",
    ]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert ("<script" in page) == (not mode)  # --static: PNGs only, no scripts
    # Inline scripts (plotly.js) mention URLs in their code; what loads is the markup's.
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.DOTALL)
    links = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', markup)
    # Inlined images, and the verdict's links to sections of this page.
    assert links and all(link.startswith(("data:", "#")) for link in links), [
        link[:40] for link in links if not link.startswith(("data:", "#"))
    ]
    assert "<link" not in markup and not re.search(r"@import|url\(\s*['\"]?http", markup)


def test_default_directory_is_its_own_and_reopens(
    runs: dict[str, Path], cli: Callable, tmp_path: Path
) -> None:
    first = cli("report", runs["slow"], runs["fast"], "--json")
    assert first.code == 0, first.err
    made = list((tmp_path / "runs").iterdir())
    assert len(made) == 1 and made[0].name.startswith("compare-")
    # Another spelling of the same runs is the same comparison: the directory reopens.
    relative = os.path.relpath(runs["slow"], tmp_path)  # the cwd (see _in_tmp)
    again = cli("compare", relative, runs["fast"], "--report", "--json")
    assert again.code == 0, again.err
    assert list((tmp_path / "runs").iterdir()) == made
    assert Path(json.loads(again.out)["files"]["html"]).resolve() == made[0] / "report.html"
    # Other settings in the same directory: refused unless --force.
    other = cli(
        "compare", runs["slow"], runs["fast"], "--report", "--draws", "50", "--out", made[0]
    )
    assert_user_error(other, "--force")
    forced = cli(
        "compare",
        runs["slow"],
        runs["fast"],
        "--report",
        "--draws",
        "50",
        "--out",
        made[0],
        "--force",
    )
    assert forced.code == 0, forced.err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("slow", "missing"), ("run B", "does not exist")),
        (("slow", "wide"), ("different [task] sections",)),
        (("slow", "notarun"), ("not an attractor run directory",)),
        (("slow", "slow"), ("same directory",)),
        (("slow", "fast", "--out", "slow/inside"), ("lies inside run A",)),
        (("slow", "--out", "elsewhere"), ("--out and --force go with RUN_B",)),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    runs: dict[str, Path], cli: Callable, tmp_path: Path, args: tuple[str, ...], fragments: tuple
) -> None:
    (tmp_path / "notarun").mkdir()
    where = runs["slow"].parent
    names = {*runs, "missing", "notarun"}
    argv = [str(where / a) if a in names else a for a in args]
    argv = [str(where / a) if a.startswith("slow/") else a for a in argv]
    argv = [str(tmp_path / "notarun") if a.endswith("notarun") else a for a in argv]
    before = {name: _listing(path) for name, path in runs.items()}
    assert_user_error(cli("report", *argv), *fragments)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()
    assert {name: _listing(path) for name, path in runs.items()} == before
