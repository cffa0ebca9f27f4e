"""BatchNorm reset and REPAIR of interpolated networks, and LMC with them: against hand
computations, on identical ends, and on two briefly trained digits ResNets."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attractor.errors import UserError
from attractor.measure.alignment import align
from attractor.measure.connectivity import barriers, interpolate, lmc, path_curve
from attractor.measure.repair import (
    RepairData,
    repair_path,
    repair_points,
    repair_state,
    reset_batchnorm,
    unit_statistics,
)
from attractor.tasks.base import Task
from attractor.tasks.conv_models import LeNet, ResNet
from attractor.tasks.digits_mlp import build_mlp, split_tensors


def _tiny(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4)
    )


def test_reset_is_the_mean_of_the_batch_statistics() -> None:
    model = _tiny(0)
    state = model.state_dict()
    x = torch.randn(20, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    data = RepairData(x, batch_size=8)  # batches of 8, 8 and 4
    reset = reset_batchnorm(model, state, data)
    with torch.no_grad():
        out = F.conv2d(x, state["0.weight"], state["0.bias"])  # [20, 3, 3, 3]
    batches = out.split(8)
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(1) for b in batches]).mean(0)
    torch.testing.assert_close(reset["1.running_mean"], means)
    torch.testing.assert_close(reset["1.running_var"], variances)
    assert int(reset["1.num_batches_tracked"]) == 3
    for name in ("0.weight", "1.weight", "1.bias", "4.weight"):
        assert torch.equal(reset[name], state[name])
    assert torch.equal(model.state_dict()["1.running_var"], torch.ones(3))  # template untouched


def test_reset_leaves_a_network_without_batchnorm_alone() -> None:
    torch.manual_seed(0)
    mlp = build_mlp(64, [12], 10, "relu")
    state = mlp.state_dict()
    data = RepairData(torch.randn(16, 64))
    assert all(
        r is s
        for r, s in zip(reset_batchnorm(mlp, state, data).values(), state.values(), strict=True)
    )
    states = [state, state]
    assert (
        repair_path("reset", mlp, states, torch.tensor([0.0, 1.0]), (state, state), data) is states
    )
    with pytest.raises(UserError, match="unknown repair 'fix'; known: none, reset, repair"):
        repair_path("fix", mlp, states, torch.tensor([0.0, 1.0]), (state, state), data)


def test_repair_moves_every_unit_to_its_goal_statistics() -> None:
    torch.manual_seed(0)
    resnet = ResNet(depth=8, width=4, in_channels=1, num_classes=5, stages=3).double()
    lenet = LeNet(1, 4, 28).double()
    gen = torch.Generator().manual_seed(1)
    for model, x in (
        (resnet, torch.randn(64, 1, 8, 8, generator=gen, dtype=torch.float64)),
        (lenet, torch.randn(64, 1, 28, 28, generator=gen, dtype=torch.float64)),
    ):
        data = RepairData(x, batch_size=32)
        points = repair_points(model)
        goal = {
            p: (
                torch.linspace(-1, 1, n, dtype=torch.float64),
                torch.linspace(0.5, 2, n, dtype=torch.float64),
            )
            for p, n in (
                (p, unit_statistics(model.eval(), [p], data)[p][0].numel()) for p in points
            )
        }
        repaired = repair_state(model, model.state_dict(), goal, data)
        model.load_state_dict(repaired)
        stats = unit_statistics(model.eval(), points, data)
        for p in points:
            torch.testing.assert_close(stats[p][0], goal[p][0], atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(stats[p][1], goal[p][1], atol=1e-9, rtol=1e-9)
    assert repair_points(lenet) == ["0", "3", "7", "9"]
    assert repair_points(resnet)[:3] == ["stem.1", "stages.0.bn1", "stages.0.bn2"]


def _digits_task() -> Task:
    x_train, y_train, x_test, y_test = split_tensors()
    return Task(
        "digits-resnet",
        x_train.float().view(-1, 1, 8, 8),
        y_train.long(),
        x_test.float().view(-1, 1, 8, 8),
        y_test.long(),
        lambda: ResNet(depth=8, width=8, in_channels=1, num_classes=10, stages=3),
        num_classes=10,
    )


def _trained(task: Task, seed: int, steps: int = 100) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = task.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(task.n_train, (64,), generator=gen)
        loss = F.cross_entropy(model(task.x_train[index]), task.y_train[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().state_dict()


@pytest.fixture(scope="module")
def digits() -> Task:
    return _digits_task()


def test_path_between_two_copies_is_flat_after_reset_and_repair(digits: Task) -> None:
    state = _trained(digits, 1, steps=5)
    data = RepairData.sample(digits.x_train, batches=2, batch_size=64)
    template = digits.make_model()
    for repair in ("reset", "repair"):
        curve = path_curve(
            digits, template, state, state, digits.x_test, digits.y_test, 4, repair, data
        )
        assert all(abs(v) < 1e-6 for v in barriers(curve).values()), repair


@pytest.fixture(scope="module")
def pair(digits: Task) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return _trained(digits, 1), _trained(digits, 2)


def test_alignment_and_reset_lower_the_barrier_of_trained_resnets(
    digits: Task, pair: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
) -> None:
    a, b = pair
    template = digits.make_model()
    aligned, _ = align(a, b, template)
    data = RepairData.sample(digits.x_train, batches=4, batch_size=128)
    found = {}
    for name, end in (("raw", b), ("aligned", aligned)):
        for repair in ("none", "reset"):
            curve = path_curve(
                digits, template, a, end, digits.x_test, digits.y_test, 7, repair, data
            )
            found[name, repair] = barriers(curve)["barrier_loss"]
    # Seen: raw 3.0 / 1.6 (none / reset), aligned 1.8 / 0.19.
    assert found["aligned", "reset"] < 0.5 * min(
        found["raw", "none"], found["raw", "reset"], found["aligned", "none"]
    ), found


def test_interpolated_batchnorm_statistics_collapse_and_reset_measures_it(
    digits: Task, pair: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
) -> None:
    """The midpoint's running variance is the mean of the ends', while its activations'
    variance is smaller: the reset measures the smaller one."""
    a, b = pair
    aligned, _ = align(a, b, digits.make_model())
    mid = {k: v[0] for k, v in interpolate(a, aligned, torch.tensor([0.5])).items()}
    reset = reset_batchnorm(digits.make_model(), mid, RepairData.sample(digits.x_train, 4, 128))
    name = "stages.2.bn2.running_var"
    assert reset[name].mean() < mid[name].mean()


class _TwoMembers:
    """What :func:`lmc` reads of an ensemble: the task, snapshot steps, weights, device."""

    device = torch.device("cpu")

    def __init__(self, task: Task, states: list[dict[str, torch.Tensor]]) -> None:
        self.task, self.states = task, states

    def steps(self, member: int) -> list[int]:
        return [100]

    def params(self, member: int, step: int | None = None) -> dict[str, torch.Tensor]:
        return self.states[member]


def test_lmc_records_the_repair_it_used(
    digits: Task, pair: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
) -> None:
    ens = _TwoMembers(digits, list(pair))
    data = RepairData.sample(digits.x_train, batches=2, batch_size=128)
    result = lmc(ens, 0, 1, align_fn=align, points=3, repair="reset", repair_data=data)  # type: ignore[arg-type]
    assert result.repair == "reset" and result.to_dict()["repair"] == "reset"
    assert result.aligned_barriers["barrier_loss"] < result.barriers["barrier_loss"]
    with pytest.raises(UserError, match="unknown repair 'fix'"):
        lmc(ens, 0, 1, repair="fix")  # type: ignore[arg-type]
    # An MLP has no BatchNorm: the default reset does nothing and is recorded as none.
    torch.manual_seed(0)
    flat = Task(
        "digits-flat",
        digits.x_train.flatten(1),
        digits.y_train,
        digits.x_test.flatten(1),
        digits.y_test,
        lambda: build_mlp(64, [12], 10, "relu"),
        num_classes=10,
    )
    mlps = _TwoMembers(flat, [flat.make_model().state_dict(), flat.make_model().state_dict()])
    plain, reset = lmc(mlps, 0, 1, points=5, repair="none"), lmc(mlps, 0, 1, points=5)  # type: ignore[arg-type]
    assert reset.repair == "none"
    pd.testing.assert_frame_equal(plain.curve, reset.curve)


def test_measure_refuses_an_unknown_repair(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = cli("measure", tmp_path, "--lmc-repair", "fix")
    assert result.code != 0
    assert "--lmc-repair must be one of none, reset, repair, not 'fix'" in result.err
