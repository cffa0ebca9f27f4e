"""Every stability measure of one run, with multi-bootstrap intervals: ``attractor measure DIR``.

Function space (loss, accuracy, disagreement, Jensen-Shannon, symmetric KL, KL to the
ensemble mean, mutual information, ensemble vs mean member), representation space (CKA
at named layers), weight space (distance to init, pairwise distance, after permutation
alignment), basins, spread over training and linear mode connectivity of a few pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.basins import Basins, find_basins
from attractor.measure.bootstrap import multibootstrap, pairwise_multibootstrap
from attractor.measure.connectivity import LMCResult, lmc
from attractor.measure.function import (
    ensemble_accuracy,
    ensemble_correct,
    kl_to_mean,
    pairwise_metrics,
    per_example_loss_accuracy,
    probabilities,
)
from attractor.measure.permutation_spec import permutation_spec
from attractor.measure.representation import member_cka
from attractor.measure.trajectory import spread_over_training
from attractor.measure.weights import (
    align,
    distance_to_init,
    member_vectors,
    pairwise_aligned_distance,
    pairwise_distance,
)
from attractor.runs.ensemble import Ensemble
from attractor.runs.progress import Stages


@dataclass(frozen=True)
class MeasureOptions:
    """What to measure and how (defaults are what ``attractor measure`` uses)."""

    split: Literal["test", "train"] = "test"
    # CKA layers: names or glob; None = the model's activations.
    layers: list[str] | str | None = None
    debiased_cka: bool = False
    draws: int = 500
    seed: int = 0
    lmc_pairs: int = 3
    lmc_points: int = 30
    align_max_members: int = 12  # permutation alignment costs one matching per pair
    # BatchNorm statistics of every interpolated network: none | reset | repair (a reset
    # is a no-op without BatchNorm, so MLP curves do not depend on it).
    lmc_repair: str = "reset"
    basin_threshold: float | None = None
    n_basins: int | None = None


@dataclass(eq=False)
class Measures:
    """The spread of one run: a result of kind ``measures`` (``RUN/measures.json`` + ``.parquet``).

    Attributes:
        summary: measure name -> ``{"value", "low", "high", "draws", "level"}`` (95 %
            multi-bootstrap interval; ``value`` only where nothing is resampled).
        members: one row per member (``member``, loss, accuracy, KL to the mean, distance
            to init, basin), in the order of the matrices' rows.
        pairwise: ``[members, members]`` matrices in function and weight space.
        cka: layer -> ``[members, members]`` linear CKA.
        basins: the members' basins by JS distance.
        trajectory: spread between members at every snapshot step.
        lmc: loss and error along linear paths between a few pairs.
    """

    summary: dict[str, dict[str, float]]
    members: pd.DataFrame
    pairwise: dict[str, np.ndarray]
    cka: dict[str, np.ndarray]
    basins: Basins
    trajectory: pd.DataFrame
    lmc: list[LMCResult] = field(default_factory=list)

    kind: ClassVar[str] = "measures"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        """Always ``measures``: a run holds one (a new measurement replaces the last)."""
        return "measures"

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The tidy table of :meth:`table` (per-member and per-pair values) as the main table."""
        return {"": self.table()}

    def table(self) -> pd.DataFrame:
        """One tidy table: a row per (measure, member_a, member_b); member_b empty per member."""
        ids = list(self.members["member"])
        rows: list[dict[str, Any]] = []
        for column in self.members.columns.drop("member"):
            rows += [
                {"measure": column, "member_a": m, "member_b": None, "value": float(v)}
                for m, v in zip(ids, self.members[column], strict=True)
            ]
        matrices = {**self.pairwise, **{f"cka_{k}": v for k, v in self.cka.items()}}
        for name, matrix in matrices.items():
            rows += [
                {"measure": name, "member_a": a, "member_b": b, "value": float(matrix[i, j])}
                for i, a in enumerate(ids)
                for j, b in enumerate(ids)
                if i < j
            ]
        table = pd.DataFrame(rows)
        table["member_b"] = table["member_b"].astype("Int64")
        return table

    def to_json(self) -> dict[str, Any]:
        """Summary, basins, trajectory and LMC paths (the matrices are in :meth:`table`)."""
        return {
            "summary": self.summary,
            "basins": self.basins.to_dict(),
            "trajectory": self.trajectory.to_dict("records"),
            "lmc": [r.to_dict() for r in self.lmc],
        }


def _alignable(ens: Ensemble) -> bool:
    """Whether weight matching can align the task's model (an MLP, LeNet, VGG, ResNet)."""
    try:
        return bool(permutation_spec(ens.task.make_model()).perms)
    except UserError:
        return False


def _lmc_pairs(members: list[int], basins: Basins, count: int) -> list[tuple[int, int]]:
    """Representatives of different basins first (the barrier between modes), then neighbours."""
    pairs = [(basins.representatives[0], r) for r in basins.representatives[1:]]
    pairs += [(members[i], members[i + 1]) for i in range(0, len(members) - 1, 2)]
    return list(dict.fromkeys(pairs))[:count]


