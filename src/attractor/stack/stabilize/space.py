"""One trial's trainer: asked from an Optuna trial, applied to the ``[trainer]`` it starts from.

Every choice is asked of every trial (an intervention switched off still has its value
asked, and ignored): Optuna's importance measures and samplers then see the same
parameters in every trial, and a trial is one flat row of the trials table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from attractor.config import TrainerConfig
from attractor.plan import PlanRow
from attractor.stack.stabilize.settings import StabilizeSpace

#: Trainer settings a plan row carries (one per member), the rest live in ``[trainer]``.
ROW_FIELDS = ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
#: The applied value of every setting the search may choose: one column each in the table.
KNOBS = (
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "optimizer",
    "warmup_fraction",
    "cone_angle",
    "label_smoothing",
    "clip_norm",
    "sam_rho",
    "ema_decay",
    "swa_start",
)
#: Search-space field -> the knob it sets (every field of :class:`StabilizeSpace` but the
#: plural lists, which set their singular knob).
FIELD_KNOB = {"batch_sizes": "batch_size", "optimizers": "optimizer"}


@dataclass(frozen=True)
class TrialTrainer:
    """A trial's trainer: the ``[trainer]`` its members train with and their row settings."""

    trainer: TrainerConfig

    def rows(self, block: list[PlanRow], first_member: int, chosen: list[str]) -> list[PlanRow]:
        """``block``'s rows (what members differ in) trained by this trainer, renumbered.

        Row settings in ``chosen`` (the search's) replace the block's; the others stay as the
        plan made them (the ``[trainer]`` value, or the plan's own levels where it varies one).
        """
        values = {name: getattr(self.trainer, name) for name in ROW_FIELDS if name in chosen}
        return [
            dataclasses.replace(row, member=first_member + i, **values)
            for i, row in enumerate(block)
        ]

    def knobs(self) -> dict[str, Any]:
        """The applied value of every knob (``clip_norm`` and ``swa_start``: None when off)."""
        return {name: getattr(self.trainer, name) for name in KNOBS}


def suggest(trial: Any, space: StabilizeSpace, start: TrainerConfig) -> TrialTrainer:
    """Ask ``trial`` for every searched setting; the rest keep ``start``'s values."""
    chosen: dict[str, Any] = {}
    for name in ("lr", "momentum", "warmup_fraction", "cone_angle", "label_smoothing"):
        bounds = getattr(space, name)
        if bounds is not None:
            chosen[name] = trial.suggest_float(name, *bounds, log=name == "lr")
    if space.weight_decay is not None:
        # 0 is not on a log scale: a yes/no choice, and the value used when yes.
        use = trial.suggest_categorical("use_weight_decay", [False, True])
        value = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
        chosen["weight_decay"] = value if use else 0.0
    if space.batch_sizes is not None:
        chosen["batch_size"] = int(trial.suggest_categorical("batch_size", space.batch_sizes))
    if space.optimizers is not None:
        chosen["optimizer"] = str(trial.suggest_categorical("optimizer", space.optimizers))
    for name, off in (("clip_norm", None), ("sam_rho", 0.0)):
        bounds = getattr(space, name)
        if bounds is not None:
            use = trial.suggest_categorical(f"use_{name}", [False, True])
            value = trial.suggest_float(name, *bounds, log=True)
            chosen[name] = value if use else off
    chosen |= _average(trial, space)
    # Validated, not copied: the choices must make a trainer [trainer] itself accepts.
    return TrialTrainer(TrainerConfig.model_validate(start.model_dump() | chosen))


def _average(trial: Any, space: StabilizeSpace) -> dict[str, Any]:
    """The weight average: none, EMA or SWA (one at a time, as ``[trainer]`` allows)."""
    kinds = ["none"] + [k for k, r in (("ema", space.ema_decay), ("swa", space.swa_start)) if r]
    if len(kinds) == 1:
        return {}
    kind = trial.suggest_categorical("average", kinds)
    decay = trial.suggest_float("ema_decay", *space.ema_decay) if space.ema_decay else 0.0
    start = trial.suggest_float("swa_start", *space.swa_start) if space.swa_start else None
    return {
        "ema_decay": decay if kind == "ema" else 0.0,
        "swa_start": start if kind == "swa" else None,
    }


def chosen_knobs(space: StabilizeSpace) -> list[str]:
    """The knobs ``space`` chooses (``batch_sizes`` -> ``batch_size``, ...)."""
    return [FIELD_KNOB.get(name, name) for name in space.searched()]
