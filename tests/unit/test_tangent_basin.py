"""The basin around a run (perturbed replays vs the tangent) and local beside global sensitivity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attractor.experiments.tangent import tangent_analysis
from attractor.plan import PlanRow
from attractor.report.sections.tangent import local_global_table, tangent_section
from attractor.runs.store import RunStore
from attractor.tangent import read_result
from attractor.tangent.basin import DEFAULT_EPS, basin_scan
from attractor.tangent.globalsens import global_sensitivity
from attractor.tangent.lyapunov import propagate, random_directions
from attractor.tangent.oracles import least_squares_task
from attractor.tangent.unroll import HYPERS, unroll
from attractor.tasks import build_task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _relu_mlp(members: int = 2, steps: int = 30):
    config = tiny_config(
        task={"hidden": [16]}, trainer={"steps": steps, "batch_size": 16}, run={"snapshots": 1}
    )
    rows = [
        PlanRow(member=i, init_seed=i, data_seed=i, lr=0.1, momentum=0.9, batch_size=16)
        for i in range(members)
    ]
    return unroll(build_task(config.task), config, rows, torch.float64)


def test_least_squares_is_linear_at_every_eps() -> None:
    # Linear dynamics: x_T(x0 + eps v) - x_T(x0) = eps J v exactly, however large eps.
    task = least_squares_task(n=32, d=6)
    config = tiny_config(
        trainer={"steps": 40, "batch_size": 32, "lr": 0.1, "momentum": 0.0}, run={"snapshots": [20]}
    )
    rows = [
        PlanRow(member=0, lr=0.15, batch_size=32),
        PlanRow(member=1, init_seed=1, lr=0.2, batch_size=32),
    ]
    run = unroll(task, config, rows)
    for basin in basin_scan(run, (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)):
        assert basin.breakdown_eps is None and basin.growth > 0.01
        for row in basin.rows:
            assert abs(row["ratio"] - 1) < 1e-8
            assert row["flips"] == 0 and row["flips_eval"] == 0


def test_growth_is_the_lyapunov_first_direction() -> None:
    run = _relu_mlp(1, steps=10)
    dirs = random_directions(run, 2, seed=3)
    zero = {h: torch.zeros(1, 2, dtype=torch.float64) for h in HYPERS}
    records, _, _ = propagate(run, dirs, zero, 2, (), reorth_every=5)
    (basin,) = basin_scan(run, (1e-6,), seed=3, directions=2)
    assert np.log(basin.growth) == pytest.approx(records[-1]["log_growth_top"], rel=1e-9)


def test_relu_mlp_leaves_the_linear_regime_as_flips_appear() -> None:
    run = _relu_mlp()
    basins = basin_scan(run, (1e-6, 1e-4, 1e-2, 1.0))
    for basin in basins:
        first, *_, last = basin.rows
        # Tiny eps: no activation pattern flips anywhere along the run, and the tangent is exact.
        assert first["flips"] == 0 and first["flips_eval"] == 0 and abs(first["ratio"] - 1) < 1e-4
        flips = [r["flips"] for r in basin.rows]
        assert flips == sorted(flips) and last["flips"] > 0
        assert basin.breakdown_eps is not None and basin.breakdown_eps >= 1e-4
        broken = next(r for r in basin.rows if r["eps"] == basin.breakdown_eps)
        assert broken["flips"] > 0  # it breaks where patterns flip


def test_one_member_alone_matches_its_chunk() -> None:
    # The vectorized replay of a chunk gives each member what it gets alone.
    pair = basin_scan(_relu_mlp(2, steps=12), (1e-6, 1e-2))
    config = tiny_config(
        task={"hidden": [16]}, trainer={"steps": 12, "batch_size": 16}, run={"snapshots": 1}
    )
    alone = unroll(
        build_task(config.task),
        config,
        [PlanRow(member=1, init_seed=1, data_seed=1, lr=0.1, momentum=0.9, batch_size=16)],
        torch.float64,
    )
    (single,) = basin_scan(alone, (1e-6, 1e-2))
    assert single.growth == pytest.approx(pair[1].growth, rel=1e-12)
    for a, b in zip(single.rows, pair[1].rows, strict=True):
        assert a["flips"] == b["flips"] and a["distance"] == pytest.approx(b["distance"], rel=1e-9)


def test_global_slope_recovers_a_planted_linear_trend() -> None:
    lr = np.linspace(0.02, 0.1, 9)
    members = pd.DataFrame(
        {
            "member": range(9),
            "lr": lr,
            "momentum": 0.9,
            "test_loss": 0.7 - 3.0 * lr,
            "true_class_prob": 0.2 + 5.0 * lr,
        }
    )
    hyper = pd.DataFrame(
        [
            {"member": m, "hyper": h, "outcome": o, "derivative": d}
            for m in range(9)
            for h, o, d in (
                ("lr", "test_loss", -2.5 - 0.1 * m),
                ("lr", "true_class_prob", 4.0),
                ("momentum", "test_loss", 0.3),
            )
        ]
    )
    table = global_sensitivity(members, hyper, ("lr", "momentum"))
    loss = table[(table["hyper"] == "lr") & (table["outcome"] == "test_loss")].iloc[0]
    assert loss["global_slope"] == pytest.approx(-3.0, abs=1e-12)
    assert loss["global_low"] == pytest.approx(-3.0, abs=1e-9) and loss[
        "global_high"
    ] == pytest.approx(-3.0, abs=1e-9)
    assert loss["local_mean"] == pytest.approx(-2.9) and loss["varied"]
    prob = table[(table["hyper"] == "lr") & (table["outcome"] == "true_class_prob")].iloc[0]
    assert prob["global_slope"] == pytest.approx(5.0, abs=1e-12)
    fixed = table[table["hyper"] == "momentum"].iloc[0]
    assert (
        not fixed["varied"]
        and pd.isna(fixed["global_slope"])
        and "does not vary momentum" in fixed["note"]
    )
    # Noise around the trend widens the interval, which still holds the planted slope.
    rng = np.random.default_rng(0)
    noisy = members.assign(test_loss=members["test_loss"] + 0.01 * rng.standard_normal(9))
    row = global_sensitivity(noisy, hyper, ("lr",)).iloc[0]
    assert (
        row["global_low"] < -3.0 < row["global_high"]
        and row["global_high"] - row["global_low"] > 1e-3
    )
    sobol = {"table": [{"outcome": "test_loss", "factor": "lr", "S1": 0.6, "ST": 0.7}]}
    shown = local_global_table(table, sobol)
    assert list(shown["Sobol S1"])[0] == 0.6 and shown[
        "global: slope across the plan's members"
    ].iloc[0] == pytest.approx(-3.0)


def test_tangent_analysis_reports_basin_and_global_sensitivity(tmp_path: Path) -> None:
    config = tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 8, "batch_size": 16},
        plan={
            "members": 3,
            "design": "random",
            "vary": ["init_seed", "data_seed", "lr"],
            "ranges": {"lr": [0.03, 0.08]},
        },
        run={"snapshots": 2},
    )
    result = tangent_analysis(
        config,
        tmp_path,
        directions=2,
        hypers=("lr", "momentum"),
        power_iterations=0,
        finite_scale=None,
    )
    RunStore(tmp_path).write(result)  # as the tangent experiment does
    assert len(result.basin) == 3 * len(DEFAULT_EPS)
    assert set(result.basin.columns) >= {"member", "eps", "distance", "predicted", "ratio", "flips"}
    assert (
        "basin_eps" in result.members
        and (result.basin[result.basin["eps"] == 1e-6]["ratio"] - 1).abs().max() < 1e-3
    )
    lr = result.sensitivity[
        (result.sensitivity["hyper"] == "lr") & (result.sensitivity["outcome"] == "test_loss")
    ].iloc[0]
    assert lr["varied"] and np.isfinite(lr["global_slope"]) and lr["global_members"] == 3
    assert not result.sensitivity[result.sensitivity["hyper"] == "momentum"]["varied"].any()
    (tmp_path / "sensitivity-sobol.json").write_text(
        json.dumps({"table": [{"outcome": "test_loss", "factor": "lr", "S1": 0.5, "ST": 0.55}]})
    )
    again = read_result(tmp_path)
    assert len(again.basin) == len(result.basin) and again.basin_tolerance == 0.1
    page = tangent_section(json.loads((tmp_path / "tangent.json").read_text()))
    assert (
        "basin around each run" in page
        and "Local vs global sensitivity" in page
        and "Sobol S1" in page
    )
    off = tangent_analysis(
        config,
        tmp_path / "off",
        directions=1,
        hypers=("lr",),
        power_iterations=0,
        finite_scale=None,
        basin_eps=None,
    )
    assert off.basin.empty and "basin_eps" not in off.members
