"""The engine's training step on a stand-in device: no CPU tensor mixed into a step.

This machine has no GPU, so the ``meta`` device stands in for one: PyTorch refuses an op
that mixes a meta tensor with a CPU tensor (other than a 0-dim one) exactly as it refuses
one that mixes CUDA and CPU. A chunk is built on the CPU (where everything random is
drawn, as on every device), moved with ``Chunk._move`` as a CUDA run moves it, and taken
through a batch, the gradients, the divergence check, the optimizer step, the averages,
the evaluation and the path metrics. Meta tensors hold no values, so a step that must read
one (``item()``, a copy to the CPU) ends what shapes can show; every other failure is a
placement bug that a GPU run would hit. Found this way: the divergence check mixed the
CPU mask of healthy members with the device's losses (every GPU run would have stopped
at its first step), and cone descent multiplied the CPU learning rates by the device's
coefficients.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from attractor import Task
from attractor.config import Config, parse_config
from attractor.plan import PlanRow
from attractor.tasks import build_task
from attractor.tasks.images.augment import CropFlip
from attractor.training.chunk import Chunk
from attractor.training.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")
META = torch.device("meta")
MLP = {"name": "digits-mlp", "hidden": [16]}


def _config(task: dict[str, Any], **trainer: Any) -> Config:
    return parse_config(
        {
            "task": task,
            "trainer": {"steps": 4, "batch_size": 8, **trainer},
            "run": {"snapshots": [4], "track_path": True},
        }
    )


def _image_task() -> Task:
    """A small conv net with a global pool on images augmented by crops and flips."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    return Task(
        name="placement",
        x_train=x[:32],
        y_train=y[:32],
        x_test=x[32:],
        y_test=y[32:],
        make_model=lambda: nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        ),
        num_classes=3,
        augment=CropFlip(2),
    )


CASES: dict[str, tuple[Config, dict[str, Any]]] = {
    "sgd": (_config(MLP), {}),
    "sgd-sam-clip-smoothing": (
        _config(MLP, sam_rho=0.05, clip_norm=1.0, label_smoothing=0.1),
        {},
    ),
    "sgd-nesterov-decay-penalty": (
        _config(MLP, nesterov=True, weight_decay=0.01, logit_penalty=0.01),
        {},
    ),
    "adam-ema": (_config(MLP, optimizer="adam", lr=0.001, ema_decay=0.9), {}),
    "adamw-swa-cosine": (
        _config(
            MLP, optimizer="adamw", lr=0.001, weight_decay=0.01, swa_start=0.5, schedule="cosine"
        ),
        {},
    ),
    "cone": (_config(MLP, optimizer="cone", cone_angle=0.3), {}),
    "cone-random-per-tensor": (
        _config(MLP, optimizer="cone", cone_angle=0.3, cone_random=True, cone_per_tensor=True),
        {},
    ),
    "label-noise-bootstrap-holdout": (
        _config(MLP),
        {"label_noise": 0.2, "bootstrap": 1, "holdout_group": 0},
    ),
    "digits-cnn": (_config({"name": "digits-cnn", "depth": 8, "width": 4}), {}),
    "tiny-lm": (
        _config(
            {"name": "tiny-lm", "width": 32, "context": 32, "layers": 1}, optimizer="adam", lr=0.003
        ),
        {},
    ),
    "augmented-conv": (_config(MLP), {"task": _image_task}),
}


def _reads_values(error: Exception) -> bool:
    """Whether ``error`` is meta's "no data here", not a placement error."""
    text = str(error)
    return ("item()" in text or "Cannot copy out of meta" in text) and "expected device" not in text


@pytest.mark.parametrize("vectorized", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_training_step_keeps_every_tensor_on_the_device(case: str, vectorized: bool) -> None:
    if case == "tiny-lm":
        pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    config, factors = CASES[case]
    factors = dict(factors)
    make = factors.pop("task", None)
    task = make() if make is not None else build_task(config.task)
    rows = [
        PlanRow(
            member=i,
            init_seed=i,
            data_seed=i,
            batch_size=8,
            lr=config.trainer.lr,
            optimizer=config.trainer.optimizer,
            **factors,
        )
        for i in range(2)
    ]
    chunk = Chunk(task, config, rows, vectorized, None)
    chunk._move(META)
    x, y = chunk.next_batch()
    assert x.device == META and y.device == META
    try:
        loss, grads = chunk.gradients(x, y)
    except RuntimeError as error:  # the Hugging Face loop reads a value in its forward
        assert case == "tiny-lm" and not vectorized and _reads_values(error), error
        return
    assert loss.device == META and all(g.device == META for g in grads.values())
    try:
        chunk.freeze_diverged(loss, 1)  # the losses come back to the CPU: meta has none
    except (RuntimeError, NotImplementedError) as error:
        assert _reads_values(error), error
    try:
        chunk.optimizer_step(grads, 2, 0.5)
    except RuntimeError as error:  # cone descent reads whether any member moves along w
        assert case.startswith("cone") and _reads_values(error), error
        return
    chunk.update_average(3, 4)
    assert all(p.device == META for p in chunk.model_params().values())
    assert all(s.device == META for slots in chunk.state.values() for s in slots.values())
    metrics = evaluate(
        chunk.task, chunk.template, chunk.forward, chunk.model_params(), chunk.buffers, 16
    )
    assert all(v.device == META for v in metrics.values())
    assert chunk.path is not None
    assert all(v.device == META for v in chunk.path.metrics(chunk.params).values())
