"""The types the tangent modules share, so that their imports point one way.

``unroll`` (the primal replay) -> ``linearized`` (the fast tangent step) -> ``lyapunov``
(exponents and hypergradients) -> ``power`` / ``basin`` / ``hypergrad``: each imports only
modules to its left and this one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from attractor.optim.base import Params, State

#: The optimizer hyperparameters a tangent can be attached to (per-member float64 tensors).
HYPERS = ("lr", "momentum", "weight_decay")
#: The optimizers the replay can differentiate through (cone descent branches on its data).
DIFFERENTIABLE = ("sgd", "adam", "adamw")
#: Hyperparameter name -> ``[members]`` float64 tensor, for every name in :data:`HYPERS`.
Hypers = dict[str, Tensor]
#: ``(params, state, hyper, x, y, step, lr factor) -> (params, state)``: one training step.
StepFn = Callable[[Params, State, Hypers, Tensor, Tensor, int, float], tuple[Params, State]]
#: Per snapshot and member: name -> value.
Record = dict[str, float]


@dataclass
class Tangents:
    """Primal state and ``K`` tangent columns of every member (``[members, K, *shape]``)."""

    params: Params
    state: State
    dparams: Params
    dstate: State
    dhyper: Hypers  # [members, K] float64


__all__ = ["DIFFERENTIABLE", "HYPERS", "Hypers", "Params", "Record", "State", "StepFn", "Tangents"]
