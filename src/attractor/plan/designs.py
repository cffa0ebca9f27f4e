"""How each design fills the plan's varied factors (the rules are in :mod:`attractor.plan`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, get_args

import numpy as np
import pandas as pd

from attractor.config import (
    CONTINUOUS_FACTORS,
    OPTIONAL_SEED_FACTORS,
    SEED_FACTORS,
    OptimizerName,
    PlanConfig,
)
from attractor.errors import UserError
from attractor.seeds import numpy_generator

_SEED_SPACE = 2**31
_DRAWN_SEEDS = SEED_FACTORS + OPTIONAL_SEED_FACTORS  # distinct per row unless given levels
_INT_FACTORS = _DRAWN_SEEDS + ("holdout_group",)
_OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
_CONTINUOUS_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "label_noise": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "init_scale": (lambda v: v > 0, "> 0"),
    "init_noise": (lambda v: v >= 0, ">= 0"),
}


# How a varied factor gets its values: ("levels", list), ("range", (low, high)),
# ("seeds", None) = distinct draws, ("groups", list) = holdout groups.
_Sources = dict[str, tuple[str, Any]]


def sobol_problem(plan: PlanConfig) -> dict[str, Any]:
    """The SALib problem of a sobol plan: ranged factors in ``[plan.ranges]`` order, lr as
    log10(lr).
    """
    if not plan.ranges:
        raise UserError(
            "the sobol design needs at least one [plan.ranges] entry (e.g. lr = [0.01, 0.2])"
        )
    bounds = []
    for name, (low, high) in plan.ranges.items():
        if not low < high:
            raise UserError(
                f"range of {name!r} is empty ([{low}, {high}]); the sobol design needs low < high"
            )
        bounds.append(
            [math.log10(low), math.log10(high)] if name == "lr" else [float(low), float(high)]
        )
    return {"num_vars": len(bounds), "names": list(plan.ranges), "bounds": bounds}


# ---- validation -------------------------------------------------------------------------


def check_values(plan: PlanConfig, group_ids: list[int] | None) -> None:
    for name, values in plan.levels.items():
        if not values:
            raise UserError(f"levels of {name!r} are empty; list at least one level")
        for value in values:
            if problem := _value_problem(name, value):
                raise UserError(f"levels of {name!r} {problem}; got {value!r}")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise UserError(f"levels of {name!r} repeat {repeated[0]!r}; list each level once")
        if name == "holdout_group" and group_ids is not None:
            unknown = [g for g in values if g not in group_ids]
            if unknown:
                defined = (
                    f"defines groups {_brief(group_ids)}" if group_ids else "defines no groups"
                )
                raise UserError(
                    f"levels of 'holdout_group' name group {unknown[0]}, but the task {defined}"
                )
    for name, (low, high) in plan.ranges.items():
        if name not in CONTINUOUS_FACTORS:
            raise UserError(f"{name!r} is not continuous; give it [plan.levels] instead of a range")
        for value in (low, high):
            if problem := _value_problem(name, value):
                raise UserError(f"range of {name!r} {problem}; got [{low}, {high}]")


def _value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid value of factor ``name``, or None if it is."""
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if name in _INT_FACTORS:
        return None if is_int and value >= 0 else "must be non-negative integers"
    if name == "batch_size":
        return None if is_int and value >= 1 else "must be integers >= 1"
    if name == "optimizer":
        return None if value in _OPTIMIZERS else f"must be one of {', '.join(_OPTIMIZERS)}"
    rule, text = _CONTINUOUS_RULES[name]
    is_number = is_int or isinstance(value, float | np.floating)
    if is_number and math.isfinite(value) and rule(value):
        return None
    return f"must be numbers {text}"


def _sources(plan: PlanConfig, group_ids: list[int] | None) -> _Sources:
    """Each varied factor and where its values come from, in crossing order."""
    out: _Sources = {}
    for name in dict.fromkeys([*plan.levels, *plan.ranges, *plan.vary]):
        if name in plan.levels and name in plan.ranges:
            raise UserError(
                f"factor {name!r} has both [plan.levels] and [plan.ranges] entries; keep one"
            )
        if name == "holdout_group":
            groups = plan.levels.get(name) or group_ids
            if not groups:
                raise UserError(
                    "factor 'holdout_group' varies but the task defines no groups; "
                    "remove it from [plan].vary or use a task with groups"
                )
            out[name] = ("groups", [int(g) for g in groups])
        elif name in plan.levels:
            cast = (
                str
                if name == "optimizer"
                else int
                if name in _INT_FACTORS + ("batch_size",)
                else float
            )
            out[name] = ("levels", [cast(v) for v in plan.levels[name]])
        elif name in plan.ranges:
            low, high = plan.ranges[name]
            out[name] = ("range", (float(low), float(high)))
        elif name in _DRAWN_SEEDS:
            out[name] = ("seeds", None)
        else:
            if name in ("batch_size", "optimizer") or plan.design == "factorial":
                where = "[plan.levels]"
            elif plan.design == "sobol":
                where = "[plan.ranges]"
            else:
                where = "[plan.ranges] or [plan.levels]"
            raise UserError(f"factor {name!r} varies but has no {where} entry; add one")
    return out


# ---- designs ----------------------------------------------------------------------------


