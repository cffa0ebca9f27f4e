"""Settings of ``attractor stabilize``: the search, its space of trainers and the confirmation.

A stabilize config is an ordinary attractor config plus one ``[stabilize]`` table (and its
``[stabilize.search]`` sub-table). ``[task]`` says what is learned; ``[trainer]`` is the
*starting* trainer (every setting the search leaves alone keeps its value, and the
confirmation compares the chosen trainer against it); ``[plan]`` says what the members of
a trial differ in (``vary``: init seed, data order, bootstrap, ...)::

    [stabilize]
    trials = 32          # trials (trainers tried), `parallel` at a time
    parallel = 8         # trials asked together and trained as one ensemble
    members = 8          # members per trial: rows 0..members-1 of [plan]
    confirm_members = 16 # fresh rows of [plan] the search never saw
    spread = "js"        # js | disagreement | accuracy_sd | minority
    tolerance = 0.01     # the chosen trainer's error may exceed the best by this much

    [stabilize.search]
    lr = [0.01, 0.5]
    label_smoothing = [0.0, 0.2]
    sam_rho = [0.01, 0.1]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attractor.config import Config, read_toml
from attractor.errors import UserError
from attractor.stack.settings import OPTIMIZERS, split_table, table_error

Spread = Literal["js", "disagreement", "accuracy_sd", "minority"]
Sampler = Literal["nsga2", "tpe", "random"]

#: The stability interventions the search may switch on, each a ``[trainer]`` option.
INTERVENTIONS = ("label_smoothing", "clip_norm", "sam_rho", "ema_decay", "swa_start")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _range(
    name: str,
    value: tuple[float, float] | None,
    low_bound: float,
    high_bound: float,
    log: bool = False,
) -> tuple[float, float] | None:
    if value is None:
        return None
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"range of {name!r} must be [low, high] with low < high")
    if low < low_bound or high > high_bound or (log and low <= 0):
        lower = "> 0" if log else f">= {low_bound:g}"
        raise ValueError(
            f"range of {name!r} must lie in [{low_bound:g}, {high_bound:g}] with low {lower}, "
            f"got [{low:g}, {high:g}]"
        )
    return float(low), float(high)


class StabilizeSpace(_Strict):
    """``[stabilize.search]``: the trainer settings and interventions the search chooses.

    ``None`` (the default) leaves a setting at its ``[trainer]`` value. Ranges of ``lr``,
    ``weight_decay`` and ``clip_norm`` are searched log-uniformly, the others uniformly.
    ``clip_norm``, ``sam_rho``, ``ema_decay`` and ``swa_start`` are switched on or off by the
    search (a yes/no choice, then the value); ``ema_decay`` and ``swa_start`` together are one
    choice among none, EMA and SWA.
    """

    lr: tuple[float, float] | None = Field(None, description="[low, high] of the learning rate.")
    momentum: tuple[float, float] | None = Field(None, description="[low, high] of momentum.")
    weight_decay: tuple[float, float] | None = Field(
        None, description="[low, high] of weight decay; 0 is offered too (a yes/no choice first)."
    )
    batch_sizes: list[int] | None = Field(None, description="Batch sizes to choose from.")
    optimizers: list[str] | None = Field(None, description="Optimizers to choose from.")
    warmup_fraction: tuple[float, float] | None = Field(
        None, description="[low, high] share of warm-up steps (needs a warm-up schedule)."
    )
    cone_angle: tuple[float, float] | None = Field(
        None, description="[low, high] of cone descent's half-angle (radians; optimizer cone)."
    )
    label_smoothing: tuple[float, float] | None = Field(
        None, description="[low, high] of label smoothing (low may be 0)."
    )
    clip_norm: tuple[float, float] | None = Field(
        None, description="[low, high] of the gradient-clipping norm (or no clipping)."
    )
    sam_rho: tuple[float, float] | None = Field(
        None, description="[low, high] of SAM's rho (or no SAM)."
    )
    ema_decay: tuple[float, float] | None = Field(
        None, description="[low, high] of the EMA decay of weights (or no EMA)."
    )
    swa_start: tuple[float, float] | None = Field(
        None, description="[low, high] share of steps before SWA starts averaging (or no SWA)."
    )

    @field_validator("lr", "weight_decay", "clip_norm", "sam_rho")
    @classmethod
    def _positive(cls, value: tuple[float, float] | None, info: Any) -> tuple[float, float] | None:
        return _range(info.field_name, value, 0.0, math.inf, log=True)

    @field_validator("momentum", "label_smoothing", "ema_decay", "swa_start")
    @classmethod
    def _below_one(cls, value: tuple[float, float] | None, info: Any) -> tuple[float, float] | None:
        checked = _range(info.field_name, value, 0.0, 1.0)
        if checked is not None and checked[1] >= 1:
            raise ValueError(f"range of {info.field_name!r} must stay below 1")
        return checked

    @field_validator("warmup_fraction")
    @classmethod
    def _share(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _range("warmup_fraction", value, 0.0, 1.0)

    @field_validator("cone_angle")
    @classmethod
    def _angle(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        checked = _range("cone_angle", value, 0.0, math.pi / 2)
        if checked is not None and checked[1] >= math.pi / 2:
            raise ValueError("range of 'cone_angle' must stay below pi/2")
        return checked

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
        if value is not None and (
            not value or len(set(value)) != len(value) or any(o not in OPTIMIZERS for o in value)
        ):
            raise ValueError(
                f"optimizers must be distinct names among {', '.join(OPTIMIZERS)}, got {value}"
            )
        return value

    def searched(self) -> list[str]:
        """The settings this space chooses, in declaration order."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


