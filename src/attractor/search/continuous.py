"""Search over continuous inputs: projected gradient ascent with restarts, and its baseline.

Regions are boxes, one per starting point (:mod:`attractor.search.region`); projection
onto a box is a clamp.

PGD (Madry et al. 2018) ascends a score ``x [N, *shape] -> [N]`` with sign-gradient
steps (steepest ascent for the L-infinity geometry of a box) whose size follows a cosine
decay from ``step_size`` times the box width down to zero. All ``points x restarts``
iterates move together, one forward and one backward of shape ``[points*restarts, ...]``
per step. Restart 0 starts at the region's centre (the data point of a ball) when there
is one; the others start uniformly at random in the box, drawn from a generator keyed by
(seed, point id), so a point's search does not depend on which other points share it.

Evaluation accounting (the random baseline gets the same budget): one *evaluation* is one
input scored by the models (a forward pass of every model on one input). A gradient step
costs :data:`GRADIENT_STEP_COST` = 2 evaluations per input (forward, plus a backward to
the inputs only, which costs about one forward: no weight gradients are formed); the final
scoring of the last iterate costs 1. So PGD uses ``points * restarts * (2 * steps + 1)``.

References:
    Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models
    Resistant to Adversarial Attacks" (PGD with random restarts, sign steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.search.region import Region, data_range
from attractor.search.result import SearchResult, best_rows
from attractor.seeds import torch_generator

# Region, data_range and SearchResult moved to region.py and result.py; they stay importable
# from here.
__all__ = [
    "GRADIENT_STEP_COST",
    "Region",
    "Score",
    "SearchResult",
    "data_range",
    "pgd",
    "pgd_evaluations",
    "random_search",
]

#: ``x [N, *shape] -> score [N]`` (float), differentiable in ``x``.
Score = Callable[[Tensor], Tensor]
#: Evaluations charged per input for one gradient step (forward + backward to the inputs).
GRADIENT_STEP_COST = 2
_CHUNK = 8192  # inputs per scoring call of the random baseline (bounds memory)


def _starts(region: Region, restarts: int, seed: int) -> Tensor:
    """Starting iterates ``[p * restarts, *shape]``: the centre (if any) then uniform draws, per
    point.
    """
    rows = []
    for i in range(region.points):
        gen = torch_generator("search:pgd-start", seed, int(region.ids[i]))
        u = torch.rand((restarts, *region.shape), generator=gen)
        x = region.lower[i] + u * (region.upper[i] - region.lower[i])
        if region.center is not None:
            x[0] = region.center[i]
        rows.append(x)
    return torch.cat(rows)


def pgd(
    score: Score,
    region: Region,
    objective: str = "score",
    restarts: int = 8,
    steps: int = 50,
    step_size: float = 0.25,
    top_k: int = 10,
    seed: int = 0,
) -> SearchResult:
    """Maximize ``score`` over each point's box by sign-gradient ascent with restarts.

    Args:
        score: ``x [N, *shape] -> [N]``, differentiable; rows must not interact (eval mode).
        region: the boxes, one per starting point.
        objective: the score's name, recorded in the result.
        restarts: iterates per point (restart 0 at the centre if the region has one).
        steps: gradient steps per iterate.
        step_size: the first step, as a fraction of the box width; decays to 0 (cosine).
        top_k: how many of the ``points * restarts`` final bests to return.
        seed: seed of the random starts.

    Returns:
        :class:`SearchResult` with ``points * restarts * (2 * steps + 1)`` evaluations.

    References:
        Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial Attacks".
    """
    if restarts < 1 or steps < 0 or top_k < 1 or not step_size > 0:
        raise UserError(
            f"need restarts >= 1, steps >= 0, top_k >= 1 and step_size > 0 (got {restarts}, "
            f"{steps}, {top_k}, {step_size})"
        )
    best_s, best_x = _ascend(score, region, restarts, steps, step_size, seed)
    settings = {"restarts": restarts, "steps": steps, "step_size": step_size, "seed": seed}
    evaluations = pgd_evaluations(region.points, restarts, steps)
    return _pgd_result(region, restarts, best_s, best_x, objective, top_k, evaluations, settings)


def _ascend(
    score: Score, region: Region, restarts: int, steps: int, step_size: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Every iterate's best score ``[p * restarts]`` (float64) and where it was found."""
    lower = region.lower.repeat_interleave(restarts, 0)  # [p*r, *shape], row = point * r + restart
    upper = region.upper.repeat_interleave(restarts, 0)
    width = upper - lower
    x = _starts(region, restarts, seed)
    best_s = torch.full((region.points * restarts,), -math.inf, dtype=torch.float64)
    best_x = x.clone()

    def keep(s: Tensor, x: Tensor) -> None:
        better = s > best_s  # NaN never wins
        best_s[better] = s[better]
        best_x[better] = x[better]

    for t in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            s = score(x)
            (grad,) = torch.autograd.grad(s.sum(), x)
        keep(s.detach().to(torch.float64), x.detach())
        alpha = step_size * 0.5 * (1 + math.cos(math.pi * t / steps))
        x = x.detach() + alpha * width * torch.nan_to_num(grad).sign()
        x = torch.minimum(torch.maximum(x, lower), upper)
    with torch.no_grad():
        keep(score(x).to(torch.float64), x)
    return best_s, best_x


