"""Forward-mode hypergradients against finite differences; power iteration against closed forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attractor.experiments.tangent import TangentSettings, run_tangent
from attractor.plan import PlanRow
from attractor.tangent import read_result
from attractor.tangent.hypergrad import central_difference, hyper_columns
from attractor.tangent.lyapunov import flat, propagate, random_directions
from attractor.tangent.oracles import hessian, least_squares_task
from attractor.tangent.power import backward, forward, top_growth
from attractor.tangent.unroll import Unrolled, unroll
from attractor.tasks import build_task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(optimizer: str, steps: int = 8) -> Unrolled:
    config = tiny_config(
        task={"hidden": [8], "activation": "gelu"},
        trainer={"steps": steps, "batch_size": 16, "optimizer": optimizer},
        run={"snapshots": 1},
    )
    task = build_task(config.task)
    lr = 0.1 if optimizer == "sgd" else 0.01
    rows = [
        PlanRow(
            member=i,
            init_seed=i,
            data_seed=i,
            batch_size=16,
            lr=lr * (1 + i),
            momentum=0.9 - 0.3 * i,
            weight_decay=1e-3,
            init_scale=1.0 + 0.1 * i,
            optimizer=optimizer,
        )
        for i in range(2)
    ]
    return unroll(task, config, rows, torch.float64)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_hypergradients_match_central_differences(optimizer: str) -> None:
    run = _mlp(optimizer)
    hypers = ("lr", "momentum", "weight_decay", "init_scale")
    dparams, dhyper = hyper_columns(run, hypers)
    records, _, _ = propagate(run, dparams, dhyper, 0, hypers)
    final = [r for r in records if r["step"] == run.steps]
    x, y = run.task.x_test, run.task.y_test
    for h in hypers:
        # Small steps: the derivative is local; a GELU net stays smooth at this scale.
        fd = central_difference(run, h, torch.full((2,), 1e-6), x, y)
        for i in range(2):
            for outcome in ("test_loss", "true_class_prob"):
                assert final[i][f"d_{outcome}_d_{h}"] == pytest.approx(
                    float(fd[outcome][i]), rel=1e-5, abs=1e-8
                ), (h, outcome)


def test_reverse_pass_is_the_transpose_of_the_forward_pass() -> None:
    run = _mlp("sgd", steps=7)  # 7 steps in checkpoint segments of 3: a short last segment
    v = {k: d[:, 0] for k, d in random_directions(run, 1, seed=1).items()}
    u = {k: d[:, 0] for k, d in random_directions(run, 1, seed=2).items()}
    jv, checkpoints = forward(run, v, every=3)
    jtu = backward(run, u, checkpoints)
    left = (flat(u, 1) * flat(jv, 1)).sum(1)
    right = (flat(jtu, 1) * flat(v, 1)).sum(1)
    torch.testing.assert_close(left, right, rtol=1e-10, atol=1e-12)


def test_power_iteration_finds_least_squares_top_growth() -> None:
    task = least_squares_task(n=32, d=4)
    lr, steps = 0.3, 10
    config = tiny_config(
        trainer={"steps": steps, "batch_size": 32, "lr": lr, "momentum": 0.0}, run={"snapshots": 1}
    )
    run = unroll(task, config, [PlanRow(member=0, lr=lr, momentum=0.0, batch_size=32)])
    # J = (I - lr H)^T is symmetric: its top singular value is max |1 - lr lam|^T.
    expected = float((1 - lr * torch.linalg.eigvalsh(hessian(task))).abs().max() ** steps)
    result = top_growth(run, iterations=8)
    assert float(result.sigma[0]) == pytest.approx(expected, rel=1e-6)
    assert float(result.random_growth[0]) <= expected * (1 + 1e-12)


def test_relu_lr_derivative_agrees_with_tiny_central_difference() -> None:
    config = tiny_config(
        task={"hidden": [8]}, trainer={"steps": 8, "batch_size": 16}, run={"snapshots": 1}
    )
    run = unroll(
        build_task(config.task),
        config,
        [PlanRow(member=0, lr=0.1, momentum=0.9, batch_size=16)],
        torch.float64,
    )
    dparams, dhyper = hyper_columns(run, ("lr",))
    records, _, _ = propagate(run, dparams, dhyper, 0, ("lr",))
    # Local: only steps this small stay inside one activation pattern of the whole run.
    fd = central_difference(run, "lr", torch.full((1,), 1e-8), run.task.x_test, run.task.y_test)
    assert records[-1]["d_test_loss_d_lr"] == pytest.approx(float(fd["test_loss"][0]), rel=1e-5)


def test_tangent_analysis_writes_run_files(tmp_path: Path) -> None:
    config = tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 6, "batch_size": 16},
        plan={"members": 2},
        run={"snapshots": 2},
    )
    # The experiment trains the run in tmp_path/run, then replays it (tangent_analysis).
    settings = TangentSettings(
        config=config, directions=3, hypers=["lr", "init_scale"], power_iterations=1
    )
    result = run_tangent(settings, tmp_path)
    assert (tmp_path / "run" / "manifest.json").is_file() and result.out == str(tmp_path / "run")
    # The replay (float32, as the engine) lands on the weights the engine saved.
    assert (result.members["engine_max_abs_diff"] < 1e-6).all()
    assert (tmp_path / "tangent.parquet").is_file()
    data = json.loads((tmp_path / "tangent.json").read_text())
    assert data["directions"] == 3 and data["hypers"] == ["lr", "init_scale"]
    assert set(result.hypergrads["hyper"]) == {"lr", "init_scale"}
    # Power iteration starts at the first random direction and only climbs from its growth.
    assert (
        result.members["power_top_growth"] >= result.members["random_growth"] * (1 - 1e-5)
    ).all()
    assert set(data["summary"]["hypergradients"]) >= {"test_loss/lr", "true_class_prob/init_scale"}
    again = read_result(tmp_path)
    assert again.hypers == ("lr", "init_scale") and len(again.curves) == len(result.curves)
