"""Certified upper bounds on how far two feed-forward networks can disagree over an input region.

The difference is always ``net_b(x) - net_a(x)`` (``a`` the reference, ``b`` the changed
copy), over boxes ``lower [n, d] <= x <= upper [n, d]`` (see :func:`ball`, :func:`box`), or
image boxes ``[n, C, H, W]`` for convolutional networks (flattened C-major inside). The
networks may be MLPs, convolutional chains (Conv2d, pooling, eval-mode BatchNorm) and
residual networks (see :data:`attractor.certify.network.SUPPORTED`).

* :func:`bound_difference`: one-shot per-output bounds ``(l, u) [n, out]``, by
  ``"interval"`` (IBP on each net, Gowal et al. 2018), ``"linear"`` (CROWN on the two nets
  stacked, Zhang et al. 2018), ``"optimized"`` (alpha-CROWN, Xu et al. 2021),
  ``"differential"`` (ReluDiff / NeuroDiff-style, Paulsen et al. 2020; same architecture
  only) or ``"auto"`` (differential where it applies, else linear).
* :func:`certify_difference`: branch and bound to a certified upper bound, an attained lower
  bound (with its input) and, given ``delta``, a verdict per point.

Bounds are computed in float64 and are sound for float64 evaluation (see
:mod:`attractor.certify.network` on rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from attractor.certify.bab import (
    Attack,
    BoundFn,
    Objective,
    Outcome,
    branch_and_bound,
    objective_upper,
    sample_attack,
)
from attractor.certify.methods import METHODS, CertifyMethod, resolve_method
from attractor.certify.network import Network, ball, box, to_network
from attractor.errors import UserError

__all__ = [
    "METHODS",
    "CertifyMethod",
    "CertifyResult",
    "Network",
    "ball",
    "bound_difference",
    "box",
    "certify_difference",
    "to_network",
]

#: ``"auto"`` or a name in :data:`METHODS` (the registry is the source of truth).
Method = Literal["auto", "differential", "linear", "optimized", "interval"]


@dataclass(frozen=True)
class CertifyResult:
    """Per point: certified ``upper [n]`` and attained ``lower [n]`` bounds on the objective.

    ``inputs [n, *in_shape]`` attain ``lower``; ``verdicts`` are ``verified`` (upper <= delta),
    ``falsified`` (lower > delta) or ``unknown`` (budget spent, or no ``delta``);
    ``diff_lower, diff_upper [n, out]`` are the one-shot per-output bounds on the whole box.
    """

    objective: str
    method: str
    delta: float | None
    upper: Tensor
    lower: Tensor
    inputs: Tensor
    verdicts: tuple[str, ...]
    boxes: Tensor
    seconds: Tensor
    diff_lower: Tensor
    diff_upper: Tensor

    @property
    def gap(self) -> Tensor:
        """``upper - lower`` ``[n]``: how far from exact the certificate still is."""
        return self.upper - self.lower

    def to_dict(self) -> dict[str, object]:
        """JSON-able values (floats and lists)."""
        return {
            "objective": self.objective,
            "method": self.method,
            "delta": self.delta,
            "upper": self.upper.tolist(),
            "lower": self.lower.tolist(),
            "gap": self.gap.tolist(),
            "inputs": self.inputs.tolist(),
            "verdicts": list(self.verdicts),
            "boxes": self.boxes.tolist(),
            "seconds": self.seconds.tolist(),
            "diff_lower": self.diff_lower.tolist(),
            "diff_upper": self.diff_upper.tolist(),
        }


def bound_difference(
    net_a: nn.Module | Network,
    net_b: nn.Module | Network,
    lower: Tensor,
    upper: Tensor,
    method: Method = "auto",
) -> tuple[Tensor, Tensor]:
    """Bounds ``(l, u) [n, out]`` with ``l <= net_b(x) - net_a(x) <= u`` for all ``x`` in each box
    ``[n, d]`` (or ``[n, *in_shape]``: modules are read for inputs of one point's shape).

    Raises:
        UserError: unknown method, unsupported modules, mismatched input / output sizes, or
            ``"differential"`` on two different architectures.
    """
    a, b, lower, upper = _prepare(net_a, net_b, lower, upper)
    spec = METHODS[resolve_method(method, a, b)]
    return spec.bounds(a, b, lower, upper)


def _prepare(
    net_a: nn.Module | Network, net_b: nn.Module | Network, lower: Tensor, upper: Tensor
) -> tuple[Network, Network, Tensor, Tensor]:
    """Both networks read for inputs shaped like one point of ``lower``, and the boxes flattened
    to ``[n, d]`` float64.
    """
    shape = tuple(lower.shape[1:]) if lower.dim() > 1 else tuple(lower.shape)
    a, b = to_network(net_a, shape), to_network(net_b, shape)
    if (a.in_dim, a.out_dim) != (b.in_dim, b.out_dim):
        raise UserError(
            f"the networks differ in input/output size: {a.in_dim}->{a.out_dim} vs "
            f"{b.in_dim}->{b.out_dim}"
        )
    lower, upper = torch.atleast_2d(lower), torch.atleast_2d(upper)
    n = lower.shape[0]
    lower, upper = lower.reshape(n, -1), upper.reshape(n, -1)
    if lower.shape[-1] != a.in_dim:
        raise UserError(
            f"the region has {lower.shape[-1]} input features but the networks take {a.in_dim}"
        )
    return a, b, lower.to(torch.float64), upper.to(torch.float64)


def certify_difference(
    net_a: nn.Module | Network,
    net_b: nn.Module | Network,
    lower: Tensor,
    upper: Tensor,
    method: Method = "auto",
    objective: Objective = "max_abs",
    budget_s: float = 10.0,
    max_boxes: int = 10_000,
    delta: float | None = None,
    attack: Attack | None = None,
    seed: int = 0,
    rtol: float = 1e-3,
    split: Literal["input", "relu"] = "input",
) -> CertifyResult:
    """Branch and bound on ``objective`` of ``net_b(x) - net_a(x)`` over each box
    ``lower, upper [n, d]`` (or ``[n, *in_shape]``; branching splits the flattened box).

    Args:
        objective: ``"max_abs"`` (max over outputs of ``|diff|``) or an output index ``j`` (signed
            ``diff_j``).
        budget_s: seconds *per point*; ``max_boxes``: boxes bounded per point.
        delta: threshold of the verdicts.
        attack: ``attack(lo [k, d], hi [k, d], objective) -> (values [k], inputs [k, d])``; the
            default tries each box's centre and a few seeded uniform points.
        rtol: stop a point once ``upper - lower <= rtol * |lower|``.
        split: ``"input"`` cuts the input box; ``"relu"`` splits unstable neurons first
            (differential only), then the box. Without beta-CROWN's use of the split
            constraints in the final maximization, neuron splits only sharpen relaxations: on
            the digits benchmark input splits tighten faster.
    """
    a, b, lower, upper = _prepare(net_a, net_b, lower, upper)
    _check_objective(objective, a.out_dim)
    resolved = resolve_method(method, a, b)
    root = bound_difference(a, b, lower, upper, resolved)
    hidden = sum(layer.weight.shape[0] for layer in a.layers[:-1])
    bound = _box_bound(METHODS[resolved], a, b, split)
    outcomes = branch_and_bound(
        a,
        b,
        lower,
        upper,
        bound,
        objective,
        budget_s,
        max_boxes,
        delta,
        attack or sample_attack(seed=seed),
        rtol=rtol,
        hidden=hidden,
        caps=objective_upper(root[0], root[1], objective),
    )
    result = _result(outcomes, str(objective), resolved, delta, root)
    # The attained inputs in the shape the models take (the search ran on flattened boxes).
    return replace(result, inputs=result.inputs.reshape(-1, *a.input_shape))


def _check_objective(objective: Objective, out_dim: int) -> None:
    """Refuse an objective that is neither ``"max_abs"`` nor an output index."""
    if objective != "max_abs" and not (isinstance(objective, int) and 0 <= objective < out_dim):
        raise UserError(
            f"objective must be 'max_abs' or an output index in [0, {out_dim}), got {objective!r}"
        )


def _result(
    outcomes: list[Outcome],
    objective: str,
    method: str,
    delta: float | None,
    root: tuple[Tensor, Tensor],
) -> CertifyResult:
    """The points' outcomes gathered into one :class:`CertifyResult`."""
    return CertifyResult(
        objective=objective,
        method=method,
        delta=delta,
        upper=torch.tensor([o.upper for o in outcomes], dtype=torch.float64),
        lower=torch.tensor([o.lower for o in outcomes], dtype=torch.float64),
        inputs=torch.stack([o.input for o in outcomes]),
        verdicts=tuple(_verdict(o.upper, o.lower, delta) for o in outcomes),
        boxes=torch.tensor([o.boxes for o in outcomes]),
        seconds=torch.tensor([o.seconds for o in outcomes]),
        diff_lower=root[0],
        diff_upper=root[1],
    )


def _box_bound(spec: CertifyMethod, a: Network, b: Network, split: str) -> BoundFn:
    """Branch and bound's per-box bound: its split bound where it has one, else its bound."""
    split_fn = spec.split
    if split_fn is not None:

        def bound(
            lo: Tensor, hi: Tensor, fix: Tensor
        ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
            low, high, neurons, inputs = split_fn(a, b, lo, hi, fix)
            return low, high, neurons if split == "relu" else None, inputs

        return bound

    def plain(
        lo: Tensor, hi: Tensor, fix: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        return (*spec.bounds(a, b, lo, hi), None, None)

    return plain


def _verdict(upper: float, lower: float, delta: float | None) -> str:
    if delta is not None and upper <= delta:
        return "verified"
    if delta is not None and lower > delta:
        return "falsified"
    return "unknown"
