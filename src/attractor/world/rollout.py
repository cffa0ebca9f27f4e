"""Rolling a world forward: members x initial states at once, the loop as the specification."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.training.forward import Params, batched_forward
from attractor.world.base import Constants, Policy, World


class EnsemblePolicy:
    """Member ``i``'s model applied to row ``i`` of ``inputs [m, s, ...]`` (one batched call).

    Built from stacked parameters and buffers (``Ensemble.stacked``, or perturbed copies of
    them for structural stability) and the model's template module; differentiable in the
    inputs (Lyapunov exponents push tangents through it), never in the parameters.

    ``device``: where the members compute (their inputs must be there: a placed world's
    states, :meth:`~attractor.world.base.World.on`); the parameters, the buffers and the
    template (in place: a buffer the snapshots leave out is read from it) move there.
    None: everything stays where it is (the members compute where the parameters are).
    """

    def __init__(
        self,
        template: nn.Module,
        params: Params,
        buffers: Params,
        device: torch.device | None = None,
    ) -> None:
        first = next(iter(params.values()))
        self.device = first.device if device is None else device
        self.template = template.eval() if device is None else template.eval().to(device)
        self.params = {k: v.detach().to(self.device) for k, v in params.items()}
        self.buffers = {k: v.detach().to(self.device) for k, v in buffers.items()}
        self.forward = batched_forward(self.template)
        self.members = first.shape[0]

    def __call__(self, inputs: Tensor) -> Tensor:
        if inputs.shape[0] != self.members:
            raise ValueError(
                f"inputs have {inputs.shape[0]} member rows, the policy {self.members}"
            )
        return self.forward(self.params, self.buffers, inputs)


@dataclass(frozen=True)
class Rollout:
    """What a rollout produced.

    Attributes:
        final: ``[m, s, *state]`` the states after ``steps`` steps.
        trajectory: ``[k, m, s, *state]`` the states at ``times`` (``None`` if not kept).
        times: the steps at which ``trajectory`` was recorded (0 = the initial states).
    """

    final: Tensor
    trajectory: Tensor | None
    times: list[int]


def initial_batch(x0: Tensor, members: int) -> Tensor:
    """``[s, *state]`` initial states given to every member: ``[m, s, *state]``."""
    return x0.unsqueeze(0).expand(members, *x0.shape).clone()


def constants_on(constants: Constants, device: torch.device) -> Constants:
    """``constants`` with its tensors (per-member constants) on ``device``; floats as they are."""
    if not any(isinstance(v, Tensor) for v in constants.values()):
        return constants
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in constants.items()}


def rollout(
    world: World,
    policy: Policy | None,
    x0: Tensor,
    steps: int | None = None,
    constants: Constants | None = None,
    record: int = 0,
) -> Rollout:
    """Run ``world`` from ``x0 [m, s, *state]`` for ``steps`` steps under ``policy``.

    The steps run on ``x0``'s device (tensor ``constants`` are moved there) and the states
    returned are there too; measures bring them to the CPU (:func:`~attractor.world.basins.
    rollout_labels`, the world experiment).

    Args:
        record: keep about this many states of the trajectory, evenly spaced, the initial
            and final ones included (0: keep none; phase portraits keep ~50).

    Raises:
        ValueError: a step returned another number of members or initial states, or states
            that are not finite where they were (a world's bug, reported with the step).
    """
    steps = world.steps if steps is None else steps
    constants = constants_on(world.constants if constants is None else constants, x0.device)
    keep = set() if record <= 0 else {round(i * steps / max(1, record - 1)) for i in range(record)}
    x, kept, times = x0, [], []
    for t in range(steps + 1):
        if t in keep:
            kept.append(x.detach().clone())
            times.append(t)
        if t == steps:
            break
        nxt = world.step(x, policy, t, constants)
        if nxt.shape[:2] != x.shape[:2]:
            raise ValueError(
                f"world '{world.name}' step {t} returned states of shape {tuple(nxt.shape)} for "
                f"{tuple(x.shape[:2])} members x initial states"
            )
        x = nxt
    trajectory = torch.stack(kept) if kept and all(k.shape == kept[0].shape for k in kept) else None
    return Rollout(final=x, trajectory=trajectory, times=times if trajectory is not None else [])


__all__ = ["EnsemblePolicy", "Rollout", "constants_on", "initial_batch", "rollout"]
