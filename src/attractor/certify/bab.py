"""Branch and bound over the input box: a certified upper and an attained lower bound that meet.

Each point's box is bounded as a whole; then, while budget remains, the domains with the
largest upper bound are split in two and the halves bounded again: a box is cut across the
edge with the largest ``width x |gradient|`` of the objective at its centre; with neuron
splits on, a domain with an unstable neuron instead fixes the one with the largest share of
the bound's slack (BaBSR-like score) to active / inactive. The certified upper bound
is the largest over the boxes still open (and the pruned ones), so it only falls: a half's
bound is also capped by its parent's. Every new box is searched by a pluggable ``attack``
whose inputs are re-evaluated here (float64), and the best value found is the lower bound.
Boxes whose upper bound is at most the lower bound (or at most ``delta``, when verifying)
are pruned. Deterministic given ``seed`` when the run is limited by ``max_boxes``; a time
budget makes the amount of work depend on the machine.

Objectives: ``"max_abs"``, ``max_j |f_b(x)_j - f_a(x)_j|``; or an output index ``j``,
``f_b(x)_j - f_a(x)_j`` (signed; swap the nets for the other sign).

References:
    Bunel et al. 2018, "A unified view of piecewise linear neural network verification", and
    2020, "Branch and bound for piecewise linear neural network verification" (input and
    BaBSR neuron splitting); Wang et al. 2021, "Beta-CROWN" (what neuron splits would need
    to also restrict the final maximization; not done here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from attractor.certify.network import Network

Objective = Literal["max_abs"] | int
# bound(lo [k, d], hi [k, d], fix [k, 2, hidden])
#   -> (low [k, out], high [k, out], neuron scores [k, 2, hidden] | None, input scores [k, d] |
# None)
BoundFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor | None, Tensor | None]]
ObjectiveFn = Callable[[Tensor], Tensor]
# attack(lo [k, d], hi [k, d], objective) -> (values [k], inputs [k, d]): one input per box.
Attack = Callable[[Tensor, Tensor, ObjectiveFn], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Outcome:
    """One point's result: certified ``upper``, attained ``lower`` (at ``input [d]``), work done."""

    upper: float
    lower: float
    input: Tensor
    boxes: int
    seconds: float


def objective_fn(net_a: Network, net_b: Network, objective: Objective) -> ObjectiveFn:
    """The objective as a function of inputs ``[k, d] -> [k]`` (float64, differentiable)."""

    def value(x: Tensor) -> Tensor:
        diff = net_b(x) - net_a(x)
        return diff.abs().amax(-1) if objective == "max_abs" else diff[:, objective]

    return value


def objective_upper(low: Tensor, high: Tensor, objective: Objective) -> Tensor:
    """Upper bound ``[k]`` of the objective from per-output difference bounds
    ``(low, high) [k, out]``.
    """
    return torch.maximum(high, -low).amax(-1) if objective == "max_abs" else high[:, objective]


def sample_attack(samples: int = 4, seed: int = 0) -> Attack:
    """The default attack: each box's centre and ``samples`` uniform points in it, best kept."""
    generator = torch.Generator().manual_seed(seed)

    def attack(lo: Tensor, hi: Tensor, objective: ObjectiveFn) -> tuple[Tensor, Tensor]:
        u = torch.rand(samples, *lo.shape, generator=generator, dtype=torch.float64)
        points = torch.cat([((lo + hi) / 2).unsqueeze(0), lo + u * (hi - lo)])  # [s + 1, k, d]
        with torch.no_grad():
            values = objective(points.reshape(-1, lo.shape[1])).reshape(points.shape[:2])
        best = values.argmax(0)
        return values.gather(0, best.unsqueeze(0))[0], points[best, torch.arange(lo.shape[0])]

    return attack