class StabilizeSettings(_Strict):
    """``[stabilize]``: the multi-objective search, the choice and its confirmation."""

    trials: int = Field(32, ge=2, description="Trials (trainers tried) in the search.")
    parallel: int = Field(
        8, ge=1, description="Trials asked at once and trained together as one ensemble."
    )
    sampler: Sampler = Field(
        "nsga2", description="nsga2 (Deb et al. 2002), tpe (multi-objective) or random."
    )
    seed: int = Field(0, ge=0, description="Seed of the sampler.")
    startup_trials: int = Field(
        8, ge=1, description="tpe: random trials before the density model takes over."
    )
    members: int = Field(8, ge=2, description="Members per trial: rows 0 .. members-1 of [plan].")
    confirm_members: int = Field(
        16,
        ge=2,
        description="Members per trainer in the confirmation: the next rows of [plan], seeds "
        "the search never saw.",
    )
    spread: Spread = Field(
        "js",
        description="Spread objective: js (mean pairwise Jensen-Shannon), disagreement (pairwise "
        "churn), accuracy_sd, minority (share of members outside the majority basin).",
    )
    tolerance: float = Field(
        0.01,
        ge=0,
        description="The chosen trainer is the most stable one whose error is at most the best "
        "error + tolerance.",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of the training split the trials are scored on."
    )
    split_seed: int = Field(0, ge=0, description="Seed of the validation split.")
    draws: int = Field(200, ge=0, description="Bootstrap draws for intervals (0: none).")
    level: float = Field(0.95, gt=0, lt=1, description="Coverage of every interval.")
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads while the search runs (None: unchanged)."
    )
    search: StabilizeSpace = Field(
        default_factory=StabilizeSpace, description="The search space ([stabilize.search])."
    )

    @property
    def rounds(self) -> int:
        """Training rounds of the search (the last may hold fewer than ``parallel`` trials)."""
        return math.ceil(self.trials / self.parallel)

    def check(self, config: Config) -> None:
        """Refuse, in one line, settings that cannot run with ``config``."""
        space = self.search
        if not space.searched():
            raise UserError(
                "stabilize.search is empty: give at least one range, e.g. "
                "[stabilize.search] label_smoothing = [0.0, 0.2]"
            )
        clash = [name for name in config.plan.vary if name in space.searched()]
        if clash:
            raise UserError(
                f"[plan] varies {clash[0]!r}, which stabilize.search chooses; remove it from "
                "[plan].vary (the plan says what members differ in, the search what trainers do)"
            )
        if space.warmup_fraction is not None and "warmup" not in config.trainer.schedule:
            raise UserError(
                "stabilize.search.warmup_fraction needs a warm-up schedule: set [trainer] "
                'schedule = "linear-warmup" or "warmup-cosine"'
            )
        optimizers = space.optimizers or [config.trainer.optimizer]
        if space.cone_angle is not None and "cone" not in optimizers:
            raise UserError(
                "stabilize.search.cone_angle is only used by the cone optimizer; add 'cone' to "
                'stabilize.search.optimizers or set [trainer] optimizer = "cone"'
            )
        if config.plan.members < self.members + self.confirm_members:
            raise UserError(
                f"[plan] members = {config.plan.members} but stabilize needs "
                f"{self.members + self.confirm_members} rows ({self.members} for the search, "
                f"{self.confirm_members} to confirm on); set [plan] members = "
                f"{self.members + self.confirm_members}"
            )


def _format(exc: ValidationError, source: str) -> str:
    return table_error(exc, source, "stabilize", StabilizeSettings, {"search": StabilizeSpace})


def parse_stabilize(
    data: dict[str, Any], source: str = "config"
) -> tuple[Config, StabilizeSettings]:
    """Split a config mapping into the ordinary :class:`Config` and its ``[stabilize]``."""
    config, raw = split_table(data, "stabilize", source)
    try:
        settings = StabilizeSettings.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format(exc, source)) from None
    return config, settings


def load_stabilize(path: str | Path) -> tuple[Config, StabilizeSettings]:
    """Read a TOML file with a ``[stabilize]`` table (see the module docstring)."""
    return parse_stabilize(read_toml(path, "examples/stabilize-digits.toml"), source=str(path))


def updated(settings: StabilizeSettings, **changes: Any) -> StabilizeSettings:
    """A validated copy with ``changes`` (command-line overrides); bad values: one line."""
    try:
        return StabilizeSettings.model_validate(settings.model_dump() | changes)
    except ValidationError as exc:
        raise UserError(_format(exc, "command line")) from None
