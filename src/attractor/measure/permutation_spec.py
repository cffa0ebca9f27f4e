"""Permutation specs: which axes of which tensors one permutation of hidden units reorders.

Hidden units (neurons, channels) of a network can be permuted without changing its
function, as long as every tensor that reads or writes those units is permuted along the
same axis. A :class:`PermutationSpec` names each such permutation and, per tensor, which
permutation acts on each of its axes (Git Re-Basin's ``permutation_spec_from_axes_to_perm``):

* a ``Linear`` weight ``[out, in]`` and a conv weight ``[out, in, kh, kw]`` take their own
  output permutation on axis 0 and the previous layer's on axis 1; biases take axis 0;
* BatchNorm's weight, bias, running mean and running variance follow the permutation of
  the channels they normalize;
* in a residual network the stream that skip connections add into has one permutation
  shared by the stem and every block writing to it, until a projection shortcut starts a
  new one;
* a ``Linear`` after ``Flatten`` of ``[C, H, W]`` features reads its input axis as ``C``
  channel-major blocks of ``H * W`` (:attr:`Axis.block`), so a channel permutation moves
  whole blocks.

:func:`permutation_spec` derives the spec of a flat ``nn.Sequential`` chain (MLPs, LeNet,
VGG) or of :class:`~attractor.tasks.conv_models.ResNet` from its modules; anything else is
refused. :func:`permute_state` applies permutations to a state dict.

References:
    Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo Permutation
    Symmetries", ICLR (permutation specs, Appendix A).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.tasks.conv_models import BasicBlock, ResNet
from attractor.training.forward import ELEMENTWISE

__all__ = [
    "Axis",
    "PermutationSpec",
    "block_index",
    "permutation_spec",
    "permute_state",
    "resnet_spec",
    "sequential_spec",
]

State = dict[str, Tensor]
Perms = dict[str, Tensor]

# Layers that act on each unit (or channel) separately or only move values within a
# channel, so they commute with a permutation of units.
_PASSTHROUGH = (
    *ELEMENTWISE,
    nn.ELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")

SUPPORTED = (
    "permutation alignment supports nn.Sequential chains of Linear, Conv2d, BatchNorm, "
    "elementwise activations, pooling, Flatten and Dropout layers, and attractor's ResNet"
)


@dataclass(frozen=True)
class Axis:
    """One axis of a tensor reordered by permutation ``perm``.

    Attributes:
        perm: name of the permutation (the module whose outputs it reorders).
        block: consecutive entries per unit along the axis: 1, or ``H * W`` for the input
            axis of a ``Linear`` after ``Flatten`` of ``[C, H, W]`` (channel-major).
    """

    perm: str
    block: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which tensor.

    Attributes:
        perms: permutation name -> number of units, in the order of the forward pass.
        axes: tensor name -> one entry per axis, an :class:`Axis` or ``None`` (not permuted).
            Tensors of the state dict not named here (BatchNorm's step counter, the output
            layer's bias) are never permuted.
        parameters: the tensors that are trainable parameters; weight matching compares
            these only (buffers such as running statistics are permuted, not matched).
    """

    perms: dict[str, int]
    axes: dict[str, tuple[Axis | None, ...]]
    parameters: frozenset[str] = field(default_factory=frozenset)

    def perm_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Permutation name -> every ``(tensor, axis)`` it reorders, tensors in spec order."""
        out: dict[str, list[tuple[str, int]]] = {p: [] for p in self.perms}
        for tensor, axes in self.axes.items():
            for index, axis in enumerate(axes):
                if axis is not None:
                    out[axis.perm].append((tensor, index))
        return out


def block_index(perm: Tensor, block: int) -> Tensor:
    """``[units * block]`` index that moves whole blocks: entry ``i * block + j`` of the
    result is entry ``perm[i] * block + j`` of the original.
    """
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)


def permute_state(spec: PermutationSpec, state: State, perms: Perms) -> State:
    """``state`` with units reordered: every axis of every tensor in ``spec`` by its permutation.

    Args:
        spec: the model's permutation spec (:func:`permutation_spec`).
        state: parameters and buffers of the model.
        perms: permutation name -> int64 ``[units]``; unit ``i`` of the result is unit
            ``perms[name][i]`` of ``state``. Permutations left out keep their order.

    Returns:
        A new state dict computing exactly the same function (in train and eval mode).
    """
    unknown = sorted(set(perms) - set(spec.perms))
    if unknown:
        raise ValueError(
            f"no permutation '{unknown[0]}' in the spec; known: {', '.join(spec.perms)}"
        )
    out = dict(state)
    for tensor, axes in spec.axes.items():
        value = out[tensor]
        for index, axis in enumerate(axes):
            if axis is not None and axis.perm in perms:
                value = value.index_select(index, block_index(perms[axis.perm], axis.block))
        out[tensor] = value
    return out


# ---- deriving specs ---------------------------------------------------------------------
class _Builder:
    """Collects the spec while walking a model's layers."""

    def __init__(self, model: nn.Module) -> None:
        self.perms: dict[str, int] = {}
        self.axes: dict[str, tuple[Axis | None, ...]] = {}
        self.state = dict(model.state_dict())
        self.parameters = frozenset(name for name, _ in model.named_parameters())

    def new(self, name: str, size: int) -> Axis:
        self.perms[name] = size
        return Axis(name)

    def weight_layer(
        self, name: str, module: nn.Linear | nn.Conv2d, out: Axis | None, into: Axis | None
    ) -> None:
        """Weight ``[out, in, ...]`` and bias ``[out]`` of a ``Linear`` or ``Conv2d``."""
        spatial = (None,) * (module.weight.dim() - 2)
        self.axes[f"{name}.weight"] = (out, into, *spatial)
        if module.bias is not None:
            self.axes[f"{name}.bias"] = (out,)

    def batchnorm(self, name: str, channels: Axis | None) -> None:
        """Affine parameters and running statistics follow the channels they normalize."""
        for part in _BATCHNORM_TENSORS:
            if f"{name}.{part}" in self.state:
                self.axes[f"{name}.{part}"] = (channels,)

    def spec(self) -> PermutationSpec:
        return PermutationSpec(self.perms, self.axes, self.parameters)


