"""Basins of the world level: where do the closed loops of the members end up?

A rollout of ``m`` members from ``s`` initial states ends in final states ``[m, s, *state]``;
each (member, initial state) pair is given a basin label (:func:`basin_labels`): 1/0 for
"reached the goal" in a world with a goal, else the value of the world's categorical
``basin_feature``. On those labels:

* :func:`basin_share` — the share of pairs in the goal (or in the majority basin, named),
  with a 95 % interval from the two-way bootstrap, and each member's own share;
* :func:`basin_vs_scale` — that share as the initial states are perturbed more and more;
* :func:`basin_map` — the share per cell of a grid over two of the world's factors;
* :func:`basin_agreement` — do two members agree on the basin of one initial state more
  often than one member agrees with itself across two initial states?

Why the bootstrap is two-way. The ``m * s`` outcomes are not independent: all outcomes of
one member share its weights, and all outcomes from one initial state share that state.
With a member effect ``a_i`` and a state effect ``b_j`` the variance of the mean share is
about ``var(a) / m + var(b) / s + var(e) / (m s)``, while resampling the ``m * s`` pairs as
if they were independent estimates ``p (1 - p) / (m s)`` — it drops the first two terms, so
with few members (a typical ensemble has 8–32) it is many times too narrow. Resampling the
members and the initial states independently (the multi-bootstrap of Sellam et al. 2021,
the pigeonhole bootstrap of Owen 2007) keeps both terms; it is somewhat conservative (it
counts the interaction term more than once), which the coverage test tolerates.

Rollouts go through :func:`rollout_labels`, which turns a world's broken step (wrong
shapes, NaN states) into one :class:`~attractor.errors.UserError` line naming the world and
the step.

References:
    Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis";
    Owen (2007), "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.bootstrap import multibootstrap
from attractor.seeds import numpy_generator, torch_generator
from attractor.world.base import Constants, Policy, World
from attractor.world.rollout import initial_batch, rollout

__all__ = [
    "BasinShare",
    "basin_agreement",
    "basin_labels",
    "basin_map",
    "basin_share",
    "basin_vs_scale",
    "rollout_labels",
]


@dataclass(frozen=True)
class BasinShare:
    """The share of (member, initial state) pairs in one basin, with its two-way interval.

    Attributes:
        share: share of the ``m * s`` pairs whose label is ``basin``.
        low, high: percentile interval of the two-way bootstrap (members and initial
            states resampled independently), coverage ``level``.
        basin: the label counted (1 = the goal in a world with a goal).
        goal: whether ``basin`` is the goal (else the majority basin, or the one asked for).
        members: ``Float[ndarray, "m"]`` each member's share over the initial states.
        n_members, n_states: ``m`` and ``s``.
        draws, level: bootstrap settings.
    """

    share: float
    low: float
    high: float
    basin: int
    goal: bool
    members: np.ndarray
    n_members: int
    n_states: int
    draws: int
    level: float


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def basin_labels(world: World, final: Tensor, constants: Constants | None = None) -> Tensor:
    """``Long[Tensor, "m s"]`` basin label of each final state ``final [m, s, *state]``.

    1/0 for goal reached or not when the world has a goal, else the value of its
    ``basin_feature`` (which must be an integer feature: a class, a basin index).

    Raises:
        UserError: the world's goal or basin feature has another shape than ``[m, s]``, or
            the basin feature is missing or not categorical.
    """
    constants = world.constants if constants is None else constants
    lead = tuple(final.shape[:2])
    if world.goal is not None:
        labels, what = world.goal(final, constants), "goal"
    else:
        features = world.features(final, constants)
        if world.basin_feature not in features:
            raise UserError(
                f"world '{world.name}' has no feature {world.basin_feature!r} (its basin "
                f"feature); its features: {', '.join(sorted(features))}"
            )
        labels, what = features[world.basin_feature], f"basin feature {world.basin_feature!r}"
        if labels.is_floating_point() or labels.is_complex():
            raise UserError(
                f"world '{world.name}': {what} is {labels.dtype}, not categorical; return an "
                "integer tensor (a basin index per final state)"
            )
    if tuple(labels.shape) != lead:
        raise UserError(
            f"world '{world.name}': {what} has shape {tuple(labels.shape)}, expected {lead} "
            "(members x initial states)"
        )
    return labels.detach().long()


def rollout_labels(
    world: World,
    policy: Policy | None,
    x0: Tensor,
    steps: int | None = None,
    constants: Constants | None = None,
) -> Tensor:
    """Roll ``x0 [m, s, *state]`` out (on its device) and label the final states on the CPU:
    ``Long[Tensor, "m s"]``.

    Raises:
        UserError: one line naming the world and the step where its step returned the wrong
            shape (the rollout's ``ValueError``) or states that are not finite.
    """
    constants = world.constants if constants is None else constants
    if x0.is_floating_point() and not torch.isfinite(x0).all():
        raise UserError(f"world '{world.name}': the initial states are not finite")
    with torch.no_grad():
        try:
            # Labels are a measure: taken on the CPU, the same wherever the rollout ran.
            final = rollout(world, policy, x0, steps, constants).final.cpu()
        except ValueError as exc:  # the rollout names the world and step already
            raise UserError(_one_line(exc)) from None
        if final.is_floating_point() and not torch.isfinite(final).all():
            raise UserError(_first_nonfinite(world, policy, x0, steps, constants))
    return basin_labels(world, final, constants)


def _first_nonfinite(
    world: World, policy: Policy | None, x0: Tensor, steps: int | None, constants: Constants
) -> str:
    """The one-line message for a rollout that ended in NaN/inf: which step produced it.

    Runs the rollout again step by step (only on this failure path, so the normal path
    keeps no trajectory).
    """
    x = x0
    for t in range(world.steps if steps is None else steps):
        x = world.step(x, policy, t, constants)
        bad = ~torch.isfinite(x.reshape(*x.shape[:2], -1)).all(-1)
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            return (
                f"world '{world.name}' step {t} returned states that are not finite (member "
                f"{i}, initial state {j}, {int(bad.sum())} of {bad.numel()} pairs); check the "
                "world's step and its constants"
            )
    return f"world '{world.name}' returned final states that are not finite"


def _majority(labels: np.ndarray) -> int:
    """The most frequent label (the smallest one on a tie)."""
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)])


def _as_labels(labels: Tensor | np.ndarray) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(
            f"basin labels must be [members, initial states], got shape {tuple(array.shape)}"
        )
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise UserError(f"basin labels must be integers (categorical), got {array.dtype}")
    return array.astype(np.int64)


def basin_share(
    labels: Tensor | np.ndarray,
    goal: bool = False,
    basin: int | None = None,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BasinShare:
    """Share of (member, initial state) pairs in the goal or a basin, with a two-way interval.

    Args:
        labels: ``Long[Tensor, "m s"]`` from :func:`basin_labels`.
        goal: the labels are 1/0 goal reached (count label 1).
        basin: the label to count; default 1 with ``goal``, else the majority label (fixed
            from the full data: the bootstrap measures the share of that basin).
        draws, seed, level: two-way bootstrap (members and initial states resampled
            independently, :func:`attractor.measure.bootstrap.multibootstrap`).
    """
    array = _as_labels(labels)
    basin = (1 if goal else _majority(array)) if basin is None else int(basin)
    inside = (array == basin).astype(np.float64)
    est = multibootstrap(inside, draws=draws, seed=seed, level=level)
    return BasinShare(
        share=est.value,
        low=est.low,
        high=est.high,
        basin=basin,
        goal=goal and basin == 1,
        members=inside.mean(1),
        n_members=array.shape[0],
        n_states=array.shape[1],
        draws=draws,
        level=level,
    )


def _members(policy: Policy | None, members: int | None) -> int:
    """``m``: given, or the policy's own member count (an :class:`EnsemblePolicy`)."""
    if members is None:
        members = getattr(policy, "members", None)
    if members is None or int(members) < 1:
        raise UserError("give the number of members (at least 1) for a policy without one")
    return int(members)


def basin_vs_scale(
    world: World,
    policy: Policy | None,
    members: int | None,
    scales: Sequence[float],
    n_states: int,
    steps: int | None = None,
    seed: int = 0,
    constants: Constants | None = None,
    draws: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Basin share vs perturbation scale of the initial states.

    For scale ``k`` the ``n_states`` initial states come from ``world.initial(n, scale,
    generator)`` with one generator seeded from ``seed`` and ``k`` (stream
    ``world-basin-scale``), the same states for every member. In a world without a goal
    the basin counted is the majority basin at the smallest scale (the nominal basin),
    kept for every scale, so the curve follows one basin.

    Args:
        members: ``m`` (default: ``policy.members``; a world without a model needs it).

    Returns:
        One row per scale, in the given order: ``scale, share, low, high, n`` (initial
        states), ``members``, ``basin`` (the label counted), ``goal``.
    """
    if len(scales) == 0:
        raise UserError("give at least one perturbation scale")
    if n_states < 1:
        raise UserError(f"n_states must be at least 1, got {n_states}")
    m = _members(policy, members)
    labels = []
    for k, scale in enumerate(scales):
        x0 = world.initial(n_states, float(scale), torch_generator("world-basin-scale", seed, k))
        labels.append(rollout_labels(world, policy, initial_batch(x0, m), steps, constants))
    goal = world.goal is not None
    nominal = int(np.argmin(np.asarray(scales, dtype=float)))
    basin = 1 if goal else _majority(_as_labels(labels[nominal]))
    rows = []
    for k, scale in enumerate(scales):
        est = basin_share(labels[k], goal, basin, draws=draws, seed=seed + k, level=level)
        rows.append(
            {
                "scale": float(scale),
                "share": est.share,
                "low": est.low,
                "high": est.high,
                "n": n_states,
                "members": m,
                "basin": basin,
                "goal": goal,
            }
        )
    return pd.DataFrame(rows)


def _grid_values(world: World, factor: str, values: Sequence[float] | Tensor) -> Tensor:
    if factor not in world.factors:
        raise UserError(
            f"world '{world.name}' has no factor {factor!r}; its factors: "
            f"{', '.join(sorted(world.factors))}"
        )
    out = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if len(out) == 0 or not torch.isfinite(out).all():
        raise UserError(f"give finite values for factor {factor!r} (at least one)")
    return out


def basin_map(
    world: World,
    policy: Policy | None,
    factor_a: str,
    values_a: Sequence[float] | Tensor,
    factor_b: str | None = None,
    values_b: Sequence[float] | Tensor | None = None,
    members: int | None = None,
    steps: int | None = None,
    constants: Constants | None = None,
) -> pd.DataFrame:
    """Basin share over a grid of one or two factors (the others nominal, via ``world.at``).

    Each cell is one initial state given to every member. ``label`` is the cell's majority
    label over members (1/0 goal in a world with a goal, else the basin) and ``share`` the
    share of members with label 1 (goal) or with the cell's majority label (no goal).

    Returns:
        One row per cell, ``a`` varying slowest: ``a, b, share, label`` (``b`` NaN for a
        one-factor map).

    Raises:
        UserError: the world has no ``at`` (its factors cannot be set one by one), or an
            unknown factor.
    """
    if world.at is None:
        raise UserError(
            f"world '{world.name}' cannot set its factors one by one (no `at`); a basin map "
            "needs it"
        )
    if (factor_b is None) != (values_b is None):
        raise UserError("give both factor_b and values_b for a two-factor map, or neither")
    a = _grid_values(world, factor_a, values_a)
    b = (
        None
        if factor_b is None
        else _grid_values(world, factor_b, [] if values_b is None else values_b)
    )
    if b is not None and factor_b == factor_a:
        raise UserError(f"give two different factors for a basin map, not {factor_a!r} twice")
    grid_a, grid_b = (a, None) if b is None else torch.meshgrid(a, b, indexing="ij")
    values = {factor_a: grid_a.reshape(-1)}
    if grid_b is not None:
        values[factor_b] = grid_b.reshape(-1)
    x0 = world.at(values)
    labels = _as_labels(
        rollout_labels(
            world, policy, initial_batch(x0, _members(policy, members)), steps, constants
        )
    )
    goal = world.goal is not None
    cell_label = np.array([_majority(labels[:, j]) for j in range(labels.shape[1])])
    counted = np.ones_like(cell_label) if goal else cell_label
    share = (labels == counted[None, :]).mean(0)
    return pd.DataFrame(
        {
            "a": values[factor_a].numpy(),
            "b": np.full(len(share), np.nan) if grid_b is None else values[factor_b].numpy(),
            "share": share,
            "label": cell_label,
        }
    )


def _pair_agreement(onehot: np.ndarray, w_rows: np.ndarray, w_cols: np.ndarray) -> float:
    """Rate at which two distinct rows agree within a column, columns weighted by ``w_cols``.

    ``onehot [r, c, K]``; a row drawn ``w`` times enters with all its copies, and pairs of a
    row with its own copy are left out (they agree by definition): per column, agreeing
    pairs ``sum_K n_K^2 - sum_r w_r^2`` over all pairs ``W^2 - sum_r w_r^2``.
    """
    n = np.einsum("r,rck->ck", w_rows, onehot)  # [c, K] weighted counts per column
    total = w_rows.sum() ** 2 - (w_rows**2).sum()
    if total <= 0:
        return np.nan
    per_column = ((n**2).sum(1) - (w_rows**2).sum()) / total
    return float((w_cols * per_column).sum() / w_cols.sum())


def basin_agreement(
    labels: Tensor | np.ndarray, draws: int = 500, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Do members agree on *which* basin? Pair agreement across members vs across states.

    * ``members``: the probability that two distinct members land in the same basin from
      the same initial state (mean over states of the share of agreeing member pairs).
    * ``states``: the probability that one member lands in the same basin from two
      distinct initial states (mean over members).
    * ``chance``: the agreement of two independent draws from the pooled label shares,
      ``sum_K p_K^2`` (what both would be if basins were assigned at random).

    ``members`` well above ``states``: the initial state decides the basin and the members
    agree on it; ``members`` near ``chance``: the members, not the state, decide.

    Intervals: two-way bootstrap (members and initial states resampled independently,
    copies of one member or state never paired with each other); draws where fewer than
    two distinct members (states) were picked are skipped.

    Returns:
        Two rows, ``between`` = ``members`` / ``states``: ``rate, low, high, chance``.
    """
    array = _as_labels(labels)
    m, s = array.shape
    if m < 2 or s < 2:
        raise UserError(f"agreement needs at least 2 members and 2 initial states, got {m} x {s}")
    values, codes = np.unique(array, return_inverse=True)
    onehot = np.eye(len(values))[codes.reshape(m, s)]  # [m, s, K]
    chance = float(((np.bincount(codes.ravel()) / codes.size) ** 2).sum())
    flipped = onehot.transpose(1, 0, 2)
    rates = {
        "members": _pair_agreement(onehot, np.ones(m), np.ones(s)),
        "states": _pair_agreement(flipped, np.ones(s), np.ones(m)),
    }
    rng = numpy_generator("world-basin-agreement", seed)
    boot = np.empty((draws, 2))
    for d in range(draws):
        wm = np.bincount(rng.integers(0, m, m), minlength=m).astype(np.float64)
        ws = np.bincount(rng.integers(0, s, s), minlength=s).astype(np.float64)
        boot[d] = _pair_agreement(onehot, wm, ws), _pair_agreement(flipped, ws, wm)
    q = [(1 - level) / 2, (1 + level) / 2]
    rows = []
    for k, between in enumerate(rates):
        finite = boot[np.isfinite(boot[:, k]), k]
        low, high = np.quantile(finite, q) if len(finite) else (np.nan, np.nan)
        rows.append(
            {
                "between": between,
                "rate": rates[between],
                "low": float(low),
                "high": float(high),
                "chance": chance,
            }
        )
    return pd.DataFrame(rows)
