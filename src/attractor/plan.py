"""Plans: one row per ensemble member, every factor it is perturbed by made explicit.

A factor *varies* if it is named in ``[plan].vary``, ``[plan.levels]`` or ``[plan.ranges]``;
every other factor takes the ``[trainer]`` value (lr, momentum, weight_decay, batch_size,
optimizer) or its :class:`PlanRow` default. How a varied factor gets its values:

* seeds (``init_seed``, ``data_seed``, ``noise_seed``) and ``bootstrap`` without levels:
  a distinct draw per row from ``[0, 2**31)``, without replacement (never ``None``);
* ``holdout_group``: cycles through its levels, else the task's ``group_ids``
  (crossed like any other levelled factor in factorial / grid designs);
* factors with levels: ``random`` draws uniformly from them, ``factorial`` / ``grid``
  cross them; factors with ranges: ``random`` draws uniformly (lr log-uniformly),
  ``grid`` takes ``grid_points`` evenly spaced levels (lr log-spaced), ``sobol``
  takes Saltelli's sample (lr uniform in log10).

Row order. ``factorial`` / ``grid``: cells are the ``itertools.product`` of the crossed
factors (``[plan.levels]`` keys in order, then ``[plan.ranges]`` keys, then
``holdout_group`` if its levels come from the task), last factor fastest; rows are
**replicate-major**: row ``i`` is cell ``i % cells`` of replicate ``i // cells``, so every
prefix of ``cells`` rows is one complete crossing. ``sobol``: exactly SALib's Saltelli
order (``calc_second_order=False``; blocks of ``D + 2`` rows, A, AB_1..AB_D, B), which
``sensitivity`` relies on.

All randomness comes from :func:`attractor.seeds.numpy_generator` keyed by the factor and
``[plan].seed`` (the Sobol' scrambling takes ``[plan].seed`` directly), so the same config
gives the same table, and adding a varied factor leaves the others' draws unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from attractor.config import (
    CONTINUOUS_FACTORS,
    OPTIONAL_SEED_FACTORS,
    SEED_FACTORS,
    TRAINER_FACTORS,
    OptimizerName,
    PlanConfig,
    TrainerConfig,
)
from attractor.errors import UserError
from attractor.seeds import numpy_generator


@dataclass(frozen=True)
class PlanRow:
    """Everything that distinguishes one member from another.

    Seeds are independent streams: ``init_seed`` (initial weights), ``data_seed``
    (minibatch order), ``noise_seed`` (label noise and init noise draws). ``bootstrap``
    is ``None`` (train on the split itself) or the seed of a with-replacement resample;
    ``holdout_group`` is ``None`` or the id of a group of training examples left out.
    """

    member: int
    init_seed: int = 0
    data_seed: int = 0
    noise_seed: int = 0
    bootstrap: int | None = None
    holdout_group: int | None = None
    label_noise: float = 0.0
    init_scale: float = 1.0
    init_noise: float = 0.0
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: str = "sgd"


COLUMNS = tuple(f.name for f in fields(PlanRow))


class Plan:
    """A table of :class:`PlanRow` s (a pandas DataFrame with one column per factor)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table.reset_index(drop=True)[list(COLUMNS)]

    @classmethod
    def from_rows(cls, rows: list[PlanRow]) -> Plan:
        return cls(pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS)).astype(_DTYPES))

    def rows(self) -> list[PlanRow]:
        out = []
        for record in self.table.to_dict("records"):
            values = {k: (None if pd.isna(v) else v) for k, v in record.items()}
            for name in ("member", "init_seed", "data_seed", "noise_seed", "batch_size"):
                values[name] = int(values[name])
            for name in ("bootstrap", "holdout_group"):
                values[name] = None if values[name] is None else int(values[name])
            for name in ("label_noise", "init_scale", "init_noise", "lr", "momentum", "weight_decay"):
                values[name] = float(values[name])
            values["optimizer"] = str(values["optimizer"])
            out.append(PlanRow(**values))
        return out

    def __len__(self) -> int:
        return len(self.table)

    def hash(self) -> str:
        """Content hash of the table (values and column order), stable across platforms."""
        canonical = self.table.to_csv(index=False, float_format="%.17g")
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_parquet(self, path: str | Path) -> None:
        self.table.to_parquet(path, index=False)

    @classmethod
    def from_parquet(cls, path: str | Path) -> Plan:
        return cls(pd.read_parquet(path).astype(_DTYPES))


