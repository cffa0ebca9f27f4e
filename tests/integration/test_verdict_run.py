"""The verdict on a real tiny run: unmeasured, `info` says so; measured, `measure --json` and
`info --json` carry it, `info` prints it first, and the report shows it before any section.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attractor.runs.launch import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verdict") / "run"
    train(tiny_config(), root)
    return root


def test_an_unmeasured_run_says_what_is_missing(cli, trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    result = cli("info", run)
    assert result.code == 0, result.err
    first = result.out.splitlines()[:2]
    assert first[0] == "verdict:"
    assert first[1].strip() == (
        f"[not measured] Do the members land in one basin? (not measured yet: "
        f"`attractor measure {run}`)"
    )
    data = json.loads(cli("info", run, "--json").out)
    statuses = {x["id"]: x["status"] for x in data["verdict"]["lines"]}
    assert statuses == {
        "basins": "not measured",
        "disagreement": "not measured",
        "lmc": "not measured",
        "diverged": "yes",
    }


def test_a_measured_run_carries_its_verdict_everywhere(cli, trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    measured = cli("measure", run, "--draws", "50", "--json")
    assert measured.code == 0, measured.err
    from_measure = json.loads(measured.out)["verdict"]
    ids = [x["id"] for x in from_measure["lines"]]
    assert ids[:3] == ["basins", "disagreement", "lmc"] and ids[-1] == "diverged"
    assert all(x["status"] in ("yes", "no", "unclear") for x in from_measure["lines"])
    disagreement = next(x for x in from_measure["lines"] if x["id"] == "disagreement")
    assert disagreement["low"] <= disagreement["value"] <= disagreement["high"]

    # info reads the same stored results: the same verdict.
    info = cli("info", run, "--json")
    assert info.code == 0, info.err
    assert json.loads(info.out)["verdict"] == from_measure
    text = cli("info", run).out.splitlines()
    assert text[0] == "verdict:" and text[1].lstrip().startswith("[")
    assert any(line.strip().startswith("thresholds:") for line in text)

    from attractor.report import render_directory

    page = render_directory(run).read_text(encoding="utf-8")
    block = page.index('<div id="verdict"')
    assert page.index("</header>") < block < page.index("<section")
    assert 'href="#basins"' in page[block : page.index("<section")]