def _flattened_block(name: str, module: nn.Linear, current: Axis, units: int) -> int:
    """Entries per channel in the flattened input of ``module`` (``H * W`` of ``[C, H, W]``)."""
    if module.in_features % units:
        raise UserError(
            f"layer '{name}' reads {module.in_features} flattened features, not a multiple of "
            f"the {units} channels of '{current.perm}'"
        )
    return module.in_features // units


def sequential_spec(model: nn.Sequential) -> PermutationSpec:
    """Spec of a flat chain: each ``Linear``/``Conv2d`` but the last starts a permutation.

    Raises:
        UserError: a layer is not one the chain supports (:data:`SUPPORTED`).
    """
    children = list(model.named_children())
    weighted = [name for name, m in children if isinstance(m, nn.Linear | nn.Conv2d)]
    last = weighted[-1] if weighted else None
    build = _Builder(model)
    current: Axis | None = None  # the permutation of the features flowing out of the last layer
    flat = False  # a Flatten since the last weight layer: the next Linear reads blocks
    for name, child in children:
        if isinstance(child, nn.Linear):
            into = current
            if current is not None and flat:
                into = Axis(
                    current.perm,
                    _flattened_block(name, child, current, build.perms[current.perm]),
                )
            out = None if name == last else build.new(name, child.out_features)
            build.weight_layer(name, child, out, into)
            current, flat = out, False
        elif isinstance(child, nn.Conv2d):
            if flat or child.groups != 1:
                what = "after a Flatten" if flat else f"with groups={child.groups}"
                raise UserError(f"{SUPPORTED}; layer '{name}' is a Conv2d {what}")
            out = None if name == last else build.new(name, child.out_channels)
            build.weight_layer(name, child, out, current)
            current = out
        elif isinstance(child, _BATCHNORM):
            if flat and current is not None:
                raise UserError(f"{SUPPORTED}; layer '{name}' is a BatchNorm after a Flatten")
            build.batchnorm(name, current)
        elif isinstance(child, nn.Flatten):
            flat = True
        elif not isinstance(child, _PASSTHROUGH):
            raise UserError(f"{SUPPORTED}; layer '{name}' is a {type(child).__name__}")
    return build.spec()


def resnet_spec(model: ResNet) -> PermutationSpec:
    """Spec of :class:`~attractor.tasks.conv_models.ResNet` by its module names.

    The stem and every block with an identity shortcut write to one residual stream and
    share its permutation (named after the stem's conv, ``stem.0``); a projection
    shortcut starts a new stream (``stages.<i>.shortcut.0``) shared by that block's
    ``conv2``/``bn2`` and the shortcut's conv and BatchNorm. Each block's inner channels
    (``conv1``, ``bn1``, input of ``conv2``) have their own permutation
    (``stages.<i>.conv1``).

    Raises:
        UserError: the model's structure is not the one :class:`ResNet` builds.
    """
    stem, head = list(model.stem), list(model.head)
    if not (
        type(model).forward is ResNet.forward
        and len(stem) == 3
        and isinstance(stem[0], nn.Conv2d)
        and isinstance(stem[1], nn.BatchNorm2d)
        and len(head) == 3
        and isinstance(head[2], nn.Linear)
        and all(type(b) is BasicBlock for b in model.stages)
    ):
        raise UserError(f"{SUPPORTED}; this {type(model).__name__} is not built as ResNet builds")
    build = _Builder(model)
    stream = build.new("stem.0", stem[0].out_channels)
    build.weight_layer("stem.0", stem[0], stream, None)
    build.batchnorm("stem.1", stream)
    for index, block in enumerate(model.stages):
        at = f"stages.{index}"
        # Registered before the stream it feeds, so a sweep in this order finds conv2's
        # input already matched when it reaches a new stream.
        inner = build.new(f"{at}.conv1", block.conv1.out_channels)
        build.weight_layer(f"{at}.conv1", block.conv1, inner, stream)
        build.batchnorm(f"{at}.bn1", inner)
        if len(block.shortcut):
            projection = block.shortcut[0]
            new = build.new(f"{at}.shortcut.0", projection.out_channels)
            build.weight_layer(f"{at}.shortcut.0", projection, new, stream)
            build.batchnorm(f"{at}.shortcut.1", new)
            stream = new
        build.weight_layer(f"{at}.conv2", block.conv2, stream, inner)
        build.batchnorm(f"{at}.bn2", stream)
    linear = head[2]
    spatial = _flattened_block("head.2", linear, stream, build.perms[stream.perm])
    build.weight_layer("head.2", linear, None, Axis(stream.perm, spatial))
    return build.spec()


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of ``model``: a flat ``nn.Sequential`` chain or attractor's ResNet.

    A subclass of ``nn.Sequential`` counts as a chain when it keeps ``Sequential``'s
    forward (``LeNet``, ``VGG``).

    Raises:
        UserError: any other model, or a layer the chain does not support; one line saying
            what is supported.

    References:
        Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo
        Permutation Symmetries", ICLR.
    """
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        return sequential_spec(model)
    if isinstance(model, ResNet):
        return resnet_spec(model)
    raise UserError(f"{SUPPORTED}; the task's model is a {type(model).__name__}")