_DTYPES = {
    "member": "int64", "init_seed": "int64", "data_seed": "int64", "noise_seed": "int64",
    "bootstrap": "Int64", "holdout_group": "Int64", "label_noise": "float64",
    "init_scale": "float64", "init_noise": "float64", "lr": "float64", "momentum": "float64",
    "weight_decay": "float64", "batch_size": "int64", "optimizer": "string",
}


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


def build_plan(plan: PlanConfig, trainer: TrainerConfig, group_ids: list[int] | None = None) -> Plan:
    """The plan table a config describes; same config -> same table (semantics in the module docs).

    Args:
        plan: the ``[plan]`` section.
        trainer: the ``[trainer]`` section; trainer factors that do not vary take its values.
        group_ids: the task's groups of training examples, the default levels of ``holdout_group``.

    Raises:
        UserError: a bad level or range, a factor that varies with nothing to vary over, or a
            member count the design cannot fill (the message names the counts that work).
    """
    _check_values(plan, group_ids)
    columns = _DESIGNS[plan.design](plan, _sources(plan, group_ids))
    defaults = asdict(PlanRow(member=0)) | {name: getattr(trainer, name) for name in TRAINER_FACTORS}
    data: dict[str, Any] = {"member": np.arange(plan.members)}
    for name in COLUMNS[1:]:
        data[name] = columns[name] if name in columns else [defaults[name]] * plan.members
    return Plan(pd.DataFrame(data, columns=list(COLUMNS)).astype(_DTYPES))


def sobol_problem(plan: PlanConfig) -> dict[str, Any]:
    """The SALib problem of a sobol plan: ranged factors in ``[plan.ranges]`` order, lr as log10(lr)."""
    if not plan.ranges:
        raise UserError("the sobol design needs at least one [plan.ranges] entry (e.g. lr = [0.01, 0.2])")
    bounds = []
    for name, (low, high) in plan.ranges.items():
        if not low < high:
            raise UserError(f"range of {name!r} is empty ([{low}, {high}]); the sobol design needs low < high")
        bounds.append([math.log10(low), math.log10(high)] if name == "lr" else [float(low), float(high)])
    return {"num_vars": len(bounds), "names": list(plan.ranges), "bounds": bounds}


def describe_plan(plan: Plan) -> str:
    """A compact summary for ``attractor plan CONFIG``: what varies, what is fixed, the table."""
    table = plan.table
    counts = {name: int(table[name].nunique(dropna=False)) for name in COLUMNS[1:]}
    varying = [name for name, count in counts.items() if count > 1]
    lines = [f"{len(plan)} members, plan hash {plan.hash()}"]
    lines.append("varies: " + (", ".join(f"{n} ({counts[n]} values)" for n in varying) or "nothing"))
    if len(plan):
        fixed = [n for n in COLUMNS[1:] if n not in varying]
        lines.append("fixed: " + ", ".join(f"{n}={_show(table[n].iloc[0])}" for n in fixed))
    shown = table[["member", *varying]] if varying else table
    lines.append(shown.to_string(index=False, max_rows=20))
    return "\n".join(lines)


# ---- validation -------------------------------------------------------------------------


def _check_values(plan: PlanConfig, group_ids: list[int] | None) -> None:
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
                defined = f"defines groups {_brief(group_ids)}" if group_ids else "defines no groups"
                raise UserError(f"levels of 'holdout_group' name group {unknown[0]}, but the task {defined}")
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
            raise UserError(f"factor {name!r} has both [plan.levels] and [plan.ranges] entries; keep one")
        if name == "holdout_group":
            groups = plan.levels.get(name) or group_ids
            if not groups:
                raise UserError(
                    "factor 'holdout_group' varies but the task defines no groups; "
                    "remove it from [plan].vary or use a task with groups"
                )
            out[name] = ("groups", [int(g) for g in groups])
        elif name in plan.levels:
            cast = str if name == "optimizer" else int if name in _INT_FACTORS + ("batch_size",) else float
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
    axes = {name: payload for name, (kind, payload) in sources.items() if kind in ("levels", "groups")}
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
            f"but members = {members} is not a multiple of {n}; use members = {' or '.join(map(str, counts))}"
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


def _show(value: Any) -> str:
    return "None" if pd.isna(value) else str(value)
