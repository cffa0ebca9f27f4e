"""The LM commands end to end on a tiny tiny-lm run: measure, report, lm-compare, lm-search, lm-
export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import write_toml

pytest.importorskip(
    "transformers", reason="the LM commands need transformers (pip install 'attractor[lm]')"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attractor.config import parse_config
    from attractor.runs.launch import train

    root = tmp_path_factory.mktemp("lm")
    config = parse_config(
        {
            "task": {
                "name": "tiny-lm",
                "width": 16,
                "context": 16,
                "layers": 1,
                "heads": 2,
                "windows_per_document": 1,
            },
            "trainer": {"optimizer": "adam", "lr": 0.003, "batch_size": 8, "steps": 4},
            "plan": {"members": 2, "vary": ["init_seed", "data_seed", "bootstrap"]},
            "run": {"snapshots": 1},
        }
    )
    write_toml(root / "c.toml", config)
    train(config, root / "run")
    return root / "run"


def test_measure_and_report_work_on_lm_runs(run: Path, cli: Callable) -> None:
    result = cli("measure", run, "--draws", "50", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert 0 <= data["pairwise_js"]["value"] <= 0.6932 and len(data["loss"]["per_member"]) == 2
    # CKA on residual streams: the embeddings and one block; a member with itself is 1.
    assert list(data["cka"]) == ["embeddings", "block 1"]
    for matrix in data["cka"].values():
        assert (
            abs(matrix[0][0] - 1) < 1e-9
            and abs(matrix[0][1] - matrix[1][0]) < 1e-12
            and -1e-9 <= matrix[0][1] <= 1 + 1e-9
        )
    assert cli("report", run).code == 0
    html = (run / "report.html").read_text()
    assert "next-token" in html and "residual stream" in html


def test_lm_compare_search_and_export(run: Path, tmp_path: Path, cli: Callable) -> None:
    same = cli("lm-compare", f"{run}:0", f"{run}:0", "--draws", "20", "--json")
    assert same.code == 0, same.err
    means = json.loads(same.out)
    assert json.dumps(means)  # JSON-able
    other = cli("lm-compare", f"{run}:0", f"{run}:1", "--draws", "20", "--top-k", "3", "--json")
    assert other.code == 0, other.err
    found = cli(
        "lm-search",
        f"{run}:0",
        f"{run}:1",
        "--budget",
        "16",
        "--length",
        "4",
        "--methods",
        "baseline,gcg",
        "--json",
    )
    assert found.code == 0, found.err
    assert set(json.loads(found.out)["methods"]) == {"baseline", "gcg"}
    exported = cli("lm-export", run, "0", tmp_path / "hf", "--json")
    assert exported.code == 0, exported.err
    assert "config.json" in json.loads(exported.out)["files"]
    again = cli("lm-export", run, "0", tmp_path / "hf")
    assert again.code == 2 and len(again.err.strip().splitlines()) == 1