def branch_and_bound(
    net_a: Network,
    net_b: Network,
    lower: Tensor,
    upper: Tensor,
    bound: BoundFn,
    objective: Objective = "max_abs",
    budget_s: float = 10.0,
    max_boxes: int = 10_000,
    delta: float | None = None,
    attack: Attack | None = None,
    batch: int = 32,
    rtol: float = 1e-3,
    hidden: int = 0,
    caps: Tensor | None = None,
) -> list[Outcome]:
    """Branch and bound on each point's box ``lower[i], upper[i]`` (``[n, d]``), one after another.

    Args:
        bound: per-output bounds of ``f_b - f_a`` over domains (boxes with ReLU splits), and
            split scores per hidden neuron (``None``: split the input only) and per input
            (``None``: width x |gradient| at the centre).
        budget_s: seconds per point; ``max_boxes``: bounded domains per point (the root included).
        delta: stop once the upper bound is ``<= delta`` or the lower bound ``> delta``.
        attack: proposes inputs per box (default :func:`sample_attack`).
        batch: domains split per round (their halves are bounded in one call).
        rtol: stop once ``upper - lower <= rtol * |lower|``.
        hidden: number of hidden neurons per net (the width of the split tensors).
        caps: ``[n]`` an upper bound already certified for each point (the one-shot bound
            over its whole box): the root is capped by it as every child is by its parent, so
            the result is never looser, not even by the round-off of another batch shape.
    """
    attack = attack or sample_attack()
    value = objective_fn(net_a, net_b, objective)
    return [
        _one_point(
            lower[i : i + 1],
            upper[i : i + 1],
            bound,
            value,
            objective,
            budget_s,
            max_boxes,
            delta,
            attack,
            batch,
            rtol,
            hidden,
            None if caps is None else caps[i : i + 1],
        )
        for i in range(lower.shape[0])
    ]


@dataclass
class _Domains:
    """The open domains of one point: boxes ``lo, hi [k, d]``, ReLU fixes ``[k, 2, hidden]``,
    upper bounds ``ub [k]`` and the bound's split scores (``None`` when it gives none)."""

    lo: Tensor
    hi: Tensor
    fix: Tensor
    ub: Tensor
    scores: Tensor | None
    spread: Tensor | None

    def select(self, rows: Tensor) -> _Domains:
        """The domains of ``rows`` (a boolean mask or indices)."""
        return _Domains(
            self.lo[rows],
            self.hi[rows],
            self.fix[rows],
            self.ub[rows],
            None if self.scores is None else self.scores[rows],
            None if self.spread is None else self.spread[rows],
        )

    def extend(self, other: _Domains) -> _Domains:
        """These domains, then ``other``'s (split scores kept only where both have them)."""
        return _Domains(
            torch.cat([self.lo, other.lo]),
            torch.cat([self.hi, other.hi]),
            torch.cat([self.fix, other.fix]),
            torch.cat([self.ub, other.ub]),
            _cat(self.scores, other.scores),
            _cat(self.spread, other.spread),
        )


def _cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return None if a is None or b is None else torch.cat([a, b])


def _bounded(
    bound: BoundFn, lo: Tensor, hi: Tensor, fix: Tensor, objective: Objective, cap: Tensor | None
) -> _Domains:
    """Domains bounded by ``bound``; their upper bounds capped by ``cap`` (their parents')."""
    low, high, scores, spread = bound(lo, hi, fix)
    ub = objective_upper(low, high, objective)
    return _Domains(lo, hi, fix, ub if cap is None else torch.minimum(ub, cap), scores, spread)


