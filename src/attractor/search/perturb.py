"""The ``@`` perturbations of a model spec, each applied in place to one ``nn.Module``.

Dropout, DropConnect, noise and rounding are those of :mod:`attractor.measure.perturbations`
(one copy, ``K = 1``); pruning and half-precision rounding are here.

References:
    Han, Pool, Tran & Dally (2015), "Learning both Weights and Connections for Efficient
    Neural Networks" (magnitude pruning); see :mod:`attractor.measure.structural` for the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.perturbations import KINDS, hidden_inputs

#: ``apply(model, level, generator)``: perturbs ``model``'s parameters in place.
Apply = Callable[[nn.Module, float, torch.Generator], None]
#: ``(level check, valid levels in words)``, or ``None`` for a perturbation without a level.
LevelCheck = tuple[Callable[[float], bool], str] | None

__all__ = ["PERTURBATIONS", "Apply", "LevelCheck"]


def _stacked(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach()[None] for k, v in model.named_parameters()}


def _structural(kind: str, level: Callable[[float], float] = lambda x: x) -> Apply:
    def apply(model: nn.Module, value: float, gen: torch.Generator) -> None:
        hidden = hidden_inputs(model)
        if kind == "dropout" and not hidden:
            raise UserError(
                "@dropout needs a model with a hidden nn.Linear layer; this one has none (try "
                "@dropconnect)"
            )
        new = KINDS[kind][0](_stacked(model), level(value), gen, hidden)
        _assign(model, {k: v[0] for k, v in new.items()})

    return apply


def _round(dtype: torch.dtype) -> Apply:
    def apply(model: nn.Module, value: float, gen: torch.Generator) -> None:
        _assign(model, {k: v.detach().to(dtype).to(v.dtype) for k, v in model.named_parameters()})

    return apply


def _prune(model: nn.Module, share: float, gen: torch.Generator) -> None:
    """Zero the ``share`` smallest |w| of each weight matrix (ties by position); biases stay."""
    out = {}
    for k, v in model.named_parameters():
        w = v.detach()
        if k.endswith("weight") and w.dim() >= 2 and share > 0:
            n = int(round(share * w.numel()))
            order = torch.argsort(w.abs().flatten(), stable=True)[:n]
            w = w.flatten().clone().index_fill_(0, order, 0.0).view_as(w)
        out[k] = w
    _assign(model, out)


def _assign(model: nn.Module, values: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(values[k])


_PROBABILITY = (lambda x: 0 <= x < 1, "a probability in [0, 1)")
#: Perturbation name -> (apply(model, level, generator), (level check, valid levels), or None when
#: it takes no level).
PERTURBATIONS: dict[str, tuple[Apply, LevelCheck]] = {
    "dropout": (_structural("dropout"), _PROBABILITY),
    "dropconnect": (_structural("dropconnect"), _PROBABILITY),
    "noise": (_structural("weight_noise"), (lambda x: x >= 0, "a relative noise scale >= 0")),
    "prune": (_prune, (lambda x: 0 <= x <= 1, "a share in [0, 1]")),
    "bits": (
        _structural("quantize"),
        (lambda x: x >= 1 and float(x).is_integer(), "a whole number of bits >= 1"),
    ),
    "int8": (lambda m, _, g: _structural("quantize")(m, 8.0, g), None),
    "fp16": (_round(torch.float16), None),
    "bf16": (_round(torch.bfloat16), None),
}
