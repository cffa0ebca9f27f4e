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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attractor.config import TRAINER_FACTORS, PlanConfig, TrainerConfig
from attractor.plan.designs import check_values, show_value, sobol_problem, varied_columns

__all__ = ["COLUMNS", "Plan", "PlanRow", "build_plan", "describe_plan", "sobol_problem"]


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
            for name in (
                "label_noise",
                "init_scale",
                "init_noise",
                "lr",
                "momentum",
                "weight_decay",
            ):
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
    "member": "int64",
    "init_seed": "int64",
    "data_seed": "int64",
    "noise_seed": "int64",
    "bootstrap": "Int64",
    "holdout_group": "Int64",
    "label_noise": "float64",
    "init_scale": "float64",
    "init_noise": "float64",
    "lr": "float64",
    "momentum": "float64",
    "weight_decay": "float64",
    "batch_size": "int64",
    "optimizer": "string",
}


def build_plan(
    plan: PlanConfig, trainer: TrainerConfig, group_ids: list[int] | None = None
) -> Plan:
    """The plan table a config describes; same config -> same table (semantics in the module docs).

    Args:
        plan: the ``[plan]`` section.
        trainer: the ``[trainer]`` section; trainer factors that do not vary take its values.
        group_ids: the task's groups of training examples, the default levels of ``holdout_group``.

    Raises:
        UserError: a bad level or range, a factor that varies with nothing to vary over, or a
            member count the design cannot fill (the message names the counts that work).
    """
    check_values(plan, group_ids)
    columns = varied_columns(plan, group_ids)
    defaults = asdict(PlanRow(member=0)) | {
        name: getattr(trainer, name) for name in TRAINER_FACTORS
    }
    data: dict[str, Any] = {"member": np.arange(plan.members)}
    for name in COLUMNS[1:]:
        data[name] = columns[name] if name in columns else [defaults[name]] * plan.members
    return Plan(pd.DataFrame(data, columns=list(COLUMNS)).astype(_DTYPES))


def describe_plan(plan: Plan) -> str:
    """A compact summary for ``attractor plan CONFIG``: what varies, what is fixed, the table."""
    table = plan.table
    counts = {name: int(table[name].nunique(dropna=False)) for name in COLUMNS[1:]}
    varying = [name for name, count in counts.items() if count > 1]
    lines = [f"{len(plan)} members, plan hash {plan.hash()}"]
    lines.append(
        "varies: " + (", ".join(f"{n} ({counts[n]} values)" for n in varying) or "nothing")
    )
    if len(plan):
        fixed = [n for n in COLUMNS[1:] if n not in varying]
        lines.append("fixed: " + ", ".join(f"{n}={show_value(table[n].iloc[0])}" for n in fixed))
    shown = table[["member", *varying]] if varying else table
    lines.append(shown.to_string(index=False, max_rows=20))
    return "\n".join(lines)
