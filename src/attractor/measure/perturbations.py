"""Inference-time perturbations of a member's weights: dropout, DropConnect, weight noise and
quantization, each ``(params [K, ...], level, generator, hidden_inputs) -> params``.

:data:`KINDS` is the registry :mod:`attractor.measure.structural` and
:mod:`attractor.search.perturb` draw from; :func:`check_levels` validates a kind's levels.

What is perturbed: only *parameters* (``named_parameters``). Buffers, BatchNorm's running
mean and variance among them, are never touched, so a BatchNorm net in eval mode normalizes
with the statistics it was trained with and a perturbation acts on the weights alone (the
same holds for LayerNorm, which has no buffers). Dropout acts on the inputs of linear and
convolution layers; DropConnect on the entries of weight matrices and convolution kernels;
weight noise and quantization on every parameter tensor, BatchNorm's scale and shift
included (parameters of the net, as biases are, and perturbed as biases always were).

References:
    Srivastava et al. (2014), "Dropout"; Wan et al. (2013), "Regularization of Neural
    Networks using DropConnect"; Jacob et al. (2018), "Quantization and Training of
    Neural Networks for Efficient Integer-Arithmetic-Only Inference".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.training.forward import Params

#: Weight names whose layer's inputs are hidden units (:func:`hidden_inputs`): a mapping
#: ``name -> groups`` of the layer (1 for ``nn.Linear``), or a set of names (groups 1).
HiddenInputs = Mapping[str, int] | Collection[str]
#: ``(params [K, ...] of one member, level, generator, hidden_inputs) -> perturbed params``.
Perturbation = Callable[[Params, float, torch.Generator, HiddenInputs], Params]


def _is_weight(name: str, value: Tensor) -> bool:
    """Weight matrices, conv kernels and embeddings: ``[K, out, in, ...]``; biases and norm
    scales are vectors ``[K, n]``.
    """
    return name.endswith("weight") and value.dim() >= 3


def dropout(params: Params, p: float, gen: torch.Generator, hidden_inputs: HiddenInputs) -> Params:
    """Drop hidden units: zero the inputs of every linear / conv layer but the first; scale
    1/(1-p).

    A linear layer's weight ``[K, out, in]`` loses input column j (unit j of the layer
    before); a convolution's kernel ``[K, out, in / groups, *kernel]`` loses every kernel
    slice that reads input channel c, which is the same as zeroing feature map c (channel, or
    spatial, dropout: Tompson et al. 2015), the conv analogue of dropping a unit. Each
    layer draws its own mask, so where a tensor feeds two layers (a residual block's first
    conv and its 1x1 shortcut conv) a channel is dropped at each independently, and an
    identity shortcut carries it undropped, as dropout placed inside the block does
    (Zagoruyko & Komodakis 2016).

    Masking the *inputs* of the next layer drops the unit's activation itself, exactly for
    any activation function (masking the previous layer's output rows is exact only for
    positively homogeneous ones such as ReLU). Layers are masked in ``params`` order, so the
    masks do not depend on the order of ``hidden_inputs`` (a set's order changes from one
    process to the next with Python's string hashing).

    Args:
        params: ``{name: [K, ...]}``, ``K`` copies of one member's parameters.
        p: drop probability in ``[0, 1)``.
        gen: source of the masks.
        hidden_inputs: :func:`hidden_inputs` (weight name -> groups), or a set of names of
            weights with groups 1.

    Returns:
        ``params`` with the named weights masked and rescaled; shapes and dtypes kept.

    References:
        Srivastava et al. (2014), "Dropout"; Tompson et al. (2015), "Efficient Object
        Localization Using Convolutional Networks" (spatial dropout of feature maps).
    """
    out = dict(params)
    groups = hidden_inputs if isinstance(hidden_inputs, Mapping) else {}
    for name, w in params.items():
        if name not in hidden_inputs:
            continue
        g = groups.get(name, 1)
        # [K, out, in / g, *kernel]; the mask is drawn per input unit or channel (in of them).
        k, n_out, n_in = w.shape[:3]
        if g == 1:  # a linear layer draws exactly what it drew before conv layers were handled
            keep = torch.rand(k, 1, n_in, generator=gen, dtype=w.dtype) >= p
        else:  # output channels of group j read input channels j * n_in ... (j + 1) * n_in - 1
            keep = torch.rand(k, g, 1, n_in, generator=gen, dtype=w.dtype) >= p
            keep = keep.expand(k, g, n_out // g, n_in).reshape(k, n_out, n_in)
        out[name] = w * keep.view(*keep.shape, *[1] * (w.dim() - 3)) / (1 - p)
    return out


def dropconnect(
    params: Params, p: float, gen: torch.Generator, hidden_inputs: HiddenInputs
) -> Params:
    """Zero each entry of every weight matrix or conv kernel (Linear, Conv, Embedding) with
    probability p; scale 1/(1-p).

    Biases and norm scales (vectors, BatchNorm's included) are left untouched.
    """
    return {
        k: v * (torch.rand(v.shape, generator=gen, dtype=v.dtype) >= p) / (1 - p)
        if _is_weight(k, v)
        else v
        for k, v in params.items()
    }


def weight_noise(
    params: Params, scale: float, gen: torch.Generator, hidden_inputs: HiddenInputs
) -> Params:
    """Add Gaussian noise of std ``scale * RMS(tensor)`` to every parameter tensor (conv
    kernels, biases and BatchNorm's scale and shift alike; never its running statistics,
    which are buffers)."""
    out = {}
    for k, v in params.items():
        rms = (
            v.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (v.dim() - 1))
        )  # [K, 1, ...]: per copy, equal
        out[k] = v + scale * rms * torch.randn(v.shape, generator=gen, dtype=v.dtype)
    return out


def quantize(
    params: Params, bits: float, gen: torch.Generator, hidden_inputs: HiddenInputs
) -> Params:
    """Uniform symmetric per-tensor quantization of every parameter tensor to ``bits`` bits
    (a conv kernel is one tensor; BatchNorm's running statistics are buffers and stay).

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


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hidden_inputs(template: nn.Module) -> dict[str, int]:
    """Weights whose inputs are hidden units: every ``nn.Linear`` and ``nn.Conv{1,2,3}d`` but
    the first in module order (which reads the data), as ``{weight name: groups}`` in module
    order (groups 1 for a linear layer).

    For an MLP these are the linear layers after the first, as before convolutions were
    handled. Transposed convolutions, embeddings and attention are not dropout targets.
    """
    layers = [(name, m) for name, m in template.named_modules() if isinstance(m, _LAYERS)]
    return {f"{name}.weight": getattr(m, "groups", 1) for name, m in layers[1:]}
