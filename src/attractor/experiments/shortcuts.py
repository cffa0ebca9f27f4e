"""Shortcuts and path dependence: one task, several trainers, the same seeds (issue 6).

Each trainer variant (say SGD, Adam, cone descent, SGD with spectral decoupling) trains
``seeds`` members that differ in init and data order, with the *same* seeds in every
variant, in its own run directory ``OUT/runs/<label>`` (an ordinary run directory,
resumed when the experiment runs again), with ``run.track_path`` on.
Read off every member at each snapshot (:mod:`attractor.measure.shortcuts`):

* **shortcut reliance**: accuracy on the task's ``shortcut_agree`` probe (test inputs whose
  shortcut feature is the true label) minus accuracy on ``shortcut_random`` (the shortcut
  drawn independently of the label). 0 means the shortcut is ignored; near the agree
  accuracy minus chance means the prediction follows it. Only for tasks with these probes
  (``spurious-digits``; ``modular-addition`` with ``shortcut = true``);
* **distance from init** ``|x_T - x_0|`` and **path length** ``sum_t |x_t - x_{t-1}|`` over
  all parameters, every step counted (not only snapshots); their ratio is the path's
  straightness (1 = a straight line from init);
* test accuracy and training loss, so trainers are compared knowing how far each got;
* **seed spread** (per variant): mean pairwise Jensen-Shannon divergence (nats) between the
  members' test predictions.

Intervals are 95 % multi-bootstrap intervals (members and, for accuracies, test examples
resampled); diverged members are left out and counted. The result (kind ``shortcuts``) is
``OUT/shortcuts.json``, ``OUT/shortcuts.parquet`` (the members) and
``OUT/shortcuts.{summary,curves}.parquet``.

References:
    Geirhos et al., "Shortcut learning in deep neural networks", Nature MI 2020;
    Pezeshki et al., "Gradient Starvation: A Learning Proclivity in Neural Networks",
    NeurIPS 2021 (spectral decoupling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from attractor.config import Config, parse_config
from attractor.errors import UserError
from attractor.experiments import Experiment, run_experiment
from attractor.measure.shortcuts import variant_tables
from attractor.runs.progress import Stages
from attractor.runs.results import Result, strict_json
from attractor.runs.store import RunStore

#: ``label:key=value,...`` trainer variants used when none are given: the issue's four.
DEFAULT_VARIANTS = (
    "sgd:optimizer=sgd",
    "adam:optimizer=adam,lr=0.001",
    "cone:optimizer=cone,cone_angle=0.6",
    "sgd+sd:optimizer=sgd,logit_penalty=0.05",
)
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True, eq=False)
class ShortcutProbe:
    """Trainer variants compared on one task.

    Attributes:
        variants: label -> trainer overrides, in the order given.
        members: one row per (variant, member) at the final snapshot: ``variant, member``
            and the columns named in the module docstring (``shortcut_*`` NaN without probes).
        summary: one row per variant: ``members``, ``diverged``, and for each measure its
            mean with ``_low`` / ``_high`` 95 % interval, plus ``seed_spread_js``.
        curves: one row per (variant, step): means over members of ``test_accuracy``,
            ``init_distance``, ``path_length`` and ``shortcut_reliance``.
        has_shortcut: whether the task has the shortcut probes.
        out: the experiment directory (variant runs in ``out/runs/<label>``).
    """

    kind: ClassVar[str] = "shortcuts"
    schema: ClassVar[int] = 1

    variants: dict[str, dict[str, Any]]
    members: pd.DataFrame
    summary: pd.DataFrame
    curves: pd.DataFrame
    has_shortcut: bool
    out: Path

    @property
    def name(self) -> str:
        """The file stem: ``shortcuts``."""
        return "shortcuts"

    def to_json(self) -> dict[str, Any]:
        """Everything, NaN as null (the tables are also written as Parquet)."""
        return strict_json(
            {
                "variants": self.variants,
                "has_shortcut": self.has_shortcut,
                "out": str(self.out),
                "summary": self.summary,
                "members": self.members,
                "curves": self.curves,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """Members at the final snapshot (main table), the per-variant summary and the curves."""
        return {"": self.members, "summary": self.summary, "curves": self.curves}


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"label:key=value,key=value"`` -> ``(label, {key: value})``; values become bool, int,
    float or str.
    """
    label, _, rest = text.partition(":")
    label = label.strip()
    if not _LABEL.match(label):
        raise UserError(
            f"trainer variant '{text}' needs a label of letters, digits, '_', '.', '+' or '-' "
            "before ':', "
            "like 'adam:optimizer=adam,lr=0.001'"
        )
    overrides = {}
    for item in filter(str.strip, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(
                f"trainer variant '{text}': '{item}' is not key=value (keys are [trainer] keys, "
                "e.g. lr=0.01)"
            )
        overrides[key.strip()] = _value(value)
    return label, overrides


def variant_config(config: Config, overrides: dict[str, Any], seeds: int, label: str) -> Config:
    """``config`` with the trainer overrides, ``seeds`` members varying init and data order,
    paths tracked.
    """
    data = config.resolved()
    data["trainer"].update(overrides)
    data["plan"] = {"members": seeds, "vary": ["init_seed", "data_seed"], "seed": config.plan.seed}
    data["run"]["track_path"] = True
    return parse_config(data, source=f"trainer variant '{label}'")


class ShortcutsSettings(BaseModel):
    """What ``attractor shortcuts`` runs: the base config, the trainer variants, the seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(
        description="Task, trainer defaults (each variant overrides some keys) and run."
    )
    variants: list[str] = Field(
        list(DEFAULT_VARIANTS), description="Trainer variants 'label:key=value,...'."
    )
    seeds: int = Field(
        8, description="Members per variant (at least 2; the same seeds in every variant)."
    )
    draws: int = Field(500, ge=1, description="Bootstrap draws of the intervals.")

    @model_validator(mode="after")
    def _variants(self) -> ShortcutsSettings:
        # Refused before the experiment directory exists, each with one line.
        if self.seeds < 2:
            raise UserError(
                f"seeds must be at least 2 (the seed spread needs pairs), got {self.seeds}"
            )
        parsed = dict(parse_variant(v) for v in self.variants)
        if len(parsed) != len(self.variants):
            raise UserError("trainer variant labels must be distinct")
        for label, overrides in parsed.items():
            variant_config(self.config, overrides, self.seeds, label)
        return self


def run(settings: ShortcutsSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Train every variant in ``store.root/runs/<label>`` with the same seeds and compare them.

    ``progress``: a line as each variant begins, its training's own bar after it.
    """
    from attractor.runs.launch import train
    from attractor.tasks import build_task

    config = settings.config
    parsed = dict(parse_variant(v) for v in settings.variants)
    has_shortcut = {"shortcut_agree", "shortcut_random"} <= set(build_task(config.task).probes)
    rows, summaries, curves = [], [], []
    with Stages("shortcuts", len(parsed), progress) as stages:
        for label, overrides in parsed.items():
            stages.begin(f"variant {label!r}: training and measuring {settings.seeds} members")
            variant = variant_config(config, overrides, settings.seeds, label)
            ens = train(variant, store.root / "runs" / label, progress=progress)
            members, summary, curve = variant_tables(
                label, ens, has_shortcut, settings.draws, config.plan.seed
            )
            rows.append(members)
            summaries.append(summary)
            curves.append(curve)
    return [
        ShortcutProbe(
            parsed,
            pd.concat(rows, ignore_index=True),
            pd.DataFrame(summaries),
            pd.concat(curves, ignore_index=True),
            has_shortcut,
            store.root,
        )
    ]


def shortcut_probe(
    config: Config,
    variants: list[str] | None = None,
    seeds: int = 8,
    out: str | Path = "runs/shortcuts",
    draws: int = 500,
    force: bool = False,
    progress: bool = False,
) -> ShortcutProbe:
    """Run the ``shortcuts`` experiment in directory ``out``; its result.

    Args:
        config: task, trainer defaults (each variant overrides some keys) and run settings;
            its plan is replaced by ``seeds`` members varying ``init_seed`` and ``data_seed``.
        variants: ``label:key=value,...`` strings (:func:`parse_variant`); default
            :data:`DEFAULT_VARIANTS`.
        seeds: members per variant.
        out: the experiment directory (one run directory per variant under ``out/runs``).
        draws: bootstrap draws of the intervals.
        force: replace a directory that holds another experiment or settings.
        progress: each variant's stage and training on stderr (off: the library is quiet).
    """
    settings = ShortcutsSettings(
        config=config, variants=list(variants or DEFAULT_VARIANTS), seeds=seeds, draws=draws
    )
    _, results = run_experiment("shortcuts", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, ShortcutProbe)
    return result


EXPERIMENT = Experiment(
    name="shortcuts",
    settings=ShortcutsSettings,
    run=run,
    summary="shortcut reliance and path dependence of several trainers with the same seeds",
)

__all__ = [
    "DEFAULT_VARIANTS",
    "EXPERIMENT",
    "ShortcutProbe",
    "ShortcutsSettings",
    "parse_variant",
    "shortcut_probe",
    "variant_config",
]
