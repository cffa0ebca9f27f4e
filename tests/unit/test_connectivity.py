"""Linear mode connectivity against hand computations, invariances and known permutations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attractor.measure.connectivity import barrier, barriers, interpolate, lmc, path_curve
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.tasks import build_task
from attractor.tasks.base import Task
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(tiny_config().task)


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    return train(tiny_config(trainer={"steps": 40}), tmp_path_factory.mktemp("lmc") / "run")


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))


def _own_loss(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(task.loss(model.eval()(x), y).double().mean())


def test_hand_made_curve() -> None:
    curve = pd.DataFrame(
        {
            "alpha": [0, 0.25, 0.5, 0.75, 1],
            "loss": [1.0, 2.0, 1.5, 1.2, 1.0],
            "error": [0.1, 0.5, 0.3, 0.2, 0.3],
        }
    )
    found = barriers(curve)
    # error: max 0.5 - mean(0.1, 0.3) = 0.3; chord 0.1 + 0.2 alpha -> deviations 0, .35, .1, -.05,
    # 0.
    assert found["barrier_error"] == pytest.approx(0.3)
    assert found["barrier_error_linear"] == pytest.approx(0.35)
    # loss: equal ends, so both forms read max - end = 1.0.
    assert found["barrier_loss"] == pytest.approx(1.0)
    assert found["barrier_loss_linear"] == pytest.approx(1.0)


def test_straight_line_is_a_barrier_only_in_frankle_form() -> None:
    alpha = np.linspace(0, 1, 11)
    line = 0.1 + 0.4 * alpha
    assert barrier(alpha, line, "entezari") == pytest.approx(0.0, abs=1e-12)
    assert barrier(alpha, line, "frankle") == pytest.approx(0.2)  # half the difference of the ends
    with pytest.raises(ValueError, match="unknown barrier form"):
        barrier(alpha, line, "max")


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=12),
    shift=st.floats(-3, 3),
    slope=st.floats(-3, 3),
)
def test_barrier_forms_are_non_negative_and_invariant(
    values: list[float], shift: float, slope: float
) -> None:
    alpha = np.linspace(0, 1, len(values))
    curve = np.array(values)
    frankle, entezari = barrier(alpha, curve, "frankle"), barrier(alpha, curve, "entezari")
    # Both ends lie on the path, so neither form can be negative.
    assert frankle >= -1e-12 and entezari >= -1e-12
    assert barrier(alpha, curve + shift, "frankle") == pytest.approx(frankle, abs=1e-9)
    # Adding a straight line changes the ends but not the rise above the chord.
    assert barrier(alpha, curve + shift + slope * alpha, "entezari") == pytest.approx(
        entezari, abs=1e-9
    )


def test_interpolate_hits_both_ends_exactly() -> None:
    a = {"w": torch.randn(3, 4), "n": torch.tensor(2)}
    b = {"w": torch.randn(3, 4), "n": torch.tensor(7)}
    path = interpolate(a, b, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64))
    assert path["w"].shape == (4, 3, 4)
    assert torch.equal(path["w"][0], a["w"]) and torch.equal(path["w"][-1], b["w"])
    torch.testing.assert_close(path["w"][2], (a["w"] + b["w"]) / 2)
    assert path["n"].tolist() == [2, 2, 2, 7]  # integers take the nearer end
    with pytest.raises(ValueError, match="different tensors"):
        interpolate(a, {"w": b["w"]}, torch.tensor([0.5]))


def test_path_from_a_network_to_itself_is_flat(digits: Task) -> None:
    state = _mlp(0).state_dict()
    curve = path_curve(digits, _mlp(1), state, state, digits.x_test, digits.y_test, points=7)
    assert len(curve) == 7 and list(curve.columns) == ["alpha", "loss", "error"]
    assert curve["loss"].nunique() == 1 and curve["error"].nunique() == 1
    assert all(value == 0 for value in barriers(curve).values())


def test_path_ends_are_each_networks_own_loss(digits: Task) -> None:
    a, b = _mlp(0), _mlp(1)
    curve = path_curve(
        digits, _mlp(2), a.state_dict(), b.state_dict(), digits.x_test, digits.y_test
    )
    assert curve["alpha"].iloc[0] == 0 and curve["alpha"].iloc[-1] == 1 and len(curve) == 30
    assert curve["loss"].iloc[0] == pytest.approx(
        _own_loss(digits, a, digits.x_test, digits.y_test), abs=1e-5
    )
    assert curve["loss"].iloc[-1] == pytest.approx(
        _own_loss(digits, b, digits.x_test, digits.y_test), abs=1e-5
    )


def test_buffers_are_interpolated_too(digits: Task) -> None:
    """A BatchNorm net (vmapped path): the ends use each network's own running statistics."""

    def net(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))
        model.train()(torch.randn(50, 64) * (1 + seed))  # running statistics of its own
        return model.eval()

    a, b = net(0), net(1)
    curve = path_curve(
        digits, net(2), a.state_dict(), b.state_dict(), digits.x_test, digits.y_test, points=5
    )
    assert curve["loss"].iloc[0] == pytest.approx(
        _own_loss(digits, a, digits.x_test, digits.y_test), abs=1e-5
    )
    assert curve["loss"].iloc[-1] == pytest.approx(
        _own_loss(digits, b, digits.x_test, digits.y_test), abs=1e-5
    )


