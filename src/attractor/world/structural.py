"""Structural stability of the world level: perturb the system, not its initial state.

Two kinds of perturbation, each giving a *curve* — the basin share (with its two-way
interval, :func:`attractor.world.basins.basin_share`) per perturbation size, on the same
initial states at every size:

* :func:`model_curve` — the members' models: dropout, DropConnect, weight noise or
  quantization of their weights (:mod:`attractor.measure.perturbations`, reused), one draw
  per member and level, as an :class:`~attractor.world.rollout.EnsemblePolicy`;
* :func:`constants_curve` — the world itself: named constants multiplied by factors (pole
  length x1, x1.5, x2).

A curve's first row is the unperturbed system (level 0, full precision for quantization,
factor 1), the reference; the rows after it go from smaller to larger perturbations. In a
world without a goal the basin counted at every size is the majority basin of the
reference row.

:func:`break_point` reads a curve: the first perturbation size at which the share falls
below a threshold (default: half of the reference share), with an interval from the
bootstrap bounds of the curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.perturbations import KINDS, check_levels, hidden_inputs
from attractor.seeds import torch_generator
from attractor.training.forward import Params
from attractor.world.base import Constants, Policy, World
from attractor.world.basins import basin_share, rollout_labels
from attractor.world.rollout import EnsemblePolicy, initial_batch

__all__ = ["BreakPoint", "break_point", "constants_curve", "model_curve", "perturbed_policy"]


@dataclass(frozen=True)
class BreakPoint:
    """Where a curve breaks.

    Attributes:
        at: the first perturbation size (curve order) whose share is below ``threshold``.
        early: the first size whose interval's *lower* bound is below it (the curve may
            have broken from here on: the lower end of the break point's interval).
        late: the first size whose *upper* bound is below it (the curve has clearly broken
            here: the upper end), ``None`` if the upper bound never falls below in range.
        threshold: the share counted as broken below.
        reference: the share of the unperturbed system (the curve's first row).
    """

    at: float
    early: float
    late: float | None
    threshold: float
    reference: float


def break_point(
    curve: pd.DataFrame,
    threshold: float | None = None,
    fraction: float = 0.5,
    x: str | None = None,
) -> BreakPoint | None:
    """The smallest perturbation at which the basin share falls below a threshold.

    Definition: the rows of ``curve`` are read in order (the first is the unperturbed
    reference, then increasing perturbation); the break point is the ``x`` of the first
    row with ``share < threshold``, ``threshold = fraction * reference share`` unless
    given. Its interval runs from the first row whose bootstrap ``low`` is below the
    threshold (broken is plausible from there) to the first whose ``high`` is (broken
    beyond the interval's doubt), so a noisy curve gives a wide interval. Only the levels
    measured can come out: refine the levels near the break point for a finer answer.

    Args:
        curve: columns ``share, low, high`` and ``x`` (default ``level`` or ``factor``).
        threshold: an absolute share; default ``fraction`` of the first row's share.

    Returns:
        :class:`BreakPoint`, or ``None`` when the share never falls below the threshold in
        the range measured.
    """
    x = x or next((c for c in ("level", "factor", "scale") if c in curve), None)
    missing = [c for c in (x, "share", "low", "high") if c is None or c not in curve]
    if missing or len(curve) == 0:
        raise UserError(
            "a curve needs rows with columns share, low, high and the perturbation size "
            "(level, factor or scale)"
        )
    share, low, high = (curve[c].to_numpy(dtype=np.float64) for c in ("share", "low", "high"))
    sizes = curve[x].to_numpy(dtype=np.float64)
    reference = float(share[0])
    threshold = fraction * reference if threshold is None else float(threshold)
    below = np.flatnonzero(share < threshold)
    if len(below) == 0:
        return None
    at = int(below[0])
    # Percentile intervals need not contain the point estimate: keep early <= at <= late.
    early = min(at, int(np.flatnonzero(low < threshold)[0]))
    late_rows = np.flatnonzero(high < threshold)
    late = None if len(late_rows) == 0 else max(at, int(late_rows[0]))
    return BreakPoint(
        at=float(sizes[at]),
        early=float(sizes[early]),
        late=None if late is None else float(sizes[late]),
        threshold=threshold,
        reference=reference,
    )


def _curve(
    labels: list[Tensor],
    sizes: list[float],
    column: str,
    goal: bool,
    draws: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """Rows ``column, share, low, high, basin, goal, members, n`` from labels per size."""
    basin = 1 if goal else basin_share(labels[0], draws=1).basin  # the reference's majority
    rows = []
    for k, (size, lab) in enumerate(zip(sizes, labels, strict=True)):
        est = basin_share(lab, goal, basin, draws=draws, seed=seed + k, level=level)
        rows.append(
            {
                column: size,
                "share": est.share,
                "low": est.low,
                "high": est.high,
                "basin": basin,
                "goal": goal,
                "members": est.n_members,
                "n": est.n_states,
            }
        )
    return pd.DataFrame(rows)


def _states(world: World, n_states: int, scale: float, seed: int, members: int) -> Tensor:
    """The same ``[m, n, *state]`` initial states for every perturbation size."""
    if n_states < 1:
        raise UserError(f"n_states must be at least 1, got {n_states}")
    x0 = world.initial(n_states, float(scale), torch_generator("world-structural-states", seed))
    return initial_batch(x0, members)


def _model_levels(kind: str, levels: Sequence[float]) -> list[float]:
    """The reference first, then increasing perturbation: ``0, ...`` or ``inf, bits desc``."""
    checked = check_levels(kind, levels)
    if kind == "quantize":  # fewer bits perturb more; full precision is the reference
        return [math.inf, *sorted(checked, reverse=True)]
    return [0.0, *(v for v in checked if v != 0.0)]


def perturbed_policy(
    template: nn.Module,
    params: Params,
    buffers: Params,
    kind: str,
    size: float,
    generator: torch.Generator,
) -> EnsemblePolicy:
    """The members with their weights perturbed by ``kind`` at ``size``, one draw each, on
    the device ``params`` are on.

    The masks and noises are drawn and applied on the CPU (``generator`` is a CPU one), so a
    member's perturbed weights are the same numbers on every device.
    """
    device = next(iter(params.values())).device
    on_cpu = {k: v.cpu() for k, v in params.items()}
    weights = KINDS[kind][0](on_cpu, size, generator, hidden_inputs(template))
    return EnsemblePolicy(template, weights, buffers, device=device)


def model_curve(
    world: World,
    template: nn.Module,
    params: Params,
    buffers: Params,
    kind: str,
    levels: Sequence[float],
    n_states: int,
    scale: float = 1.0,
    steps: int | None = None,
    seed: int = 0,
    constants: Constants | None = None,
    draws: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Basin share vs perturbation of the members' weights.

    Args:
        world: the world the members act in.
        template: the model's module (``Ensemble.task.make_model()``).
        params, buffers: stacked ``[m, ...]`` weights of the members (``Ensemble.stacked``).
        kind: ``dropout``, ``dropconnect``, ``weight_noise`` or ``quantize``
            (:data:`attractor.measure.perturbations.KINDS`).
        levels: drop probabilities, relative noise scales or bit counts.
        n_states: initial states, drawn once at ``scale`` from ``seed``.
        seed: seed of the initial states, the masks / noises (stream
            ``world-structural:<kind>:<level>``) and the bootstrap.

    Returns:
        One row per level, the unperturbed reference first (level 0; ``inf`` for
        quantization, then bits descending): ``level, share, low, high, basin, goal,
        members, n``. Each member gets its own mask / noise at each level; the two-way
        bootstrap over members therefore covers the draw of the masks too.
    """
    sizes = _model_levels(kind, levels)
    if kind == "dropout" and not hidden_inputs(template):
        raise UserError("dropout needs a model with a hidden nn.Linear layer; this one has none")
    members = next(iter(params.values())).shape[0]
    x0 = _states(world, n_states, scale, seed, members)
    labels = []
    for k, size in enumerate(sizes):
        policy = (  # the reference is the model itself, not a level-0 draw
            EnsemblePolicy(template, params, buffers)
            if k == 0
            else perturbed_policy(
                template,
                params,
                buffers,
                kind,
                size,
                torch_generator(f"world-structural:{kind}:{size!r}", seed),
            )
        )
        labels.append(rollout_labels(world, policy, x0, steps, constants))
    return _curve(labels, sizes, "level", world.goal is not None, draws, seed, level)


def constants_curve(
    world: World,
    policy: Policy | None,
    members: int,
    names: Sequence[str],
    factors: Sequence[float],
    n_states: int,
    scale: float = 1.0,
    steps: int | None = None,
    seed: int = 0,
    constants: Constants | None = None,
    draws: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Basin share as the world's named constants are multiplied by ``factors``.

    Every constant in ``names`` is multiplied by the same factor in a row. Factor 1 (the
    reference) comes first, added if missing; the other factors keep their order, so give
    them moving away from 1 in one direction (``1.5, 2, 3``) for :func:`break_point`.

    Args:
        members: ``m`` (the policy's member count; any ``m`` for a world without a model).
        constants: the base constants (default the world's own).

    Returns:
        One row per factor: ``factor, share, low, high, basin, goal, members, n`` and one
        column per named constant with its value.
    """
    base = world.with_constants(**dict(constants or {}))
    if not names:
        raise UserError("name at least one of the world's constants to perturb")
    world.with_constants(**{name: base.get(name, 0.0) for name in names})  # unknown names
    if any(not np.isfinite(f) for f in factors):
        raise UserError("constant factors must be finite numbers")
    sizes = [1.0, *(float(f) for f in factors if float(f) != 1.0)]
    x0 = _states(world, n_states, scale, seed, int(members))
    labels, values = [], []
    for factor in sizes:
        changed = {**base, **{name: base[name] * factor for name in names}}
        try:
            labels.append(rollout_labels(world, policy, x0, steps, changed))
        except UserError as exc:  # say which perturbed constants broke the world
            shown = ", ".join(f"{name}={changed[name]:g}" for name in names)
            raise UserError(f"{exc} (with {shown})") from None
        values.append({name: changed[name] for name in names})
    curve = _curve(labels, sizes, "factor", world.goal is not None, draws, seed, level)
    return pd.concat([curve, pd.DataFrame(values)], axis=1)