def _one_point(
    lo: Tensor,
    hi: Tensor,
    bound: BoundFn,
    value: ObjectiveFn,
    objective: Objective,
    budget_s: float,
    max_boxes: int,
    delta: float | None,
    attack: Attack,
    batch: int,
    rtol: float,
    hidden: int,
    cap: Tensor | None,
) -> Outcome:
    """Branch and bound on one point's box ``lo, hi [1, d]`` (see the module docstring)."""
    start = time.perf_counter()
    fix = torch.zeros(1, 2, hidden, dtype=torch.float64)
    open_ = _bounded(bound, lo, hi, fix, objective, cap)
    best_lb, best_x = _search(lo, hi, value, attack)
    pruned, boxes, best_ub = -float("inf"), 1, float(open_.ub.max())
    while True:
        ub = open_.ub
        best_ub = max(
            min(best_ub, max(float(ub.max()) if ub.numel() else -float("inf"), pruned)), best_lb
        )
        done = best_ub - best_lb <= rtol * abs(best_lb) or (
            delta is not None and (best_ub <= delta or best_lb > delta)
        )
        out_of_budget = boxes + 2 > max_boxes or time.perf_counter() - start >= budget_s
        if done or out_of_budget or ub.numel() == 0:
            break
        keep = ub > (best_lb if delta is None else max(best_lb, delta))
        if not bool(keep.all()):
            pruned = max(pruned, float(ub[~keep].max()))
            open_ = open_.select(keep)
            if open_.ub.numel() == 0:
                continue
        take = torch.topk(open_.ub, min(batch, open_.ub.numel(), max(1, (max_boxes - boxes) // 2)))
        rest = torch.ones_like(open_.ub, dtype=torch.bool)
        rest[take.indices] = False
        children = _children(open_.select(take.indices), bound, value, objective)
        lb, x = _search(children.lo, children.hi, value, attack)
        if lb > best_lb:
            best_lb, best_x = lb, x
        open_ = open_.select(rest).extend(children)
        boxes += children.lo.shape[0]
    return Outcome(best_ub, best_lb, best_x, boxes, time.perf_counter() - start)


def _children(
    parents: _Domains, bound: BoundFn, value: ObjectiveFn, objective: Objective
) -> _Domains:
    """The two halves of every parent, bounded, each capped by its parent's upper bound."""
    lo, hi, fix = _split(parents.lo, parents.hi, parents.fix, parents.scores, parents.spread, value)
    # Empty domains (contradictory splits) are +-inf and drop out through the pruning.
    return _bounded(bound, lo, hi, fix, objective, parents.ub.repeat(2))


def _search(lo: Tensor, hi: Tensor, value: ObjectiveFn, attack: Attack) -> tuple[float, Tensor]:
    """Best objective value over the attack's inputs (re-evaluated, clamped into their boxes)."""
    _, inputs = attack(lo, hi, value)
    inputs = torch.minimum(torch.maximum(inputs.to(torch.float64), lo), hi)
    with torch.no_grad():
        values = value(inputs)
    best = int(values.argmax())
    return float(values[best]), inputs[best].clone()


def _split(
    lo: Tensor,
    hi: Tensor,
    fix: Tensor,
    scores: Tensor | None,
    spread: Tensor | None,
    value: ObjectiveFn,
) -> tuple[Tensor, Tensor, Tensor]:
    """Two children per domain (``[2k, ...]``, all first halves then all second halves).

    A domain with an unstable neuron (positive score) splits the one with the largest score
    into active / inactive; the others cut their box across the edge with the largest
    ``spread`` (the bound's |coefficient| x width) or, without one, width x |gradient| of the
    objective at the centre.
    """
    k = lo.shape[0]
    rows = torch.arange(k)
    centre = (lo + hi) / 2
    if spread is None:
        x = centre.clone().requires_grad_(True)
        with torch.enable_grad():
            grad = torch.autograd.grad(value(x).sum(), x)[0].abs()
        spread = (hi - lo) * grad
    # A small floor keeps flat directions splittable once the steep ones are narrow.
    dim = (
        spread
        + 1e-3 * (hi - lo) * (spread / (hi - lo).clamp(min=1e-300)).amax(-1, keepdim=True)
        + 1e-12 * (hi - lo)
    ).argmax(-1)
    mid = centre[rows, dim]
    left_hi, right_lo = hi.clone(), lo.clone()
    relu = torch.zeros(k, dtype=torch.bool)
    fix_on, fix_off = fix.clone(), fix.clone()
    if scores is not None and scores.numel():
        flat = scores.flatten(1)
        best = flat.argmax(-1)
        relu = flat[rows, best] > 0
        fix_on.flatten(1)[rows[relu], best[relu]] = 1.0
        fix_off.flatten(1)[rows[relu], best[relu]] = -1.0
    box = ~relu
    left_hi[rows[box], dim[box]], right_lo[rows[box], dim[box]] = mid[box], mid[box]
    return torch.cat([lo, right_lo]), torch.cat([left_hi, hi]), torch.cat([fix_on, fix_off])
