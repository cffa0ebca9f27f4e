"""The training loss of a member: the task's per-example loss, label smoothing and the logit
penalty.

Defined once, for the engine (all members at once) and for the tangent replay (one member
under ``vmap``, or all members through the batched forward).
"""

from __future__ import annotations

from torch import Tensor

from attractor.config import TrainerConfig
from attractor.errors import UserError
from attractor.tasks.base import Task, cross_entropy


def check_loss_options(task: Task, *trainers: TrainerConfig) -> None:
    """One line for a loss option the task cannot take (before anything trains)."""
    if any(t.label_smoothing for t in trainers) and task.loss is not cross_entropy:
        raise UserError(
            f"trainer.label_smoothing needs a cross-entropy task; task {task.name!r} has another "
            "loss (set label_smoothing = 0)"
        )


def per_example_loss(
    task: Task, trainer: TrainerConfig, logits: Tensor, y: Tensor, smoothing: Tensor | None = None
) -> Tensor:
    """``[..., batch]`` training loss of every example: ``task.loss`` (+ the logit penalty).

    Args:
        logits: ``[..., batch, classes]`` (any leading member dimensions).
        y: ``[..., batch]`` targets.
        smoothing: ``[members]`` each member's label smoothing (``logits`` then has the member
            dimension first), in place of ``trainer.label_smoothing``.

    References:
        Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016 (label smoothing).
        Pezeshki et al., "Gradient Starvation: A Learning Proclivity in Neural Networks",
        NeurIPS 2021 (spectral decoupling, the logit penalty).
    """
    per_example = task.loss(logits, y)
    if smoothing is not None:
        # As below with one e per member. (1 - e) is taken in float64 and then rounded, as
        # the Python float is, so a member's numbers do not depend on the path; e = 0
        # adds exactly 0 (to the loss and to the gradient), as no smoothing does.
        shape = (-1,) + (1,) * (per_example.dim() - 1)
        keep = (1 - smoothing.double()).to(per_example).view(shape)
        e = smoothing.to(per_example).view(shape)
        uniform = -logits.log_softmax(-1).mean(-1)
        per_example = keep * per_example + e * uniform
    elif trainer.label_smoothing:
        # The cross-entropy against (1 - e) one-hot + e uniform: torch's label_smoothing.
        uniform = -logits.log_softmax(-1).mean(-1)
        per_example = (1 - trainer.label_smoothing) * per_example + (
            trainer.label_smoothing * uniform
        )
    if trainer.logit_penalty:
        # Spectral decoupling: penalize the logits themselves, not the weights, so no
        # feature can grow without bound and starve the others.
        per_example = per_example + 0.5 * trainer.logit_penalty * logits.pow(2).sum(-1)
    return per_example


def member_losses(
    task: Task, trainer: TrainerConfig, logits: Tensor, y: Tensor, smoothing: Tensor | None = None
) -> Tensor:
    """``[members]`` each member's mean training loss (``logits [members, batch, ...]``).

    ``smoothing [members]``: each member's own label smoothing, in place of the trainer's.
    """
    per_example = per_example_loss(task, trainer, logits, y, smoothing)
    return per_example.reshape(logits.shape[0], -1).mean(1)
