"""What the user knows about each imported member, as a plan table and a config.

A manifest's columns (CSV) or keys (TOML) besides ``member``, ``path`` and ``step`` are
factors. Those that are plan factors (``init_seed``, ``data_seed``, ``lr``, ...) are
checked like a config's and go into ``plan.parquet``, so ``sensitivity`` and the report
see them; any other (``dataset = "v2"``) is kept in the manifest's ``imported`` record.
A plan factor nobody gave takes the ``[trainer]`` value or the :class:`PlanRow` default,
as in a config's plan; the record lists which factors were given, so a reader can tell
a known value from a filled-in one.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, get_args

from attractor.config import (
    CONTINUOUS_FACTORS,
    FACTORS,
    OPTIONAL_SEED_FACTORS,
    SEED_FACTORS,
    TRAINER_FACTORS,
    Config,
    OptimizerName,
    PlanConfig,
    RunConfig,
    TaskConfig,
    TrainerConfig,
)
from attractor.errors import UserError
from attractor.plan import Plan, PlanRow

_INTS = (*SEED_FACTORS, "batch_size")
_OPTIONAL_INTS = (*OPTIONAL_SEED_FACTORS, "holdout_group")
#: The checks a config's plan levels get (:mod:`attractor.plan.designs`), for values read here.
_RANGES = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "label_noise": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "init_scale": (lambda v: v > 0, "> 0"),
    "init_noise": (lambda v: v >= 0, ">= 0"),
}


def factor_value(name: str, value: Any, where: str) -> Any:
    """Plan factor ``name``'s ``value`` (a string from a CSV, or a TOML value) as the plan
    stores it; one line naming ``where`` it came from otherwise.
    """
    text = value.strip() if isinstance(value, str) else value
    try:
        if name in _OPTIONAL_INTS and text in ("", None, "None", "none", "off"):
            return None
        if name in _INTS or name in _OPTIONAL_INTS:
            number = _integer(text)
            if number < 0 or name == "batch_size" and number < 1:
                raise ValueError("out of range")
            return number
        if name in CONTINUOUS_FACTORS:
            number = float(text)
            check, rule = _RANGES[name]
            if not math.isfinite(number) or not check(number):
                raise UserError(f"{where}: {name} = {value!r} must be {rule}; fix that value")
            return number
        if name == "optimizer" and text in get_args(OptimizerName):
            return str(text)
    except (TypeError, ValueError):
        pass
    kinds = {
        "optimizer": f"one of {', '.join(get_args(OptimizerName))}",
        "batch_size": "a whole number >= 1",
    }
    kind = kinds.get(name, "a whole number >= 0" if name in _INTS else "a whole number or empty")
    raise UserError(f"{where}: {name} = {value!r} is not {kind}; fix that value")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a bool")
    if isinstance(value, int):
        return value
    number = float(value)  # "3" and "3.0" (what a spreadsheet writes) are both 3
    if not number.is_integer():
        raise ValueError("not whole")
    return int(number)


def user_value(value: Any) -> Any:
    """A factor of the user's own (not a plan factor), kept as JSON: numbers where they read
    as numbers, else the text.
    """
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        return number if not isinstance(number, float) or math.isfinite(number) else value
    return value


def split_factors(factors: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(plan factors, the user's own)`` of one member, plan factors checked."""
    plan = {k: factor_value(k, v, where) for k, v in factors.items() if k in FACTORS}
    own = {k: user_value(v) for k, v in factors.items() if k not in FACTORS}
    return plan, own


def build_plan(members: list[dict[str, Any]], trainer: TrainerConfig) -> Plan:
    """One row per member: its given plan factors, the rest from ``trainer`` or the defaults."""
    defaults = asdict(PlanRow(member=0)) | {k: getattr(trainer, k) for k in TRAINER_FACTORS}
    rows = [PlanRow(**{**defaults, **given, "member": i}) for i, given in enumerate(members)]
    return Plan.from_rows(rows)


def crossed(plan: Plan) -> bool:
    """Whether the varying factors that repeat form a balanced crossing (every combination of
    their levels equally often): then ``sensitivity`` may decompose the variance over them.
    """
    table = plan.table
    factors = [f for f in FACTORS if 1 < table[f].nunique(dropna=False) < len(table)]
    if not factors:
        return False
    counts = table.groupby(factors, dropna=False).size()
    cells = math.prod(int(table[f].nunique(dropna=False)) for f in factors)
    return len(counts) == cells and counts.nunique() == 1


def run_config(
    task: TaskConfig, trainer: TrainerConfig, plan: Plan, steps: list[int], strategy: str
) -> Config:
    """The config an imported run records: the task, the trainer as far as it is known, a plan
    section that describes the imported table, and the snapshot steps.
    """
    table = plan.table
    varying = [f for f in FACTORS if table[f].astype(str).nunique() > 1]
    design = "factorial" if crossed(plan) else "random"
    return Config(
        task=task,
        trainer=trainer,
        plan=PlanConfig(members=len(table), design=design, vary=varying),
        run=RunConfig(snapshots=steps, strategy=strategy),  # type: ignore[arg-type]
    )


def known_columns(plan_factors: list[dict[str, Any]]) -> list[str]:
    """The plan factors some member was given, in plan order."""
    given = {k for factors in plan_factors for k in factors}
    return [f for f in FACTORS if f in given]


__all__ = [
    "build_plan",
    "crossed",
    "factor_value",
    "known_columns",
    "run_config",
    "split_factors",
    "user_value",
]