def _random(plan: PlanConfig, sources: _Sources) -> dict[str, Any]:
    out = _drawn_seeds(plan, sources)
    for name, (kind, payload) in sources.items():
        rng = _rng(plan, name)
        if kind == "groups":
            out[name] = _cycle(payload, plan.members)
        elif kind == "levels":
            out[name] = [payload[i] for i in rng.integers(len(payload), size=plan.members)]
        elif kind == "range":
            low, high = payload
            if name == "lr":  # log-uniform: equal mass per decade
                values = np.exp(rng.uniform(math.log(low), math.log(high), plan.members))
            else:
                values = rng.uniform(low, high, plan.members)
            out[name] = np.clip(values, low, high)
    return out


def _factorial(plan: PlanConfig, sources: _Sources) -> dict[str, Any]:
    ranged = [name for name, (kind, _) in sources.items() if kind == "range"]
    if ranged:
        raise UserError(
            f"the factorial design crosses [plan.levels] only, but {ranged[0]!r} has a range; "
            'give it levels, or use design = "grid" to cross evenly spaced points of the range'
        )
    axes = {
        name: payload for name, (kind, payload) in sources.items() if kind in ("levels", "groups")
    }
    return _crossed(plan, sources, axes)


def _grid(plan: PlanConfig, sources: _Sources) -> dict[str, Any]:
    axes: dict[str, list[Any]] = {}
    for name, (kind, payload) in sources.items():
        if kind in ("levels", "groups"):
            axes[name] = payload
        elif kind == "range":
            low, high = payload
            spaced = np.geomspace if name == "lr" else np.linspace
            points = spaced(low, high, plan.grid_points)
            points[0], points[-1] = low, high  # endpoints exactly, whatever the rounding
            axes[name] = [float(p) for p in points]
    return _crossed(plan, sources, axes)


def _crossed(plan: PlanConfig, sources: _Sources, axes: dict[str, list[Any]]) -> dict[str, Any]:
    """Replicate-major rows of the full crossing of ``axes`` (last axis fastest)."""
    cells = list(itertools.product(*axes.values()))
    n, members = len(cells), plan.members
    if members % n:
        shape = " x ".join(str(len(levels)) for levels in axes.values())
        counts = [c for c in ((members // n) * n, (members // n + 1) * n) if c > 0]
        raise UserError(
            f"the {plan.design} design has {n} cells ({shape} levels of {', '.join(axes)}) "
            f"but members = {members} is not a multiple of {n}; use members = "
            f"{' or '.join(map(str, counts))}"
        )
    out = _drawn_seeds(plan, sources)
    for j, name in enumerate(axes):
        out[name] = [cells[i % n][j] for i in range(members)]
    return out


def _sobol(plan: PlanConfig, sources: _Sources) -> dict[str, Any]:
    from SALib.sample import sobol as sobol_sample

    levelled = [name for name, (kind, _) in sources.items() if kind == "levels"]
    if levelled:
        raise UserError(
            f"the sobol design samples [plan.ranges] only, but {levelled[0]!r} has levels; "
            'give it a range, or use design = "grid" or "random"'
        )
    problem = sobol_problem(plan)
    base = _sobol_base(plan.members, problem["num_vars"])
    sample = sobol_sample.sample(problem, base, calc_second_order=False, seed=plan.seed)
    out = _drawn_seeds(plan, sources)
    for j, name in enumerate(problem["names"]):
        values = 10.0 ** sample[:, j] if name == "lr" else sample[:, j]
        out[name] = np.clip(values, *plan.ranges[name])
    for name, (kind, payload) in sources.items():
        if kind == "groups":
            out[name] = _cycle(payload, plan.members)
    return out


def _sobol_base(members: int, d: int) -> int:
    """Saltelli's N for ``members = N * (d + 2)``, N a power of 2 (Sobol' balance needs it)."""
    k = d + 2
    base, rest = divmod(members, k)
    if rest == 0 and base & (base - 1) == 0:
        return base
    low = 1
    while k * low * 2 <= members:
        low *= 2
    use = f"{k}" if members < k else f"{k * low} or {k * low * 2}"
    if rest:
        raise UserError(
            f"the sobol design over {d} ranged factor(s) makes N x (D + 2) = N x {k} rows, but "
            f"members = {members} is not a multiple of {k}; use members = {use} (N a power of 2)"
        )
    raise UserError(
        f"the sobol design needs N = members / {k} to be a power of 2 (Sobol' sequences lose "
        f"their balance otherwise), but members = {members} gives N = {base}; use members = {use}"
    )


_DESIGNS: dict[str, Callable[[PlanConfig, _Sources], dict[str, Any]]] = {
    "random": _random,
    "factorial": _factorial,
    "grid": _grid,
    "sobol": _sobol,
}


# ---- helpers ----------------------------------------------------------------------------


def _rng(plan: PlanConfig, name: str) -> np.random.Generator:
    """One generator per factor, so adding a varied factor leaves the others' draws as they were."""
    return numpy_generator(f"plan.{name}", plan.seed)


def _drawn_seeds(plan: PlanConfig, sources: _Sources) -> dict[str, Any]:
    """Seed factors without levels: distinct per row (sampled without replacement)."""
    return {
        name: _rng(plan, name).choice(_SEED_SPACE, size=plan.members, replace=False)
        for name, (kind, _) in sources.items()
        if kind == "seeds"
    }


def _cycle(values: Sequence[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)]


def _brief(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def show_value(value: Any) -> str:
    return "None" if pd.isna(value) else str(value)


def varied_columns(plan: PlanConfig, group_ids: list[int] | None) -> dict[str, Any]:
    """The values of every varied factor, one list per factor, as ``plan.design`` fills them."""
    return _DESIGNS[plan.design](plan, _sources(plan, group_ids))