def measure_ensemble(
    ens: Ensemble, options: MeasureOptions | None = None, progress: bool = False
) -> Measures:
    """Measure the spread of ``ens`` (finished, non-diverged members) on one split.

    With ``progress``, one line on stderr as each of its five stages begins
    (:class:`~attractor.runs.progress.Stages`).
    """
    options = options or MeasureOptions()
    members = ens.members
    if len(members) < 2:
        raise UserError(
            f"'{ens.store.root}' has {len(members)} finished member(s); measuring spread needs at "
            "least 2"
        )
    if ens.task.num_classes is None:
        raise UserError(
            "spread measures need a classification task (Task.num_classes); this task has none"
        )
    x, y = ens.eval_set(options.split)
    # Before the first progress line: reading every member's weights is where a damaged or
    # mismatched file is refused, and a refusal is then the only line on stderr.
    logits = ens.predict(x, members)
    with Stages("measure", 5, progress) as stages:
        return _measure(ens, members, (x, y, logits), options, stages)


def _measure(
    ens: Ensemble,
    members: list[int],
    data: tuple[Tensor, Tensor, Tensor],
    options: MeasureOptions,
    stages: Stages,
) -> Measures:
    """The five stages of :func:`measure_ensemble` on ``data``: inputs, targets, logits."""
    x, y, logits = data
    stages.begin(f"function space: {len(members)} members on {len(x)} {options.split} examples")
    loss, correct = per_example_loss_accuracy(logits, y)  # [m, b] each
    pairwise = pairwise_metrics(logits, per_example=True)  # name -> [m, m, b]
    kl = kl_to_mean(probabilities(logits), per_example=True)  # [m, b]
    summary = _function_summary(logits, y, loss, correct, pairwise, kl, options)
    stages.begin("representations: CKA between members")
    cka = {
        k: v.numpy()
        for k, v in member_cka(
            ens, x, options.layers, members, debiased=options.debiased_cka
        ).items()
    }
    for layer, matrix in cka.items():
        summary[f"cka_{layer}"] = pairwise_multibootstrap(
            matrix, draws=options.draws, seed=options.seed
        ).to_dict()
    stages.begin("weight space and basins")
    alignable = _alignable(ens)
    matrices = _matrices(ens, members, pairwise, alignable, options)
    basins = find_basins(
        matrices["js"], members, threshold=options.basin_threshold, n_basins=options.n_basins
    )
    per_member = pd.DataFrame(
        {
            "member": members,
            "loss": loss.mean(1).numpy(),
            "accuracy": correct.mean(1).numpy(),
            "kl_to_mean": kl.mean(1).numpy(),
            "distance_to_init": distance_to_init(ens, members).numpy(),
            "basin": basins.labels,
        }
    )
    stages.begin("spread over training, at every snapshot")
    trajectory = spread_over_training(ens, x, y, members)
    pairs = _lmc_pairs(members, basins, options.lmc_pairs)
    stages.begin(f"linear mode connectivity: {len(pairs)} pairs")
    paths = [
        lmc(
            ens,
            a,
            b,
            x,
            y,
            align_fn=align if alignable else None,
            points=options.lmc_points,
            repair=options.lmc_repair,
        )
        for a, b in pairs
    ]
    return Measures(summary, per_member, matrices, cka, basins, trajectory, paths)


def _function_summary(
    logits: Tensor,
    y: Tensor,
    loss: Tensor,
    correct: Tensor,
    pairwise: dict[str, Tensor],
    kl: Tensor,
    options: MeasureOptions,
) -> dict[str, dict[str, float]]:
    """Function-space summary: per-member values and pairs, each with its interval."""
    boot = {"draws": options.draws, "seed": options.seed}
    summary: dict[str, dict[str, float]] = {
        f"{options.split}_accuracy": multibootstrap(correct.numpy(), **boot).to_dict(),
        f"{options.split}_loss": multibootstrap(loss.numpy(), **boot).to_dict(),
        "accuracy_sd_over_members": multibootstrap(
            correct.numpy(), statistic=np.std, **boot
        ).to_dict(),
        "mutual_information": multibootstrap(kl.numpy(), **boot).to_dict(),
        # One row: only examples are resampled (the ensemble is one predictor).
        "ensemble_accuracy": multibootstrap(
            ensemble_correct(logits, y)[None].numpy(), **boot
        ).to_dict(),
    }
    for name, values in pairwise.items():
        summary[f"pairwise_{name}"] = pairwise_multibootstrap(values.numpy(), **boot).to_dict()
    accuracies = ensemble_accuracy(logits, y)
    summary["ensemble_minus_mean_member_accuracy"] = {
        "value": float(
            np.subtract(accuracies["ensemble_accuracy"], accuracies["mean_member_accuracy"])
        )
    }
    return summary


def _matrices(
    ens: Ensemble,
    members: list[int],
    pairwise: dict[str, Tensor],
    alignable: bool,
    options: MeasureOptions,
) -> dict[str, np.ndarray]:
    """Pairwise matrices: function space (mean over examples), then weight space."""
    matrices = {name: values.mean(-1).numpy() for name, values in pairwise.items()}
    matrices["weight_distance"] = pairwise_distance(member_vectors(ens, members)).numpy()
    if alignable and len(members) <= options.align_max_members:
        template = ens.task.make_model()
        matrices["aligned_distance"] = pairwise_aligned_distance(
            [ens.params(m) for m in members], template
        ).numpy()
    return matrices
