"""Settings of trainer2: its search space and the initial conditions it is started from.

A trainer2 config is an ordinary attractor config plus one ``[trainer2]`` table (and its
``[trainer2.search]`` sub-table). ``[task]`` says what is learned, ``[trainer]`` gives
every trainer setting the search does not choose (length, schedule, Nesterov, ...) and
the value of every hyperparameter the search space leaves fixed; ``[run]`` sets the
strategy and evaluation batch size; ``[plan]`` is not used (trainer2 builds its own rows)::

    [trainer2]
    trials = 12                 # trials per study
    sampler_seeds = 4           # initial condition 1: the sampler's seed
    validation_bootstraps = 2   # initial condition 2: resample of the validation split
    holdout_groups = [0, 1]     # initial condition 3: training group left out of the trials

    [trainer2.search]
    lr = [0.001, 1.0]           # log-uniform
    momentum = [0.0, 0.99]
    optimizers = ["sgd"]
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attractor.config import Config, OptimizerName, TrainerConfig, parse_config, read_toml
from attractor.errors import UserError

OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _range(
    name: str, value: tuple[float, float], positive: bool = False, below_one: bool = False
) -> tuple[float, float]:
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(
            f"range of {name!r} must be [low, high] with low < high, got [{low:g}, {high:g}]"
        )
    if positive and low <= 0:
        raise ValueError(
            f"range of {name!r} is searched log-uniformly, so low must be > 0, got [{low:g}, "
            f"{high:g}]"
        )
    if below_one and not (0 <= low and high < 1):
        raise ValueError(f"range of {name!r} must lie in [0, 1), got [{low:g}, {high:g}]")
    return low, high


class SearchSpace(_Strict):
    """``[trainer2.search]``: which trainer hyperparameters trainer2 chooses, and from where.

    A hyperparameter left at ``None`` is not searched: it keeps its ``[trainer]`` value.
    """

    lr: tuple[float, float] = Field(
        (1e-3, 1.0), description="[low, high] of the learning rate, searched log-uniformly."
    )
    momentum: tuple[float, float] | None = Field(
        (0.0, 0.99),
        description="[low, high] of momentum (Adam: beta1), uniform; None keeps [trainer].",
    )
    weight_decay: tuple[float, float] | None = Field(
        None, description="[low, high] of weight decay, log-uniform; None keeps [trainer]."
    )
    weight_decay_zero: bool = Field(
        True,
        description="With a weight_decay range: also offer weight decay 0 (a yes/no choice first).",
    )
    batch_sizes: list[int] | None = Field(
        None, description="Batch sizes to choose from; None keeps [trainer]."
    )
    optimizers: list[str] | None = Field(
        None,
        description="Optimizers to choose from (sgd, adam, adamw, cone); None keeps [trainer].",
    )

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _range("lr", value, positive=True)

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else _range("momentum", value, below_one=True)

    @field_validator("weight_decay")
    @classmethod
    def _weight_decay(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else _range("weight_decay", value, positive=True)

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            not value or any(b < 1 for b in value) or len(set(value)) != len(value)
        ):
            raise ValueError(f"batch_sizes must be distinct integers >= 1, got {value}")
        return value

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = [o for o in value if o not in OPTIMIZERS]
        if unknown or not value or len(set(value)) != len(value):
            what = (
                f"unknown optimizer {unknown[0]!r}"
                if unknown
                else f"optimizers must be distinct and non-empty, got {value}"
            )
            raise ValueError(f"{what}; optimizers are: {', '.join(OPTIMIZERS)}")
        return value


class Trainer2Settings(_Strict):
    """``[trainer2]``: the study (trials, sampler) and its initial conditions.

    Studies are the crossing ``sampler_seed x validation_bootstrap x holdout_group``:
    ``sampler_seeds * max(1, validation_bootstraps) * max(1, len(holdout_groups))`` of them.
    """

    trials: int = Field(12, ge=1, description="Trials (trainers tried) per study.")
    sampler: Literal["tpe", "random"] = Field(
        "tpe", description="tpe (Bergstra et al. 2011) or random search."
    )
    startup_trials: int = Field(
        4, ge=1, description="TPE: random trials before the density model takes over."
    )
    trial_members: int = Field(
        2, ge=1, description="Seeds (init + data order) each trial's score averages over."
    )
    objective: Literal["accuracy", "loss"] = Field(
        "accuracy", description="Validation score a study optimizes: accuracy (max) or loss (min)."
    )
    sampler_seeds: int = Field(
        4, ge=1, description="Initial condition: studies with sampler seeds 0 .. n-1."
    )
    validation_bootstraps: int = Field(
        2,
        ge=0,
        description="Initial condition: bootstrap resamples 0 .. n-1 of the validation split that "
        "score trials (0: the split as it is).",
    )
    holdout_groups: list[int] = Field(
        default_factory=list,
        description="Initial condition: training groups left out of the trials, one per level ([]: "
        "none).",
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the training split carved off (seeded) as the validation split.",
    )
    split_seed: int = Field(
        0, ge=0, description="Seed of the validation split (fixed across studies)."
    )
    final_members: int = Field(
        4,
        ge=1,
        description="Members of the ensemble trained for each returned trainer (same seeds for "
        "every trainer).",
    )
    lockstep: bool = Field(
        True,
        description="Advance all studies together (round r trains every study's r-th trial as one "
        "ensemble).",
    )
    basin_threshold: float | None = Field(
        None,
        gt=0,
        description="JS (nats) at which two returned trainers' ensembles are in different basins; "
        "None: silhouette rule.",
    )
    draws: int = Field(200, ge=0, description="Bootstrap draws for intervals (0: none).")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads while trainer2 runs (None: leave torch's setting); 1 "
        "is fastest for small models on a busy CPU.",
    )
    search: SearchSpace = Field(
        default_factory=SearchSpace, description="The search space ([trainer2.search])."
    )

    @field_validator("holdout_groups")
    @classmethod
    def _groups(cls, value: list[int]) -> list[int]:
        if any(g < 0 for g in value) or len(set(value)) != len(value):
            raise ValueError(f"holdout_groups must be distinct non-negative group ids, got {value}")
        return value

    @property
    def seeds(self) -> list[int]:
        return list(range(self.sampler_seeds))

    @property
    def bootstraps(self) -> list[int | None]:
        return list(range(self.validation_bootstraps)) or [None]

    @property
    def groups(self) -> list[int | None]:
        return list(self.holdout_groups) or [None]

    @property
    def n_studies(self) -> int:
        return len(self.seeds) * len(self.bootstraps) * len(self.groups)

    @property
    def rounds(self) -> int:
        """Training rounds of the search: ``trials`` in lockstep, ``trials * n_studies``
        otherwise.
        """
        return self.trials * (1 if self.lockstep else self.n_studies)

    def updated(self, **changes: Any) -> Trainer2Settings:
        """A validated copy with ``changes`` (e.g. command-line overrides); bad values raise
        :class:`UserError`.
        """
        try:
            return Trainer2Settings.model_validate(self.model_dump() | changes)
        except ValidationError as exc:
            raise UserError(_format(exc, "trainer2")) from None

    def check(self, group_ids: list[int]) -> None:
        """Refuse settings this config's task cannot serve, with one line."""
        missing = [g for g in self.holdout_groups if g not in group_ids]
        if missing:
            raise UserError(
                f"trainer2.holdout_groups names group {missing[0]}, but the task defines groups "
                f"{group_ids or 'none'}"
            )


