"""Feed-forward networks as the bound methods see them, and the input regions they bound over.

A :class:`Network` is a chain of :class:`Layer` s, each an affine map followed by a
piecewise-linear activation ``sigma(z) = max(z, s * z)`` with a per-neuron negative-side
slope ``s`` in ``[0, 1]``: ``s = 0`` is ReLU, ``0 < s < 1`` LeakyReLU, ``s = 1`` the
identity (the output layer, and the padding that lets two nets of different depth be
stacked side by side). Consecutive affine modules (``Linear``, eval-mode ``BatchNorm1d``)
are folded into one matrix, so the bounds see one affine map between activations.

Precision: weights are converted to float64 and every bound is computed in float64. The
bounds are sound in exact arithmetic; float64 rounding of the bound computation and of a
float64 evaluation of the networks is ~1e-16 relative to the activations, far below any
gap we report, so no outward rounding is added (that keeps the differential bound of two
identical networks exactly 0). A float32 evaluation rounds at ~1e-7 relative to the
activations, which can exceed a tight bound on a tiny difference: compare certified
bounds with :meth:`Network.__call__` (float64), never with the float32 module.

Regions are boxes ``lower [n, d] <= x <= upper [n, d]``, one per point, built by
:func:`ball` (an L-infinity ball, optionally clipped to the data range) or :func:`box`.
Inputs are flat ``[n, d]``; a leading ``nn.Flatten`` is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.errors import UserError

SUPPORTED = (
    "Linear, ReLU, LeakyReLU (slope in [0, 1]), BatchNorm1d (eval), Flatten, Identity, Dropout and "
    "nested Sequential"
)


@dataclass(frozen=True)
class Layer:
    """``x -> sigma(weight @ x + bias)``: ``weight [out, in]``, ``bias [out]``, ``slope [out]``
    (float64).
    """

    weight: Tensor
    bias: Tensor
    slope: Tensor


@dataclass(frozen=True)
class Network:
    """A chain of :class:`Layer` s; the last layer's slope is 1 (pre-activation = output)."""

    layers: tuple[Layer, ...]

    @property
    def in_dim(self) -> int:
        return self.layers[0].weight.shape[1]

    @property
    def out_dim(self) -> int:
        return self.layers[-1].weight.shape[0]

    def __call__(self, x: Tensor) -> Tensor:
        """Outputs ``[n, out_dim]`` of inputs ``x [n, in_dim]``, in float64 (differentiable)."""
        x = x.to(torch.float64)
        for layer in self.layers:
            z = x @ layer.weight.T + layer.bias
            x = torch.maximum(z, layer.slope * z)  # max(z, s z) is the activation for s <= 1
        return x


def to_network(model: nn.Module | Network) -> Network:
    """Read ``model`` (``nn.Sequential``, possibly nested, or one module) into a :class:`Network`.

    Raises:
        UserError: for any module outside :data:`SUPPORTED`, a training-mode BatchNorm, a
            LeakyReLU slope outside ``[0, 1]``, or a network without a Linear layer.
    """
    if isinstance(model, Network):
        return model
    layers: list[Layer] = []
    pending: tuple[Tensor, Tensor] | None = None  # the affine map since the last activation
    width: int | None = None
    for module in _leaves(model):
        affine = _affine_of(module)
        if affine is not None:
            weight, bias = affine
            if pending is not None:
                weight, bias = weight @ pending[0], weight @ pending[1] + bias
            pending, width = (weight, bias), weight.shape[0]
        elif isinstance(module, nn.ReLU | nn.LeakyReLU):
            slope = module.negative_slope if isinstance(module, nn.LeakyReLU) else 0.0
            if not 0.0 <= slope <= 1.0:
                raise UserError(
                    f"LeakyReLU slope {slope} is outside [0, 1]; certify supports only slopes in "
                    "[0, 1]"
                )
            if width is None:
                raise UserError(
                    "the network must start with a Linear layer before any activation (certify)"
                )
            weight, bias = pending if pending is not None else _identity(width)
            layers.append(
                Layer(weight, bias, torch.full((width,), float(slope), dtype=torch.float64))
            )
            pending = None
        elif not isinstance(module, nn.Flatten | nn.Identity | nn.Dropout):
            raise UserError(
                f"certify cannot bound a {type(module).__name__} module; supported: {SUPPORTED}"
            )
    if width is None:
        raise UserError("the network has no Linear layer; certify needs at least one")
    weight, bias = pending if pending is not None else _identity(width)
    layers.append(Layer(weight, bias, torch.ones(width, dtype=torch.float64)))
    return Network(tuple(layers))


def same_architecture(a: Network, b: Network) -> bool:
    """Whether ``a`` and ``b`` have the same layer shapes and activation slopes (needed by
    ``differential``).
    """
    return len(a.layers) == len(b.layers) and all(
        la.weight.shape == lb.weight.shape and torch.equal(la.slope, lb.slope)
        for la, lb in zip(a.layers, b.layers, strict=True)
    )


def pad_depth(net: Network, depth: int) -> Network:
    """``net`` with identity layers appended until it has ``depth`` layers (same function)."""
    extra = [Layer(*_identity(net.out_dim), torch.ones(net.out_dim, dtype=torch.float64))] * (
        depth - len(net.layers)
    )
    return Network(net.layers + tuple(extra))


def ball(
    center: Tensor, eps: float, clip: tuple[float, float] | tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The L-infinity ball of radius ``eps`` around each row of ``center [n, d]``:
    ``(lower, upper)`` ``[n, d]``.

    ``clip = (lo, hi)`` (scalars or ``[d]`` tensors) intersects it with the data range.
    """
    center = center.to(torch.float64)
    return box(center - eps, center + eps, clip)


def box(
    lower: Tensor, upper: Tensor, clip: tuple[float, float] | tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The box ``lower [n, d] <= x <= upper [n, d]`` in float64, optionally clipped to
    ``clip = (lo, hi)``.
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


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    if isinstance(module, nn.Sequential):
        for child in module:
            yield from _leaves(child)
    else:
        yield module


def _affine_of(module: nn.Module) -> tuple[Tensor, Tensor] | None:
    """``(weight [out, in], bias [out])`` in float64 of an affine module, else None."""
    if isinstance(module, nn.Linear):
        weight = module.weight.detach().to(torch.float64)
        bias = (
            module.bias.detach().to(torch.float64)
            if module.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64)
        )
        return weight.clone(), bias.clone()
    if isinstance(module, nn.BatchNorm1d):
        if module.training or module.running_mean is None or module.running_var is None:
            raise UserError(
                "certify needs BatchNorm1d in eval mode with running statistics: call model.eval() "
                "first"
            )
        scale = 1.0 / torch.sqrt(module.running_var.detach().to(torch.float64) + module.eps)
        shift = -module.running_mean.detach().to(torch.float64) * scale
        if module.affine:
            gamma, beta = (
                module.weight.detach().to(torch.float64),
                module.bias.detach().to(torch.float64),
            )
            scale, shift = scale * gamma, shift * gamma + beta
        return torch.diag(scale), shift
    return None


def _identity(width: int) -> tuple[Tensor, Tensor]:
    return torch.eye(width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64)
