"""Inference-time perturbations of a member's weights: dropout, DropConnect, weight noise and
quantization, each ``(params [K, ...], level, generator, hidden_inputs) -> params``.

:data:`KINDS` is the registry :mod:`attractor.measure.structural` and
:mod:`attractor.search.perturb` draw from; :func:`check_levels` validates a kind's levels.

References:
    Srivastava et al. (2014), "Dropout"; Wan et al. (2013), "Regularization of Neural
    Networks using DropConnect"; Jacob et al. (2018), "Quantization and Training of
    Neural Networks for Efficient Integer-Arithmetic-Only Inference".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.training.forward import Params

#: ``(params [K, ...] of one member, level, generator, hidden_inputs) -> perturbed params``.
Perturbation = Callable[[Params, float, torch.Generator, set[str]], Params]


def _is_weight(name: str, value: Tensor) -> bool:
    """Weight matrices (and embeddings): ``[K, out, in, ...]``; biases and norms are vectors."""
    return name.endswith("weight") and value.dim() >= 3


def dropout(params: Params, p: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Drop hidden units: zero input column j of every ``nn.Linear`` but the first; scale 1/(1-p).

    Masking the *inputs* of the next layer drops the unit's activation itself, exactly for
    any activation function (masking the previous layer's output rows is exact only for
    positively homogeneous ones such as ReLU).
    """
    out = dict(params)
    for name in hidden_inputs:
        w = params[name]  # [K, out, in]
        keep = torch.rand(w.shape[0], 1, w.shape[2], generator=gen, dtype=w.dtype) >= p
        out[name] = w * keep / (1 - p)
    return out


def dropconnect(params: Params, p: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Zero each entry of every weight matrix (Linear, Embedding) with probability p; scale 1/(1-p).

    Biases and norm scales (vectors) are left untouched.
    """
    return {
        k: v * (torch.rand(v.shape, generator=gen, dtype=v.dtype) >= p) / (1 - p)
        if _is_weight(k, v)
        else v
        for k, v in params.items()
    }


def weight_noise(
    params: Params, scale: float, gen: torch.Generator, hidden_inputs: set[str]
) -> Params:
    """Add Gaussian noise of std ``scale * RMS(tensor)`` to every parameter tensor."""
    out = {}
    for k, v in params.items():
        rms = (
            v.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (v.dim() - 1))
        )  # [K, 1, ...]: per copy, equal
        out[k] = v + scale * rms * torch.randn(v.shape, generator=gen, dtype=v.dtype)
    return out


def quantize(params: Params, bits: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Uniform symmetric per-tensor quantization of every parameter tensor to ``bits`` bits.

    ``b >= 2``: the grid ``scale * {-(2^(b-1)-1), ..., 2^(b-1)-1}`` with ``scale =
    max|W| / (2^(b-1)-1)`` (2^b - 1 values). ``b = 1``: ``sign(W) * mean|W|`` (2 values).
    Deterministic: the generator is unused.
    """
    b = int(bits)
    out = {}
    for k, v in params.items():
        absmax = v.abs().flatten(1).amax(1).view(-1, *[1] * (v.dim() - 1))
        if b == 1:
            out[k] = torch.where(v >= 0, 1.0, -1.0).to(v.dtype) * v.abs().flatten(1).mean(
                1
            ).view_as(absmax)
            continue
        q = 2 ** (b - 1) - 1
        scale = torch.where(absmax > 0, absmax / q, torch.ones_like(absmax))
        out[k] = torch.round(v / scale).clamp(-q, q) * scale
    return out


#: Registry: kind -> (perturbation, level check, description of valid levels, stochastic?).
KINDS: dict[str, tuple[Perturbation, Callable[[float], bool], str, bool]] = {
    "dropout": (dropout, lambda x: 0 <= x < 1, "a probability in [0, 1)", True),
    "dropconnect": (dropconnect, lambda x: 0 <= x < 1, "a probability in [0, 1)", True),
    "weight_noise": (weight_noise, lambda x: x >= 0, "a relative noise scale >= 0", True),
    "quantize": (
        quantize,
        lambda x: x >= 1 and float(x).is_integer(),
        "a whole number of bits >= 1",
        False,
    ),
}


def check_levels(kind: str, levels: Sequence[float]) -> list[float]:
    """Validated, sorted, de-duplicated levels of ``kind``; a :class:`UserError` names a bad one."""
    if kind not in KINDS:
        raise UserError(f"unknown perturbation kind '{kind}'; choose one of: {', '.join(KINDS)}")
    if len(levels) == 0:
        raise UserError(f"give at least one level for '{kind}' (each {KINDS[kind][2]})")
    ok, what = KINDS[kind][1], KINDS[kind][2]
    for level in levels:
        if not (np.isfinite(level) and ok(float(level))):
            raise UserError(
                f"level {level:g} is out of range for '{kind}': each level must be {what}"
            )
    return sorted({float(level) for level in levels})


def hidden_inputs(template: nn.Module) -> set[str]:
    """Weight names of every ``nn.Linear`` but the first: their inputs are hidden units."""
    linears = [name for name, m in template.named_modules() if isinstance(m, nn.Linear)]
    return {f"{name}.weight" for name in linears[1:]}