def fixed_trainer(trainer: TrainerConfig) -> dict[str, Any]:
    """The ``[trainer]`` values of the hyperparameters a study may choose (its defaults)."""
    return {
        name: getattr(trainer, name)
        for name in ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
    }


def table_error(
    exc: ValidationError,
    source: str,
    table: str,
    model: type[BaseModel],
    nested: dict[str, type[BaseModel]],
) -> str:
    """One line: the first bad key under ``[table]`` (of ``model``, or of ``nested[sub]`` under
    ``[table.sub]``), what is wrong and what is expected.
    """
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    path = ".".join([table, *loc])
    if error["type"] == "extra_forbidden":
        owner = nested.get(loc[0], model) if len(loc) > 1 else model
        keys = list(owner.model_fields)
        close = difflib.get_close_matches(loc[-1], keys, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{source}: unknown key '{path}'; {hint}keys: {', '.join(keys)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: invalid value at '{path}': {message}"


def split_table(data: dict[str, Any], table: str, source: str) -> tuple[Config, dict[str, Any]]:
    """A config mapping as the ordinary :class:`Config` and its raw ``[table]``."""
    data = dict(data)
    raw = data.pop(table, {})
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{table}' must be a table ([{table}] followed by its keys)")
    return parse_config(data, source), raw


def _format(exc: ValidationError, source: str) -> str:
    return table_error(exc, source, "trainer2", Trainer2Settings, {"search": SearchSpace})


def parse_trainer2(data: dict[str, Any], source: str = "config") -> tuple[Config, Trainer2Settings]:
    """Split a config mapping into the ordinary :class:`Config` and its ``[trainer2]`` settings."""
    config, raw = split_table(data, "trainer2", source)
    try:
        settings = Trainer2Settings.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format(exc, source)) from None
    return config, settings


def load_trainer2(path: str | Path) -> tuple[Config, Trainer2Settings]:
    """Read a TOML file with a ``[trainer2]`` table (see the module docstring)."""
    data = read_toml(path, "examples/trainer2.toml")
    return parse_trainer2(data, source=str(path))
