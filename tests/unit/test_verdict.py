"""The verdict: hand-built stored results with known numbers give exact sentences and statuses
(yes / unclear / no at the interval's edges); a real tiny run, measured, carries it in
`info --json`, `measure --json` and at the top of its report; an unmeasured run says so.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from attractor.measure.verdict import (
    BARRIER,
    DRIVER_SHARE,
    Verdict,
    VerdictLine,
    judge,
    verdict,
    wilson,
)
from attractor.report import render_directory, with_verdict
from attractor.report.sections.verdict import verdict_block
from attractor.runs.results import StoredResult
from attractor.runs.store import RunStore
from tests import report_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def stored(kind: str, data: dict[str, Any]) -> StoredResult:
    """A result as a directory would hold it (only its JSON matters to the verdict)."""
    return StoredResult(kind, 1, kind, Path(f"{kind}.json"), data, ())


def measures(
    sizes: list[int] | None = None,
    disagreement: tuple[float, float, float] | None = None,
    accuracy: float = 0.75,
    barriers: list[float] | None = None,
    aligned: list[float] | None = None,
    method: str = "silhouette",
) -> StoredResult:
    """Stored spread measures holding only what the verdict reads."""
    data: dict[str, Any] = {"summary": {"test_accuracy": {"value": accuracy}}, "lmc": []}
    if sizes is not None:
        data["basins"] = {"sizes": sizes, "method": method, "threshold": None}
    if disagreement is not None:
        value, low, high = disagreement
        data["summary"]["pairwise_disagreement"] = {"value": value, "low": low, "high": high}
    for i, value in enumerate(barriers or []):
        matched = None if aligned is None else {"barrier_error": aligned[i]}
        data["lmc"].append(
            {
                "members": [0, i + 1],
                "barriers": {"barrier_error": value},
                "aligned_barriers": matched,
            }
        )
    return stored("measures", data)


def plan(*statuses: str) -> pd.DataFrame:
    return pd.DataFrame({"member": range(len(statuses)), "status": list(statuses)})


def line(results: list[StoredResult], id_: str, plan_: pd.DataFrame | None = None) -> VerdictLine:
    return verdict(results, plan_, "runs/x").line(id_)


# ---- the rule -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("low", "high", "status"),
    [
        (0.1, 0.19, "yes"),
        (0.1, 0.2, "unclear"),  # touching the threshold is not below it
        (0.2, 0.3, "no"),
        (0.19, 0.21, "unclear"),
        (None, 0.1, "unclear"),
        (float("nan"), 0.1, "unclear"),
    ],
)
def test_an_interval_is_yes_only_when_wholly_below(low, high, status) -> None:
    assert judge(low, high, 0.2) == status


def test_wilson_interval_matches_known_values() -> None:
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # the textbook value
    low, high = wilson(32, 32)
    assert high == 1.0 and low == pytest.approx(0.8928, abs=1e-4)
    low, high = wilson(20, 32)
    assert low < 20 / 32 < high


# ---- the questions --------------------------------------------------------------------------
def test_one_basin() -> None:
    found = line([measures(sizes=[32])], "basins")
    assert found.status == "yes"
    assert found.answer == "one basin (32 of 32 members, 100 % [89, 100])"
    assert found.section == "basins" and "silhouette >= 0.5" in found.yardstick


def test_several_basins() -> None:
    found = line([measures(sizes=[20, 12])], "basins")
    assert found.status == "no"
    assert found.answer == "2 basins; the largest holds 20 of 32 members, 62 % [45, 77]"


def test_basins_too_few_members_or_fixed_count_are_unclear() -> None:
    assert line([measures(sizes=[2])], "basins").status == "unclear"
    fixed = line([measures(sizes=[3, 1], method="n_basins")], "basins")
    assert fixed.status == "unclear" and "by request" in fixed.answer


@pytest.mark.parametrize(
    ("interval", "status", "where"),
    [
        ((0.032, 0.020, 0.044), "yes", "below"),
        ((0.24, 0.20, 0.25), "unclear", "not clearly apart from"),  # high == mean error 25 %
        ((0.30, 0.25, 0.35), "no", "above"),  # low == mean error
    ],
)
def test_disagreement_against_the_mean_error(interval, status, where) -> None:
    found = line([measures(disagreement=interval, accuracy=0.75)], "disagreement")
    value, low, high = interval
    assert found.status == status and found.threshold == 0.25
    assert found.answer == (
        f"members disagree on {100 * value:.1f} % [{100 * low:.1f}, {100 * high:.1f}] of test "
        f"inputs, {where} their mean error 25.0 %"
    )
    assert found.section == "summary" and "Jiang et al. 2022" in found.yardstick


def test_barriers_below_two_percent() -> None:
    found = line([measures(barriers=[0.004, 0.001, 0.009])], "lmc")
    assert found.status == "yes" and found.threshold == BARRIER == 0.02
    assert found.answer == (
        "linear paths between members have no barrier (mean 0.5 %, range [0.1, 0.9] over 3 pairs "
        "< 2 %)"
    )
    assert found.interval == "range over 3 pairs (min, max)"
    assert "Frankle et al. 2020" in found.yardstick


@pytest.mark.parametrize(
    ("values", "status"), [([0.01, 0.03], "unclear"), ([0.02, 0.05], "no"), ([0.0199], "yes")]
)
def test_barrier_status_at_the_edges(values, status) -> None:
    assert line([measures(barriers=values)], "lmc").status == status


def test_weight_matched_paths_have_their_own_line() -> None:
    result = measures(barriers=[0.3, 0.25], aligned=[0.004, 0.006])
    assert line([result], "lmc").status == "no"
    found = line([result], "lmc-aligned")
    assert found.status == "yes" and found.answer.startswith("weight-matched linear paths have no")
    # Paths without alignment: the weight-matched question is said to be unmeasured.
    missing = line([measures(barriers=[0.3])], "lmc-aligned")
    assert missing.status == "not measured" and "weight matching" in missing.answer


def variance_rows(share: float, low: float, high: float) -> StoredResult:
    rows = [
        {"outcome": "test_accuracy", "effect": "init_seed", "share": 0.9},
        {"outcome": "p_true", "effect": "init_seed", "share": 0.2},
        {"outcome": "p_true", "effect": "data_seed", "share": share},
        {"outcome": "p_true", "effect": "residual", "share": 0.1},
    ]
    rows[2] |= {"share_low": low, "share_high": high}
    return stored("sensitivity-variance", {"table": rows})


@pytest.mark.parametrize(
    ("interval", "status", "answer"),
    [
        (
            (0.62, 0.51, 0.75),
            "yes",
            "the spread is driven by the data order (62 % [51, 75] of the variance of the "
            "predictions)",
        ),
        (
            (0.62, 0.48, 0.75),
            "unclear",
            "the data order leads the spread (62 % [48, 75] of the variance of the predictions), "
            "not clearly more than half",
        ),
        ((0.62, 0.50, 0.75), "unclear", None),  # low at half: not above it
        (
            (0.45, 0.30, 0.50),
            "no",
            "no factor holds most of the variance of the predictions; the largest is the data "
            "order (45 % [30, 50])",
        ),
        ((0.62, float("nan"), float("nan")), "unclear", None),  # no interval: no claim
    ],
)
def test_driver_prefers_the_prediction_outcome(interval, status, answer) -> None:
    found = line([variance_rows(*interval)], "driver")
    assert found.status == status and found.threshold == DRIVER_SHARE
    assert answer is None or found.answer == answer, found.answer
    # p_true is judged although test_accuracy has a larger share (0.9) of its own.
    assert found.interval == "95 % bootstrap interval (variance components of p_true)"
    assert found.section == "sensitivity"


def test_driver_from_sobol_when_no_variance_components() -> None:
    rows = [{"outcome": "test_loss", "factor": "lr", "ST": 0.8, "ST_low": 0.6, "ST_high": 0.9}]
    found = line([stored("sensitivity-sobol", {"table": rows})], "driver")
    assert found.status == "yes"
    assert (
        found.answer
        == "the spread is driven by the learning rate (80 % [60, 90] of the variance of test loss)"
    )


def test_diverged_members() -> None:
    assert line([], "diverged", plan("done", "done")).answer == (
        "no member diverged (0 of 2; rate [0, 66] %)"
    )
    found = line([], "diverged", plan("done", "diverged", "done", "pending"))
    assert found.status == "no" and found.answer == (
        "1 of 3 members diverged (33 % [6, 79]); 1 still pending"
    )
    assert line([], "diverged", plan("pending")).status == "not measured"


def test_an_unmeasured_run_says_so_and_names_the_command() -> None:
    found = verdict([], plan("done", "done"), "runs/x")
    assert [x.id for x in found.lines] == ["basins", "disagreement", "lmc", "diverged"]
    for x in found.lines[:3]:
        assert x.status == "not measured"
        assert x.answer == "not measured yet: `attractor measure runs/x`"
    assert "driver" not in [x.id for x in found.lines]  # only where a sensitivity result exists
    lm = verdict([stored("lm-measures", {})], plan("done", "done")).line("basins")
    assert lm.status == "not measured" and "next-token" in lm.answer


def test_an_experiment_gets_only_its_own_lines(tmp_path: Path) -> None:
    sample = report_samples.instability()
    found = verdict([stored("instability", sample.to_json())])
    assert [x.id for x in found.lines] == ["instability"]
    assert found.lines[0].status == "yes"
    assert found.lines[0].answer == (
        "copies spawned from step 20 on have no barrier (mean < 2 %; upper 95 % bound below "
        "it from step 100; at step 100: 0.5 % [0.0, 1.0])"
    )
    late = verdict([stored("instability", sample.to_json() | {"onset_upper": None})]).lines[0]
    assert late.status == "unclear" and late.value == 0.015 and late.high == 0.025
    never = {"onset": None, "onset_upper": None}
    assert verdict([stored("instability", sample.to_json() | never)]).lines[0].status == "no"
    # On the experiment's page the block links to its section.
    store = RunStore.prepare_experiment(tmp_path / "exp", "samples", {"kind": "instability"})
    store.write(sample)
    page = render_directory(store.root).read_text(encoding="utf-8")
    block = page[page.index('<div id="verdict"') : page.index("<section")]
    assert 'href="#instability"' in block and 'data-status="yes"' in block


def test_json_is_strict_and_thresholds_are_listed_once() -> None:
    result = measures(sizes=[4], barriers=[0.01, 0.03], aligned=[0.0, 0.001])
    found = verdict([result, variance_rows(0.6, float("nan"), float("nan"))], plan("done"))
    text = json.dumps(found.to_json(), allow_nan=False)
    data = json.loads(text)
    driver = next(x for x in data["lines"] if x["id"] == "driver")
    assert driver["low"] is None and driver["high"] is None
    assert list(data["thresholds"]).count("lmc") == 1 and "lmc-aligned" not in data["thresholds"]
    assert found.text()[-1].startswith("thresholds: ")
    assert all(math.isfinite(x["value"]) for x in data["lines"] if x["value"] is not None)


# ---- the block on a page --------------------------------------------------------------------
def test_block_links_only_to_sections_on_the_page() -> None:
    found = verdict([measures(sizes=[4], barriers=[0.01])], plan("done", "done", "done", "done"))
    block = verdict_block(found, {"basins", "plan"})
    assert re.search(r'<a href="#basins"[^>]*>one basin', block) and 'href="#plan"' in block
    assert 'href="#lmc"' not in block  # no LMC section on this page: no dead link
    assert block.count('data-status="') == len(found.lines)
    assert "Thresholds: " in block and "&lt; 2 %" in block
    assert verdict_block(Verdict([])) == ""


def test_block_sits_under_the_header_before_any_section() -> None:
    parts = ['<header><h1>t</h1></header><section id="run">x</section>', '<section id="plan">']
    found = verdict([measures(sizes=[3])], plan("done", "done", "done"))
    page = "".join(with_verdict(parts, found))
    assert page.index("</header>") < page.index('id="verdict"') < page.index("<section")
    assert re.search(r"<a href=\"#plan\"[^>]*>no member diverged", page)
