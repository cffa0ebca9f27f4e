"""The training loss of a member: the task's per-example loss plus the logit penalty.

Defined once, for the engine (all members at once) and for the tangent replay (one member
under ``vmap``, or all members through the batched forward).
"""

from __future__ import annotations

from torch import Tensor

from attractor.config import TrainerConfig
from attractor.tasks.base import Task


def per_example_loss(task: Task, trainer: TrainerConfig, logits: Tensor, y: Tensor) -> Tensor:
    """``[..., batch]`` training loss of every example: ``task.loss`` (+ the logit penalty).

    Args:
        logits: ``[..., batch, classes]`` (any leading member dimensions).
        y: ``[..., batch]`` targets.

    References:
        Pezeshki et al., "Gradient Starvation: A Learning Proclivity in Neural Networks",
        NeurIPS 2021 (spectral decoupling, the logit penalty).
    """
    per_example = task.loss(logits, y)
    if trainer.logit_penalty:
        # Spectral decoupling: penalize the logits themselves, not the weights, so no
        # feature can grow without bound and starve the others.
        per_example = per_example + 0.5 * trainer.logit_penalty * logits.pow(2).sum(-1)
    return per_example


def member_losses(task: Task, trainer: TrainerConfig, logits: Tensor, y: Tensor) -> Tensor:
    """``[members]`` each member's mean training loss (``logits [members, batch, ...]``)."""
    per_example = per_example_loss(task, trainer, logits, y)
    return per_example.reshape(logits.shape[0], -1).mean(1)
