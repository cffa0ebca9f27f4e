"""Feed-forward networks as the bound methods see them, and the input regions they bound over.

A :class:`Network` is a chain of :class:`Layer` s, each an affine map followed by a
piecewise-linear activation ``sigma(z) = max(z, s * z)`` with a per-neuron negative-side
slope ``s`` in ``[0, 1]``: ``s = 0`` is ReLU, ``0 < s < 1`` LeakyReLU, ``s = 1`` the
identity (the output layer, the padding that lets two nets of different depth be stacked
side by side, a residual block's skip carried past its body, a max pooling's kept operand).
Consecutive affine modules are folded into one map, so the bounds see one affine map
between activations. :mod:`attractor.certify.convert` reads modules into this form:
convolutions, pooling, BatchNorm in eval mode, flatten and residual blocks included.

A layer's weight is a dense matrix or a structured map (a convolution applied without its
matrix, a block matrix; :mod:`attractor.certify.operators`); the bounds reach it only
through that module's functions.

Precision: weights are converted to float64 and every bound is computed in float64. The
bounds are sound in exact arithmetic; float64 rounding of the bound computation and of a
float64 evaluation of the networks is ~1e-16 relative to the activations, far below any
gap we report, so no outward rounding is added (that keeps the differential bound of two
identical networks exactly 0). A float32 evaluation rounds at ~1e-7 relative to the
activations, which can exceed a tight bound on a tiny difference: compare certified
bounds with :meth:`Network.__call__` (float64), never with the float32 module.

Regions are boxes ``lower [n, *in_shape] <= x <= upper [n, *in_shape]``, one per point,
built by :func:`ball` (an L-infinity ball, optionally clipped to the data range) or
:func:`box`; the bounds see them flattened C-major (``x.reshape(n, -1)``, as
``nn.Flatten`` does), ``[n, d]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.certify import operators
from attractor.certify.convert import SUPPORTED, convert
from attractor.certify.operators import DENSE_BYTES, Weight
from attractor.errors import UserError

__all__ = [
    "SUPPORTED",
    "Layer",
    "Network",
    "ball",
    "box",
    "pad_depth",
    "same_architecture",
    "to_network",
]


@dataclass(frozen=True)
class Layer:
    """``x -> sigma(weight @ x + bias)``: ``weight [out, in]`` (a dense matrix or a structured
    :class:`~attractor.certify.operators.LinearMap`), ``bias [out]``, ``slope [out]`` (float64).
    """

    weight: Weight
    bias: Tensor
    slope: Tensor


@dataclass(frozen=True)
class Network:
    """A chain of :class:`Layer` s; the last layer's slope is 1 (pre-activation = output).

    ``in_shape``: the shape of one input before flattening (``None``: flat, ``(in_dim,)``).
    """

    layers: tuple[Layer, ...]
    in_shape: tuple[int, ...] | None = None

    @property
    def in_dim(self) -> int:
        return self.layers[0].weight.shape[1]

    @property
    def out_dim(self) -> int:
        return self.layers[-1].weight.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape: ``in_shape``, or ``(in_dim,)`` for a flat network."""
        return self.in_shape if self.in_shape is not None else (self.in_dim,)

    def __call__(self, x: Tensor) -> Tensor:
        """Outputs ``[n, out_dim]`` of inputs ``x [n, in_dim]`` (or ``[n, *in_shape]``), in float64
        (differentiable).
        """
        x = x.to(torch.float64).reshape(x.shape[0], -1)
        for layer in self.layers:
            z = operators.forward(layer.weight, x) + layer.bias
            x = torch.maximum(z, layer.slope * z)  # max(z, s z) is the activation for s <= 1
        return x


def to_network(
    model: nn.Module | Network,
    in_shape: tuple[int, ...] | None = None,
    dense_bytes: int = DENSE_BYTES,
) -> Network:
    """Read ``model`` into a :class:`Network` (see :data:`SUPPORTED`).

    Args:
        in_shape: one input's shape, e.g. ``(1, 8, 8)``; needed where the model starts with a
            convolution, else taken from the first Linear layer.
        dense_bytes: layers whose weight fits in this many bytes (float64) become dense
            matrices, larger ones stay structured (convolutions, block matrices).

    Raises:
        UserError: for any module outside :data:`SUPPORTED`, a training-mode BatchNorm, a
            LeakyReLU slope outside ``[0, 1]``, a shape mismatch, or a network without an
            affine layer.
    """
    if isinstance(model, Network):
        if in_shape is not None and _numel(in_shape) != model.in_dim:
            raise UserError(
                f"the inputs of shape {tuple(in_shape)} have {_numel(in_shape)} features but the "
                f"network takes {model.in_dim}"
            )
        return model
    chain, shape = convert(model, in_shape, dense_bytes)
    return Network(
        tuple(Layer(w, b, s) for w, b, s in chain), tuple(shape) if len(shape) > 1 else None
    )


def same_architecture(a: Network, b: Network) -> bool:
    """Whether ``a`` and ``b`` have the same layer shapes, weight structures and activation
    slopes (needed by ``differential``).
    """
    return len(a.layers) == len(b.layers) and all(
        operators.same_structure(la.weight, lb.weight) and torch.equal(la.slope, lb.slope)
        for la, lb in zip(a.layers, b.layers, strict=True)
    )


def pad_depth(net: Network, depth: int) -> Network:
    """``net`` with identity layers appended until it has ``depth`` layers (same function)."""
    width = net.out_dim
    identity = Layer(
        torch.eye(width, dtype=torch.float64),
        torch.zeros(width, dtype=torch.float64),
        torch.ones(width, dtype=torch.float64),
    )
    return Network(net.layers + (identity,) * (depth - len(net.layers)), net.in_shape)


def ball(
    center: Tensor, eps: float, clip: tuple[float, float] | tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The L-infinity ball of radius ``eps`` around each point of ``center [n, d]`` (or
    ``[n, *in_shape]``): ``(lower, upper)`` shaped like ``center``.

    ``clip = (lo, hi)`` (scalars or tensors of one point's shape) intersects it with the data
    range.
    """
    center = center.to(torch.float64)
    return box(center - eps, center + eps, clip)


def box(
    lower: Tensor, upper: Tensor, clip: tuple[float, float] | tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The box ``lower [n, d] <= x <= upper [n, d]`` (or ``[n, *in_shape]``) in float64,
    optionally clipped to ``clip = (lo, hi)``.
    """
    lower, upper = (
        torch.atleast_2d(lower.to(torch.float64)),
        torch.atleast_2d(upper.to(torch.float64)),
    )
    if clip is not None:
        lo, hi = (torch.as_tensor(c, dtype=torch.float64) for c in clip)
        lower, upper = torch.maximum(lower, lo), torch.minimum(upper, hi)
    if lower.shape != upper.shape or bool((lower > upper).any()):
        raise UserError(
            "the region is empty: every lower bound must be <= its upper bound (same shape)"
        )
    return lower, upper


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