def _pgd_result(
    region: Region,
    restarts: int,
    best_s: Tensor,
    best_x: Tensor,
    objective: str,
    top_k: int,
    evaluations: int,
    settings: dict[str, Any],
) -> SearchResult:
    """The result of the iterates' bests: each point's best, and the top ``top_k`` overall."""
    p = region.points
    per_point = best_s.view(p, restarts)
    winner = per_point.argmax(1)
    best_inputs = best_x.view(p, restarts, *region.shape)[torch.arange(p), winner]
    point_of_row = torch.arange(p).repeat_interleave(restarts)
    scores, inputs, points = best_rows(best_s, best_x, point_of_row, top_k)
    return SearchResult(
        "pgd",
        objective,
        inputs,
        scores,
        points,
        per_point.amax(1),
        best_inputs,
        evaluations,
        settings,
    )


def pgd_evaluations(points: int, restarts: int, steps: int) -> int:
    """The evaluations :func:`pgd` charges: ``points * restarts * (2 * steps + 1)``."""
    return points * restarts * (GRADIENT_STEP_COST * steps + 1)


def _sample_batches(region: Region, per_point: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(point [N], x [N, *shape])`` chunks: each point's centre (if any) then uniform draws."""
    pending_points, pending_x, size = [], [], 0
    for i in range(region.points):
        gen = torch_generator("search:random", seed, int(region.ids[i]))
        left = per_point
        if region.center is not None:
            pending_points.append(torch.tensor([i]))
            pending_x.append(region.center[i : i + 1])
            left, size = left - 1, size + 1
        while left > 0:
            n = min(left, _CHUNK)
            u = torch.rand((n, *region.shape), generator=gen)
            pending_points.append(torch.full((n,), i))
            pending_x.append(region.lower[i] + u * (region.upper[i] - region.lower[i]))
            left, size = left - n, size + n
            if size >= _CHUNK:
                yield torch.cat(pending_points), torch.cat(pending_x)
                pending_points, pending_x, size = [], [], 0
    if pending_points:
        yield torch.cat(pending_points), torch.cat(pending_x)


@torch.no_grad()
def random_search(
    score: Score,
    region: Region,
    evaluations: int,
    objective: str = "score",
    top_k: int = 10,
    seed: int = 0,
) -> SearchResult:
    """The baseline: score ``evaluations // points`` uniform draws in each point's box.

    Each point's centre (if any) is one of its draws, as it is PGD's first iterate.

    Args:
        score: ``x [N, *shape] -> [N]``.
        region: the boxes.
        evaluations: the budget, e.g. :func:`pgd_evaluations` of the PGD run it is compared with.
        objective: the score's name, recorded in the result.
        top_k: how many of all draws to return.
        seed: seed of the draws.
    """
    per_point = evaluations // region.points
    if per_point < 1 or top_k < 1:
        raise UserError(
            f"the budget of {evaluations} evaluations is less than one per point ({region.points} "
            "points)"
        )
    p, shape = region.points, region.shape
    best_s = torch.full((p,), -math.inf, dtype=torch.float64)
    best_x = region.lower.clone()
    top_s = torch.empty(0, dtype=torch.float64)
    top_x, top_p = torch.empty(0, *shape), torch.empty(0, dtype=torch.long)
    for points, x in _sample_batches(region, per_point, seed):
        s = score(x).to(torch.float64)
        ranked = torch.nan_to_num(s, nan=-math.inf)
        # Per point: the best draw of this chunk (scatter_reduce amax, then the first row reaching
        # it).
        chunk_best = torch.full((p,), -math.inf, dtype=torch.float64).scatter_reduce(
            0, points, ranked, "amax"
        )
        better = chunk_best > best_s
        for i in torch.nonzero(better).flatten().tolist():
            row = int(torch.nonzero((points == i) & (ranked == chunk_best[i]))[0])
            best_x[i] = x[row]
        best_s = torch.where(better, chunk_best, best_s)
        top_s, top_x, top_p = best_rows(
            torch.cat([top_s, s]), torch.cat([top_x, x]), torch.cat([top_p, points]), top_k
        )
    settings = {"samples_per_point": per_point, "seed": seed}
    return SearchResult(
        "random", objective, top_x, top_s, top_p, best_s, best_x, per_point * p, settings
    )
