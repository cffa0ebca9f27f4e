"""Seed advice: which basin is the majority, and how early a member's final basin shows.

An ensemble whose members end in several basins (groups that learned the same function,
:func:`attractor.measure.basins.find_basins` on the final pairwise JS) raises a practical
question: can a user stop the seeds that head for a minority basin early? At every
snapshot step each member's basin is predicted from its predictions *then*: the nearest
basin centroid (mean test-set probabilities of the basin's *other* members at that step,
Euclidean distance), so no member predicts itself. The accuracy of that guess against the
final basins, step by step, with a bootstrap interval over members, says from which step on
a member's fate is readable; its yardstick is chance (always guessing the majority basin).
A member alone in its basin has no other member to form its centroid, so it is always
counted wrong: singletons cannot be foreseen.

    advice = seed_advice(Ensemble.load("runs/digits"))
    advice.majority, advice.table   # step, accuracy, low, high, chance
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.basins import find_basins
from attractor.measure.bootstrap import multibootstrap
from attractor.measure.function import pairwise_js
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import strict_json

#: Accuracy from which a member's final basin counts as readable.
TARGET = 0.9


def predicted_basins(probs: Tensor, labels: np.ndarray) -> np.ndarray:
    """Each member's nearest basin at one step: ``probs [m, n, C]``, final ``labels [m]`` ->
    ``[m]`` predicted labels. Only basins with another member have a centroid, so a member
    alone in its basin is always predicted into another one (counted wrong).
    """
    flat = probs.reshape(len(probs), -1).double()
    out = np.full(len(flat), -1)
    for i in range(len(flat)):
        best, best_distance = -1, np.inf
        for basin in np.unique(labels):
            others = [j for j in np.nonzero(labels == basin)[0] if j != i]
            if not others:
                continue
            distance = float((flat[i] - flat[others].mean(0)).norm())
            if distance < best_distance:
                best, best_distance = int(basin), distance
        out[i] = best
    return out


def prediction_curve(
    snapshots: Mapping[int, Tensor], labels: np.ndarray, draws: int = 500, seed: int = 0
) -> pd.DataFrame:
    """Accuracy of :func:`predicted_basins` at every step of ``snapshots`` (step ->
    ``probs [m, n, C]``) against ``labels``: ``step, accuracy, low, high, chance``.
    """
    chance = float(np.bincount(labels).max() / len(labels))
    rows = []
    for step in sorted(snapshots):
        correct = (predicted_basins(snapshots[step], labels) == labels).astype(np.float64)
        estimate = multibootstrap(correct, np.mean, draws, seed)
        rows.append(
            {
                "step": step,
                "accuracy": estimate.value,
                "low": estimate.low,
                "high": estimate.high,
                "chance": chance,
            }
        )
    return pd.DataFrame(rows)


def readable_from(curve: pd.DataFrame, target: float = TARGET) -> int | None:
    """The first step from which the accuracy stays at or above ``target`` (None: never)."""
    below = curve[curve["accuracy"] < target]
    after = curve if below.empty else curve[curve["step"] > below["step"].max()]
    return None if after.empty else int(after["step"].min())


@dataclass(frozen=True, eq=False)
class SeedAdvice:
    """Majority basin and the early-prediction curve of a run (kind ``seed-advice``).

    Attributes:
        labels: each member's final basin (member order of ``members``).
        members: the members.
        majority: the majority basin's label; share: its share of the members.
        readable: the first step from which :data:`TARGET` accuracy holds (None: never).
        table: ``step, accuracy, low, high, chance``.
    """

    labels: list[int]
    members: list[int]
    majority: int
    share: float
    readable: int | None
    table: pd.DataFrame

    kind: ClassVar[str] = "seed-advice"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        return "seed-advice"

    @property
    def basins(self) -> int:
        return len(set(self.labels))

    def to_json(self) -> dict[str, Any]:
        return strict_json(
            {
                "members": self.members,
                "labels": self.labels,
                "basins": self.basins,
                "majority": self.majority,
                "share": self.share,
                "target": TARGET,
                "readable": self.readable,
                "table": self.table,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.table}


def seed_advice(ens: Ensemble, draws: int = 500, seed: int = 0, split: str = "test") -> SeedAdvice:
    """Seed advice for a finished classification run (see the module docstring).

    Raises:
        UserError: a task without classes, fewer than 3 finished members, or members whose
            snapshot steps differ.
    """
    if ens.task.num_classes is None:
        raise UserError(
            f"seed advice compares predicted class probabilities; task {ens.task.name!r} has none"
        )
    members = ens.members
    if len(members) < 3:
        raise UserError(
            f"seed advice needs at least 3 finished members, the run has {len(members)}"
        )
    steps = ens.steps(members[0])
    if any(ens.steps(m) != steps for m in members):
        raise UserError(
            "members were snapshotted at different steps; seed advice needs shared steps"
        )
    x, _ = ens.eval_set(split)
    snapshots = {
        step: ens.predict(x, members=members, step=step).softmax(-1).double() for step in steps
    }
    final = snapshots[steps[-1]]
    found = find_basins(pairwise_js(final).numpy())
    labels = np.asarray(found.labels)
    curve = prediction_curve(snapshots, labels, draws, seed)
    counts = np.bincount(labels)
    return SeedAdvice(
        labels=labels.tolist(),
        members=list(members),
        majority=int(counts.argmax()),
        share=float(counts.max() / len(labels)),
        readable=readable_from(curve),
        table=curve,
    )


__all__ = [
    "TARGET",
    "SeedAdvice",
    "predicted_basins",
    "prediction_curve",
    "readable_from",
    "seed_advice",
]
