"""The unrolled, differentiable replay of training is the engine's training, member for member."""

from __future__ import annotations

import pytest
import torch

from attractor.errors import UserError
from attractor.optim import get_optimizer
from attractor.optim.base import Hyper
from attractor.plan import PlanRow, build_plan
from attractor.tangent.unroll import final_params, unroll
from attractor.tasks import build_task
from attractor.training.engine import train_chunk
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


TRAINERS = [
    {"optimizer": "sgd", "schedule": "cosine"},
    {"optimizer": "sgd", "nesterov": True, "weight_decay": 1e-3, "momentum": 0.8},
    {"optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-3, "schedule": "warmup-cosine"},
    {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2},
]


@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda t: "-".join(f"{v}" for v in t.values()))
@pytest.mark.parametrize("vectorized", [False, True], ids=["loop", "vectorized"])
def test_replay_reproduces_engine_final_weights(trainer: dict, vectorized: bool) -> None:
    config = tiny_config(
        trainer=trainer,
        plan={
            "members": 2,
            "vary": ["init_seed", "data_seed", "label_noise", "init_scale"],
            "ranges": {"label_noise": [0.0, 0.2], "init_scale": [0.8, 1.2]},
        },
    )
    task = build_task(config.task)
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    saved: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
    train_chunk(
        task,
        config,
        rows,
        vectorized,
        lambda row, step, tensors, _: saved.setdefault(row.member, {}).__setitem__(step, tensors),
    )
    run = unroll(task, config, rows, torch.float32)
    for method in ("linearized", "functional"):
        final = final_params(run, method=method)
        for i, row in enumerate(rows):
            engine = saved[row.member][run.steps]
            for name, value in final.items():
                # float32: matmuls in another orientation round differently from the engine's.
                torch.testing.assert_close(value[i], engine[name], rtol=0, atol=2e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_functional_update_matches_optimizer(name: str) -> None:
    """The pure update the replay differentiates is the engine's in-place step, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    p, g = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    g[0, 0] = 0.0  # Adam's second moment stays exactly 0 there
    lr = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)
    mom = torch.tensor([0.9, 0.0, 0.5], dtype=torch.float64)
    wd = torch.tensor([0.0, 1e-2, 1e-3], dtype=torch.float64)
    hyper = Hyper(lr, mom, wd, nesterov=True)
    optimizer = get_optimizer(name)
    params = {"w": p.clone()}
    state = optimizer.init(params)
    new, slots = optimizer.update({"w": p}, {"w": g}, optimizer.init(params), hyper, 1)
    optimizer.step(params, {"w": g}, state, hyper, 1)
    torch.testing.assert_close(new["w"], params["w"], rtol=0, atol=0)
    for k, v in slots["w"].items():
        torch.testing.assert_close(v, state["w"][k], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_update_is_differentiable_where_adam_moment_is_zero(name: str) -> None:
    """Forward mode through the update: finite tangents, equal to a central difference."""
    gen = torch.Generator().manual_seed(1)
    p, g = (
        torch.randn(2, 3, generator=gen, dtype=torch.float64),
        torch.randn(2, 3, generator=gen, dtype=torch.float64),
    )
    g[0, 0] = 0.0
    optimizer = get_optimizer(name)
    state = optimizer.init({"w": p})
    hyper = {
        "lr": torch.tensor([0.1, 0.2], dtype=torch.float64),
        "momentum": torch.tensor([0.9, 0.5], dtype=torch.float64),
        "weight_decay": torch.tensor([0.0, 1e-2], dtype=torch.float64),
    }

    def update(p: torch.Tensor, h: dict[str, torch.Tensor]) -> torch.Tensor:
        return optimizer.update(
            {"w": p}, {"w": g}, state, Hyper(h["lr"], h["momentum"], h["weight_decay"]), 1
        )[0]["w"]

    dp = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    # Not along weight decay: with wd = 0 and g = 0, Adam's step has a kink in wd there.
    dh = {k: torch.ones_like(v) * (k != "weight_decay") for k, v in hyper.items()}
    _, tangent = torch.func.jvp(update, (p, hyper), (dp, dh))
    assert torch.isfinite(tangent).all()
    e = 1e-6
    up = update(p + e * dp, {k: v + e * dh[k] for k, v in hyper.items()})
    down = update(p - e * dp, {k: v - e * dh[k] for k, v in hyper.items()})
    torch.testing.assert_close(tangent, (up - down) / (2 * e), rtol=1e-6, atol=1e-6)


def test_refuses_cone() -> None:
    config = tiny_config(trainer={"optimizer": "cone"})
    task = build_task(config.task)
    with pytest.raises(UserError, match="cone"):
        unroll(task, config, [PlanRow(member=0, optimizer="cone", batch_size=32)])