def test_undoing_a_known_permutation_removes_the_barrier(digits: Task, ens: Ensemble) -> None:
    """b is a trained member with its hidden units shuffled: the same function, other weights."""
    a = ens.params(ens.members[0])
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    b = {
        "0.weight": a["0.weight"][perm],
        "0.bias": a["0.bias"][perm],
        "2.weight": a["2.weight"][:, perm],
        "2.bias": a["2.bias"],
    }
    template = ens.task.make_model()
    raw = path_curve(digits, template, a, b, digits.x_test, digits.y_test, points=9)
    assert raw["loss"].iloc[0] == pytest.approx(
        raw["loss"].iloc[-1], abs=1e-6
    )  # same function at both ends
    assert (
        barriers(raw)["barrier_loss"] > 0.1
    )  # but the straight path between them leaves the basin
    inverse = torch.argsort(perm)
    undone = {
        "0.weight": b["0.weight"][inverse],
        "0.bias": b["0.bias"][inverse],
        "2.weight": b["2.weight"][:, inverse],
        "2.bias": b["2.bias"],
    }
    aligned = path_curve(digits, template, a, undone, digits.x_test, digits.y_test, points=9)
    assert all(value == 0 for value in barriers(aligned).values())


def test_lmc_between_members(ens: Ensemble, tmp_path: Path) -> None:
    a, b = ens.members[:2]
    result = lmc(ens, a, b, points=11)
    assert (
        result.members == (a, b)
        and result.step == ens.steps(a)[-1]
        and result.aligned_curve is None
    )
    final = ens.metrics[ens.metrics["step"] == result.step].set_index("member")
    assert result.curve["loss"].iloc[0] == pytest.approx(final.loc[a, "test_loss"], abs=1e-5)
    assert result.curve["loss"].iloc[-1] == pytest.approx(final.loc[b, "test_loss"], abs=1e-5)
    assert result.curve["error"].iloc[0] == pytest.approx(
        1 - final.loc[a, "test_accuracy"], abs=1e-6
    )
    assert set(result.barriers) == {
        "barrier_loss",
        "barrier_loss_linear",
        "barrier_error",
        "barrier_error_linear",
    }

    calls = []

    def identity_align(state_a: dict, state_b: dict, template: nn.Module) -> tuple[dict, list]:
        calls.append(type(template).__name__)
        return dict(state_b), []

    aligned = lmc(ens, a, b, align_fn=identity_align, points=11, step=0)
    assert calls == ["Sequential"] and aligned.step == 0
    pd.testing.assert_frame_equal(aligned.curve, aligned.aligned_curve)
    assert aligned.aligned_barriers == aligned.barriers
    (tmp_path / "lmc.json").write_text(json.dumps(aligned.to_dict()))
    assert json.loads((tmp_path / "lmc.json").read_text())["aligned_curve"]["alpha"][-1] == 1.0

    itself = lmc(ens, a, a, x=ens.task.x_train[:100], y=ens.task.y_train[:100], points=5)
    assert all(value == 0 for value in itself.barriers.values())


def test_the_path_is_evaluated_on_the_ensembles_device(ens: Ensemble) -> None:
    """``measure --device``: the path's forward passes run there (meta stands in for a GPU:
    a CPU tensor mixed in would fail with another error, a CPU-only path would finish).
    """
    placed = Ensemble.load(ens.store.root)
    placed.device = torch.device("meta")
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta"):
        lmc(placed, placed.members[0], placed.members[1], points=3)
