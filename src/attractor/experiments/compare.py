"""Where two models part ways: a search from below and a certificate from above, one result.

``compare_models("runs/digits:0", "runs/digits:0@noise=1e-3", eps=0.05)``:

1. **Search** (lower bound): PGD with restarts maximizes the chosen objective (JS by
   default) over L-infinity balls of radius ``eps`` around ``points`` test inputs (or over
   the training data's box with ``eps=None``), against random sampling at the same number
   of model evaluations (:mod:`attractor.search`).
2. **Certificate** (upper bound) on ``max_j |f_B(x)_j - f_A(x)_j|``, the largest logit
   difference, over the same boxes: branch and bound (:mod:`attractor.certify`) with a PGD
   attack on that quantity supplying the lower bound, and per point the verdict for a
   threshold ``delta``: ``verified`` (proven <= delta over the whole box), ``falsified``
   (an input with more was found) or ``unknown`` (budget spent, gap reported).
3. **Per output** ``j``: the certified interval of ``f_B - f_A`` over all boxes against
   the range actually attained at the inputs seen (centres, search and attack inputs).

Models the certificate cannot read (anything outside :data:`attractor.certify.network.SUPPORTED`:
MLPs, convolutional chains with pooling and eval-mode BatchNorm, ResNets) still get the
search; the result says why there is no certificate.

A pure analysis (it reads models, trains and writes nothing). It sits beside the
experiments rather than in :mod:`attractor.search` or :mod:`attractor.certify` because it
joins the two, and those layers are independent of each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.experiments.disagreement import CERTIFIED_OBJECTIVE, Disagreement
from attractor.runs.progress import Stages
from attractor.search import (
    Region,
    SearchResult,
    load_members,
    load_pair,
    sample_disagreement,
    sample_ensemble_spread,
    search_disagreement,
    search_ensemble_spread,
    task_region,
)
from attractor.search.continuous import pgd
from attractor.search.models import placed
from attractor.tasks.base import Task

__all__ = [
    "CERTIFIED_OBJECTIVE",
    "Disagreement",
    "compare_models",
    "ensemble_spread",
    "load_centers",
]


def _pgd_attack(restarts: int, steps: int, seed: int):  # noqa: ANN202 - returns certify's Attack
    """An :data:`attractor.certify.bab.Attack` by our PGD: the best of ``restarts`` per box."""

    def attack(lo: Tensor, hi: Tensor, objective: Any) -> tuple[Tensor, Tensor]:
        box = Region(lo.float(), hi.float(), center=((lo + hi) / 2).float())
        found = pgd(lambda x: objective(x.double()), box, restarts=restarts, steps=steps, seed=seed)
        inputs = found.best_inputs.double()
        with torch.no_grad():
            return objective(inputs), inputs

    return attack


def _per_output(
    model_a: nn.Module, model_b: nn.Module, found: SearchResult, region: Region, certificate: Any
) -> pd.DataFrame:
    """Per output: the range of ``f_B - f_A`` attained at the inputs seen (search inputs,
    centres, attack inputs) and its certified interval.
    """
    seen = [found.inputs, found.best_inputs] + ([] if region.center is None else [region.center])
    if certificate is not None:
        seen.append(certificate.inputs.float())
    inputs = torch.cat([s.float() for s in seen])
    with torch.no_grad():
        diff = (model_b(inputs) - model_a(inputs)).double()  # [k, out]
    table = pd.DataFrame(
        {
            "output": range(diff.shape[1]),
            "attained_low": diff.amin(0).numpy(),
            "attained_high": diff.amax(0).numpy(),
        }
    )
    if certificate is not None:
        table["certified_low"] = certificate.diff_lower.amin(0).numpy()
        table["certified_high"] = certificate.diff_upper.amax(0).numpy()
    return table


def load_centers(path: str | Path, task: Task) -> Tensor:
    """Ball centres from a ``.npy`` file of shape ``[p, *input_shape]`` (one line on anything
    else).
    """
    import numpy as np

    path = Path(path)
    try:
        x = torch.from_numpy(np.load(path, allow_pickle=False)).float()
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--centers '{path}' is not a readable .npy array ({str(exc).splitlines()[0]})"
        ) from None
    if tuple(x.shape[1:]) != tuple(task.x_test.shape[1:]):
        shape = ", ".join(map(str, task.x_test.shape[1:]))
        raise UserError(
            f"--centers '{path}' has shape {tuple(x.shape)}; "
            f"the task's inputs are [points, {shape}]"
        )
    return x


def _region(
    task: Task, eps: float | None, points: int, centers: str | Path | None, clip: bool
) -> Region:
    """The balls (or the box) searched and bounded, after one-line checks of the options."""
    if not task.x_test.is_floating_point():
        raise UserError(
            f"task '{task.name}' takes discrete inputs ({task.x_test.dtype}); attractor diff "
            "searches and bounds continuous inputs (compare such models with `attractor measure` "
            "on their predictions)"
        )
    if points < 1:
        raise UserError(f"--points must be at least 1, got {points}")
    if centers is not None and eps is None:
        raise UserError("--centers needs --eps (the radius of the balls around them)")
    x = None if centers is None else load_centers(centers, task)
    return task_region(task, eps, x=x, clip=clip, limit=points)


def ensemble_spread(
    run_dir: str | Path,
    *,
    eps: float | None = 0.05,
    points: int = 20,
    objective: str = "mi",
    centers: str | Path | None = None,
    clip: bool = True,
    restarts: int = 8,
    steps: int = 50,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> Disagreement:
    """The inputs on which a run's members spread most (``mi``: mutual information, or
    ``pairwise_js``).

    Search and its equal-budget random baseline only: certificates compare two models.
    ``device``: where the members' forward and backward passes run (the search's own
    tensors stay on the CPU). ``progress``: a line on stderr as each begins (once the
    models and options are checked).
    """
    members, the_task = load_members(run_dir)
    models = [placed(m, device) for m in members]
    region = _region(the_task, eps, points, centers, clip)
    with Stages("diff", 2, progress) as stages:
        stages.begin(_search_stage(region.points, restarts, steps, f"{len(models)} members"))
        found = search_ensemble_spread(models, region, objective, restarts, steps, seed=seed)
        stages.begin(f"random baseline: {found.evaluations} evaluations")
        baseline = sample_ensemble_spread(models, region, found.evaluations, objective, seed=seed)
    settings = {
        "points": region.points,
        "restarts": restarts,
        "steps": steps,
        "seed": seed,
        "members": len(models),
    }
    region_kind = "box" if eps is None else "ball"
    no_table = pd.DataFrame(columns=["output", "attained_low", "attained_high"])
    return Disagreement(
        str(run_dir),
        f"its {len(models)} members' spread",
        the_task.name,
        region_kind,
        eps,
        region.center,
        found,
        baseline,
        None,
        "certificates compare two models, not an ensemble",
        no_table,
        settings,
    )


def _search_stage(points: int, restarts: int, steps: int, models: str) -> str:
    """What the search stage does, for its progress line."""
    return f"search: {points} points x {restarts} restarts x {steps} PGD steps on {models}"


def _certify_stage(points: int, budget_s: float) -> str:
    """What the certificate stage does and how long it may take, for its progress line."""
    if budget_s == 0:
        return f"certificate: one-shot bounds on {points} points"
    return f"certificate: branch and bound on {points} points, up to {budget_s:g} s each"


def _certificate(
    model_a: nn.Module,
    model_b: nn.Module,
    region: Region,
    method: str,
    budget_s: float,
    delta: float | None,
    seed: int,
) -> tuple[Any, str | None]:
    """``(certificate, None)``, or ``(None, why not)`` for models or inputs it cannot read."""
    from attractor.certify import certify_difference, to_network

    shape = tuple(region.lower.shape[1:])  # images too: certify flattens the boxes itself
    try:
        net_a, net_b = to_network(model_a, shape), to_network(model_b, shape)
    except UserError as exc:
        return None, str(exc)
    attack = _pgd_attack(restarts=4, steps=20, seed=seed)
    max_boxes = 1 if budget_s == 0 else 10_000
    certificate = certify_difference(
        net_a,
        net_b,
        region.lower,
        region.upper,
        method=method,  # type: ignore[arg-type]
        budget_s=budget_s,
        max_boxes=max_boxes,
        delta=delta,
        attack=attack,
        seed=seed,
    )
    return certificate, None


def compare_models(
    spec_a: str,
    spec_b: str,
    *,
    task: Task | str | Path | None = None,
    eps: float | None = 0.05,
    points: int = 20,
    objective: str = "js",
    delta: float | None = None,
    budget_s: float = 10.0,
    method: str = "auto",
    restarts: int = 8,
    steps: int = 50,
    seed: int = 0,
    centers: str | Path | None = None,
    clip: bool = True,
    device: str = "cpu",
    progress: bool = False,
) -> Disagreement:
    """Search for and bound the disagreement of two models (specs as in ``search.load_model``).

    Args:
        eps: radius of the L-infinity balls around the first ``points`` test inputs (clipped
            to the training data's range); ``None``: one box over that range.
        objective: the search's objective (:data:`attractor.search.OBJECTIVES`).
        delta: threshold on the largest logit difference for the certificate's verdicts.
        budget_s: branch-and-bound seconds per point (0: the one-shot bound only).
        method: certificate method: auto, differential, linear, optimized or interval.
        centers: a ``.npy`` file of ball centres instead of the test inputs.
        clip: intersect the balls with the training data's range.
        device: where the search's and the baseline's forward and backward passes run; the
            certificate is computed in float64 on the CPU wherever the models ran.
        progress: a line on stderr as search, baseline and certificate begin (once the
            models and options are checked, so a refusal is the only line).
    """
    # Over 60 lines only by its signature and docstring; the body is short.
    if budget_s < 0:
        raise UserError(f"--budget must be >= 0 seconds, got {budget_s}")
    model_a, model_b, the_task = load_pair(spec_a, spec_b, task)
    region = _region(the_task, eps, points, centers, clip)
    with Stages("diff", 3, progress) as stages:
        stages.begin(_search_stage(region.points, restarts, steps, "2 models"))
        on_a, on_b = placed(model_a, device), placed(model_b, device)
        found = search_disagreement(on_a, on_b, region, objective, restarts, steps, seed=seed)
        stages.begin(f"random baseline: {found.evaluations} evaluations")
        baseline = sample_disagreement(on_a, on_b, region, found.evaluations, objective, seed=seed)
        stages.begin(_certify_stage(region.points, budget_s))
        certificate, note = _certificate(model_a, model_b, region, method, budget_s, delta, seed)
    per_output = _per_output(model_a, model_b, found, region, certificate)
    settings = {
        "points": region.points,
        "restarts": restarts,
        "steps": steps,
        "seed": seed,
        "delta": delta,
        "budget_s": budget_s,
        "method": method,
    }
    return Disagreement(
        spec_a,
        spec_b,
        the_task.name,
        "box" if eps is None else "ball",
        eps,
        region.center,
        found,
        baseline,
        certificate,
        note,
        per_output,
        settings,
    )
