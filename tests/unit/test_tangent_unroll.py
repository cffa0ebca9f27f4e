"""The unrolled, differentiable replay of training is the engine's training, member for member."""

from __future__ import annotations

import pytest
import torch

from attractor.errors import UserError
from attractor.optim import get_optimizer
from attractor.optim.base import Hyper
from attractor.plan import PlanRow, build_plan
from attractor.tangent.unroll import adam_update, final_params, sgd_update, unroll
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
    config = tiny_config(trainer=trainer, plan={"members": 2, "vary": ["init_seed", "data_seed", "label_noise", "init_scale"],
                                                "ranges": {"label_noise": [0.0, 0.2], "init_scale": [0.8, 1.2]}})
    task = build_task(config.task)
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    saved: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
    train_chunk(task, config, rows, vectorized, lambda row, step, tensors, _: saved.setdefault(row.member, {}).__setitem__(step, tensors))
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
    gen = torch.Generator().manual_seed(0)
    p, g = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    g[0, 0] = 0.0  # Adam's second moment stays exactly 0 there
    lr = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)
    mom = torch.tensor([0.9, 0.0, 0.5], dtype=torch.float64)
    wd = torch.tensor([0.0, 1e-2, 1e-3], dtype=torch.float64)
    optimizer = get_optimizer(name)
    params = {"w": p.clone()}
    state = optimizer.init(params)
    optimizer.step(params, {"w": g}, state, Hyper(lr, mom, wd, nesterov=True), 1)
    for i in range(3):
        zeros = {k: torch.zeros_like(p[i]) for k in state["w"]}
        if name == "sgd":
            new, slots = sgd_update(p[i], g[i], zeros, lr[i], mom[i], wd[i], 1, True)
        else:
            new, slots = adam_update(p[i], g[i], zeros, lr[i], mom[i], wd[i], 1, name == "adamw", 0.999, 1e-8)
        torch.testing.assert_close(new, params["w"][i], rtol=0, atol=1e-7)
        for k, v in slots.items():
            torch.testing.assert_close(v, state["w"][k][i], rtol=0, atol=1e-7)


def test_refuses_cone() -> None:
    config = tiny_config(trainer={"optimizer": "cone"})
    task = build_task(config.task)
    with pytest.raises(UserError, match="cone"):
        unroll(task, config, [PlanRow(member=0, optimizer="cone", batch_size=32)])
