"""The certify methods by name: one bound function each, and what ``auto`` picks.

A new method is one function ``(net_a, net_b, lower [n, d], upper [n, d]) -> (low, high)
[n, out]`` bounding ``net_b(x) - net_a(x)`` over each box, plus one line in
:data:`METHODS`; the conformance suite (``tests/conformance/test_certify_methods.py``)
then checks it is sound on random networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from attractor.certify.differential import differential_bounds, split_bounds
from attractor.certify.intervals import interval_difference
from attractor.certify.linear import crown_difference
from attractor.certify.network import Network, same_architecture
from attractor.errors import UserError

__all__ = ["AUTO", "METHODS", "BoundsFn", "CertifyMethod", "SplitFn", "resolve_method"]

#: ``(net_a, net_b, lower [n, d], upper [n, d]) -> (low, high) [n, out]``.
BoundsFn = Callable[[Network, Network, Tensor, Tensor], tuple[Tensor, Tensor]]
#: Branch and bound's bound under ReLU splits ``fix [n, 2, hidden]``: ``(low, high, neuron
#: scores [n, 2, hidden], input scores [n, d] | None)`` (see :func:`split_bounds`).
SplitFn = Callable[
    [Network, Network, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]
]

#: The name that picks a method from the two networks (see :func:`resolve_method`).
AUTO = "auto"


@dataclass(frozen=True)
class CertifyMethod:
    """A registered bound on the difference of two networks.

    Attributes:
        bounds: the one-shot bound (sound for float64 evaluation).
        summary: one line: what it is and where it comes from.
        same_architecture: only applies to two networks of one architecture.
        exact_when_identical: gives exactly 0 for two identical networks.
        split: the bound under ReLU splits, where the method can split neurons in branch
            and bound; ``None``: input splits only.
    """

    bounds: BoundsFn
    summary: str
    same_architecture: bool = False
    exact_when_identical: bool = False
    split: SplitFn | None = None


def _linear(net_a: Network, net_b: Network, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    return crown_difference(net_a, net_b, lower, upper, slopes="adaptive")


def _optimized(
    net_a: Network, net_b: Network, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    return crown_difference(net_a, net_b, lower, upper, slopes="optimized")


METHODS: dict[str, CertifyMethod] = {
    "differential": CertifyMethod(
        differential_bounds,
        "the difference tracked layer by layer (ReluDiff / NeuroDiff)",
        same_architecture=True,
        exact_when_identical=True,
        split=split_bounds,
    ),
    "linear": CertifyMethod(_linear, "CROWN on the two networks stacked (Zhang et al. 2018)"),
    "optimized": CertifyMethod(
        _optimized, "alpha-CROWN: CROWN with optimized slopes (Xu et al. 2021)"
    ),
    "interval": CertifyMethod(
        interval_difference, "interval bounds of each network (Gowal et al. 2018)"
    ),
}


def resolve_method(method: str, net_a: Network, net_b: Network) -> str:
    """The registered method ``method`` names; ``auto``: differential where it applies, else linear.

    Raises:
        UserError: an unknown name (the message lists the known ones).
    """
    if method == AUTO:
        return "differential" if same_architecture(net_a, net_b) else "linear"
    if method not in METHODS:
        raise UserError(f"unknown certify method {method!r}; known: {', '.join([AUTO, *METHODS])}")
    return method
