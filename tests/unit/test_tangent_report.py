"""The report section renders from a result and from the saved JSON alike."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from attractor.report.sections import Context, section_for
from attractor.report.sections.tangent import (
    hypergradient_table,
    tangent_section,
)
from attractor.runs.store import RunStore
from attractor.tangent.store import TangentResult, read_result, summarize


def _result(out: Path) -> TangentResult:
    curves = pd.DataFrame(
        [
            {
                "member": m,
                "step": s,
                "log_growth_top": 0.1 * s,
                "function_growth_top": 0.3 + s,
                "exponent_0": 0.01,
                "test_loss": 1.0,
            }
            for m in (0, 1)
            for s in (0, 2, 4)
        ]
    )
    members = pd.DataFrame(
        [
            {
                "member": m,
                "optimizer": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "leading_exponent": 0.01,
                "random_growth": 1.5,
                "power_top_growth": 3.0 + m,
                "function_growth_top": 4.0,
                "diverged_step": None,
                "engine_max_abs_diff": None,
            }
            for m in (0, 1)
        ]
    )
    hyper = pd.DataFrame(
        [
            {
                "member": m,
                "hyper": "lr",
                "outcome": o,
                "derivative": -1.0 - m,
                "finite_scale": -1.1,
                "finite_step": 0.01,
            }
            for m in (0, 1)
            for o in ("test_loss", "true_class_prob")
        ]
    )
    return summarize(
        TangentResult(str(out), "abc", 2, ("lr",), "float64", 10, 1, 0.1, curves, members, hyper)
    )


def test_section_from_result_and_json(tmp_path: Path) -> None:
    result = _result(tmp_path)
    store = RunStore(tmp_path)
    store.write(result)
    data = json.loads((tmp_path / "tangent.json").read_text())
    assert read_result(tmp_path).hypers == ("lr",) and (tmp_path / "tangent.parquet").is_file()
    for source in (result, data):
        page = tangent_section(source)
        assert (
            'id="tangent"' in page and "data:image/png;base64," in page and "finite scale" in page
        )
    table = hypergradient_table(result.hypergrads, 0.1)
    assert list(table["d/dh mean (local)"]) == [-1.5, -1.5]
    assert data["summary"]["hypergradients"]["test_loss/lr"]["derivative"]["sd"] > 0
    section = section_for("tangent")
    assert section is not None
    assert section.render(store.results("tangent"), Context(store, None)).count('id="tangent"') == 1
