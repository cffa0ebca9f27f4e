"""Where do two models (or the members of an ensemble) disagree most? Lower bounds by search.

    a, task = load_model("runs/digits:0")
    b, _ = load_model("runs/digits:1@dropout=0.1")
    region = task_region(task, eps=0.5)                   # L-inf balls around the test set
    found = search_disagreement(a, b, region, objective="js")
    base = sample_disagreement(a, b, region, found.evaluations, objective="js")
    found.best, base.best, found.to_dict()

Any score found is a lower bound on the maximum disagreement over the region; the
``certify`` package bounds it from above. Models are any callables mapping
``[n, *input_shape] -> [n, C]`` logits (``nn.Module`` s in eval mode); objectives are in
:mod:`attractor.search.objectives`, the search and its equal-budget random baseline in
:mod:`attractor.search.continuous` (over the boxes of :mod:`attractor.search.region`), model
specs in :mod:`attractor.search.spec` and :mod:`attractor.search.models` (loading).

References:
    Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial Attacks".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.search.continuous import (
    Region,
    Score,
    SearchResult,
    data_range,
    pgd,
    pgd_evaluations,
    random_search,
)
from attractor.search.models import ModelSpec, load_members, load_model, load_pair, parse_spec
from attractor.search.objectives import (
    ENSEMBLE_OBJECTIVES,
    OBJECTIVES,
    get_ensemble_objective,
    get_objective,
)
from attractor.tasks.base import Task

Model = Callable[[Tensor], Tensor]
#: An ensemble's members: models, an :class:`Ensemble`, or a run directory.
Members = Sequence[Model] | Ensemble | str | Path

__all__ = [
    "ENSEMBLE_OBJECTIVES",
    "OBJECTIVES",
    "ModelSpec",
    "Region",
    "SearchResult",
    "load_members",
    "load_model",
    "load_pair",
    "pair_score",
    "parse_spec",
    "pgd_evaluations",
    "sample_disagreement",
    "sample_ensemble_spread",
    "search_disagreement",
    "search_ensemble_spread",
    "spread_score",
    "task_region",
]


def pair_score(model_a: Model, model_b: Model, objective: str = "js") -> Score:
    """``x [N, *shape] -> [N]``: the objective between the two models' logits on ``x``."""
    fn = get_objective(objective)
    return lambda x: fn(model_a(x), model_b(x))


def spread_score(models: Sequence[Model], objective: str = "mi") -> Score:
    """``x [N, *shape] -> [N]``: the ensemble objective over the models' stacked logits
    ``[m, N, C]``.
    """
    fn = get_ensemble_objective(objective)
    if len(models) < 2:
        raise UserError(f"the ensemble spread needs at least two models, got {len(models)}")
    return lambda x: fn(torch.stack([m(x) for m in models]))


def task_region(
    task: Task,
    eps: float | None = None,
    x: Tensor | None = None,
    clip: bool = True,
    limit: int | None = None,
) -> Region:
    """The usual regions of a task.

    Args:
        task: supplies the data.
        eps: ``None`` for one box over the training data's range; else the radius of
            L-infinity balls around ``x``.
        x: ball centres ``[p, *shape]`` (default: the task's test inputs).
        clip: intersect balls with the training data's range.
        limit: keep only the first ``limit`` centres.
    """
    bounds = data_range(task.x_train)
    if eps is None:
        return Region.box(*bounds)
    x = task.x_test if x is None else x
    x = x if limit is None else x[:limit]
    return Region.ball(x, eps, clip=bounds if clip else None)


def search_disagreement(
    model_a: Model,
    model_b: Model,
    region: Region,
    objective: str = "js",
    restarts: int = 8,
    steps: int = 50,
    step_size: float = 0.25,
    top_k: int = 10,
    seed: int = 0,
) -> SearchResult:
    """PGD with restarts for the inputs of ``region`` where the two models disagree most.

    ``objective`` names a pair objective (:data:`OBJECTIVES`, or ``logit:K``); the other
    arguments are those of :func:`attractor.search.continuous.pgd`.
    """
    score = pair_score(model_a, model_b, objective)
    return pgd(score, region, objective, restarts, steps, step_size, top_k, seed)


def sample_disagreement(
    model_a: Model,
    model_b: Model,
    region: Region,
    evaluations: int,
    objective: str = "js",
    top_k: int = 10,
    seed: int = 0,
) -> SearchResult:
    """The random-sampling baseline at a budget of ``evaluations`` (e.g. a PGD result's)."""
    return random_search(
        pair_score(model_a, model_b, objective), region, evaluations, objective, top_k, seed
    )


def _members(models: Members, step: int | None) -> Sequence[Model]:
    """The member models of an ensemble given as models, an :class:`Ensemble` or a run directory."""
    if isinstance(models, Ensemble):
        return [models.module(m, step).requires_grad_(False) for m in models.members]
    if isinstance(models, str | Path):
        return load_members(models, step)[0]
    return models


def search_ensemble_spread(
    models: Members,
    region: Region,
    objective: str = "mi",
    restarts: int = 8,
    steps: int = 50,
    step_size: float = 0.25,
    top_k: int = 10,
    seed: int = 0,
    step: int | None = None,
) -> SearchResult:
    """PGD for the inputs where the members spread most (:data:`ENSEMBLE_OBJECTIVES`).

    ``models`` are the member models, or an :class:`Ensemble` / run directory whose
    finished members are taken at snapshot ``step`` (default: their last). An evaluation
    scores one input with every member.
    """
    score = spread_score(_members(models, step), objective)
    return pgd(score, region, objective, restarts, steps, step_size, top_k, seed)


def sample_ensemble_spread(
    models: Members,
    region: Region,
    evaluations: int,
    objective: str = "mi",
    top_k: int = 10,
    seed: int = 0,
    step: int | None = None,
) -> SearchResult:
    """The random-sampling baseline of :func:`search_ensemble_spread` at the same budget."""
    return random_search(
        spread_score(_members(models, step), objective), region, evaluations, objective, top_k, seed
    )
