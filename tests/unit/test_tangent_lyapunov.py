"""Finite-time Lyapunov exponents: closed forms on least squares, finite differences on small
MLPs.
"""

from __future__ import annotations

import math

import pytest
import torch

from attractor.plan import PlanRow
from attractor.tangent.lyapunov import flat, propagate, random_directions
from attractor.tangent.oracles import companion_log_growth, hessian, least_squares_task
from attractor.tangent.power import forward
from attractor.tangent.unroll import HYPERS, Unrolled, final_params, trajectory, unroll
from attractor.tasks import build_task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _least_squares(lr: float, momentum: float, steps: int) -> Unrolled:
    task = least_squares_task(n=32, d=6)
    config = tiny_config(
        trainer={"steps": steps, "batch_size": 32, "lr": lr, "momentum": momentum},
        run={"snapshots": [steps // 2]},
    )
    return unroll(
        task, config, [PlanRow(member=0, lr=lr, momentum=momentum, batch_size=32)]
    )  # full batch


def _no_hyper(members: int, k: int) -> dict[str, torch.Tensor]:
    return {h: torch.zeros(members, k, dtype=torch.float64) for h in HYPERS}


@pytest.mark.parametrize(("lr", "momentum"), [(0.1, 0.0), (0.1, 0.5), (0.3, 0.9), (1.5, 0.0)])
def test_least_squares_exponents_equal_closed_form(lr: float, momentum: float) -> None:
    steps = 40
    run = _least_squares(lr, momentum, steps)
    lam, vectors = torch.linalg.eigh(hessian(run.task))
    expected = [companion_log_growth(lr, momentum, float(v), steps) / steps for v in lam]
    # Benettin's QR keeps a column only if every faster direction is before it.
    order = sorted(range(len(lam)), key=lambda i: -expected[i])
    directions = {"weight": vectors.T[order].reshape(1, len(lam), 1, -1)}
    records, _, diverged = propagate(
        run, directions, _no_hyper(1, len(lam)), len(lam), (), reorth_every=7
    )
    last = records[-1]
    assert last["step"] == steps and int(diverged[0]) == 0
    for j, i in enumerate(order):
        assert abs(last[f"exponent_{j}"] - expected[i]) < 1e-10
    if lr == 0.1 and momentum == 0.0:
        for j, i in enumerate(order):
            assert abs(last[f"exponent_{j}"] - math.log(abs(1 - lr * float(lam[i])))) < 1e-10


def test_too_large_lr_gives_positive_leading_exponent() -> None:
    run = _least_squares(1.5, 0.0, 30)
    stable = _least_squares(0.1, 0.0, 30)
    for case, sign in ((run, 1), (stable, -1)):
        records, _, _ = propagate(case, random_directions(case, 3), _no_hyper(1, 3), 3, ())
        assert sign * records[-1]["exponent_0"] > 0


def _mlp(activation: str, steps: int = 8, members: int = 2, **trainer: object) -> Unrolled:
    config = tiny_config(
        task={"hidden": [8], "activation": activation},
        trainer={"steps": steps, "batch_size": 16, **trainer},
        plan={"members": members},
        run={"snapshots": [steps // 2]},
    )
    task = build_task(config.task)
    rows = [
        PlanRow(
            member=i,
            init_seed=i,
            data_seed=10 + i,
            batch_size=16,
            lr=0.1,
            momentum=0.9,
            optimizer=str(trainer.get("optimizer", "sgd")),
        )
        for i in range(members)
    ]
    return unroll(task, config, rows, torch.float64)


def _relu_patterns(run: Unrolled, params0: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The hidden layer's activation pattern on every training batch along the run."""
    return [
        (torch.einsum("nbi,nhi->nbh", x, p["0.weight"]) + p["0.bias"].unsqueeze(1) > 0)
        for t, x, _, p in trajectory(run, params0)
        if t <= run.steps
    ]


# ReLU runs leave the linear regime as soon as a pattern flips, so eps stays tiny (and no flip
# is asserted); Adam's early steps are nearly sign(g), so it leaves the linear regime sooner.
@pytest.mark.parametrize(
    ("activation", "optimizer", "eps", "tolerance"),
    [
        ("relu", "sgd", 1e-6, 1e-7),
        ("relu", "adam", 1e-6, 1e-7),
        ("gelu", "sgd", 1e-3, 1e-3),
        ("gelu", "adam", 1e-5, 1e-4),
    ],
)
def test_jvp_matches_finite_difference_runs(
    activation: str, optimizer: str, eps: float, tolerance: float
) -> None:
    run = _mlp(activation, optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01)
    v = {k: d[:, 0] for k, d in random_directions(run, 1, seed=3).items()}
    u, _ = forward(run, v, every=3)
    shifted = [{k: run.params0[k] + s * eps * v[k] for k in v} for s in (1, -1)]
    up, down = (final_params(run, p) for p in shifted)
    difference = {k: (up[k] - down[k]) / (2 * eps) for k in u}
    if activation == "relu":  # a flip between the runs would make the difference meaningless
        base = _relu_patterns(run, run.params0)
        for p in shifted:
            assert all(torch.equal(a, b) for a, b in zip(base, _relu_patterns(run, p), strict=True))
    error = (flat(u, 1) - flat(difference, 1)).norm(dim=1) / flat(u, 1).norm(dim=1)
    assert float(error.max()) < tolerance
    # The QR-tracked first column grows exactly as J v.
    records, _, _ = propagate(
        run, {k: d.unsqueeze(1) for k, d in v.items()}, _no_hyper(2, 1), 1, (), reorth_every=2
    )
    for i in range(2):
        assert (
            abs(records[-2 + i]["log_growth_top"] - math.log(float(flat(u, 1)[i].norm()))) < 1e-10
        )


def test_members_do_not_depend_on_their_chunk() -> None:
    pair = _mlp("tanh")
    alone = unroll(pair.task, pair.config, list(pair.rows[1:]), torch.float64)
    together, _, _ = propagate(pair, random_directions(pair, 2), _no_hyper(2, 2), 2, ())
    single, _, _ = propagate(alone, random_directions(alone, 2), _no_hyper(1, 2), 2, ())
    mine = [r for r in together if r["member"] == 1]
    for a, b in zip(mine, single, strict=True):
        for key, value in b.items():
            assert a[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key


def test_float32_close_to_float64() -> None:
    from attractor.tangent.hypergrad import hyper_columns

    run64 = _mlp("tanh", steps=12)
    run32 = unroll(run64.task, run64.config, list(run64.rows), torch.float32)
    growth, hypergradient = [], []
    for run in (run64, run32):
        directions = random_directions(run, 2)
        dparams, dhyper = hyper_columns(run, ("lr", "momentum"))
        dparams = {n: torch.cat([directions[n], dparams[n]], 1) for n in directions}
        dhyper = {
            h: torch.cat([torch.zeros(2, 2, dtype=torch.float64), v], 1) for h, v in dhyper.items()
        }
        records, _, _ = propagate(run, dparams, dhyper, 2, ("lr", "momentum"))
        final = [r for r in records if r["step"] == run.steps]
        growth.append(torch.tensor([r["log_growth_top"] for r in final]).exp())
        hypergradient.append(
            torch.tensor([[r["d_test_loss_d_lr"], r["d_test_loss_d_momentum"]] for r in final])
        )
    assert float(((growth[1] - growth[0]) / growth[0]).abs().max()) < 1e-5
    assert float(((hypergradient[1] - hypergradient[0]) / hypergradient[0]).abs().max()) < 1e-3


@pytest.mark.parametrize(
    ("optimizer", "nesterov"), [("sgd", False), ("sgd", True), ("adam", False), ("adamw", False)]
)
def test_linearized_step_equals_jvp_step(optimizer: str, nesterov: bool) -> None:
    from dataclasses import replace

    from attractor.tangent.hypergrad import HYPER_NAMES, hyper_columns

    base = _mlp("gelu", steps=5, optimizer=optimizer, nesterov=nesterov)
    run = unroll(
        base.task, base.config, [replace(r, weight_decay=1e-2) for r in base.rows], torch.float64
    )
    dparams, dhyper = hyper_columns(run, HYPER_NAMES)
    directions = random_directions(run, 2)
    dparams = {n: torch.cat([directions[n], dparams[n]], 1) for n in directions}
    dhyper = {
        h: torch.cat([torch.zeros(2, 2, dtype=torch.float64), v], 1) for h, v in dhyper.items()
    }
    reference, _, _ = propagate(run, dparams, dhyper, 2, HYPER_NAMES, reorth_every=2, method="jvp")
    fast, _, _ = propagate(
        run, dparams, dhyper, 2, HYPER_NAMES, reorth_every=2, method="linearized"
    )
    for a, b in zip(reference, fast, strict=True):
        for key, value in a.items():
            assert b[key] == pytest.approx(value, rel=1e-11, abs=1e-13, nan_ok=True), key
