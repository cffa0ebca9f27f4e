"""Spread vs training step: does the ensemble's cloud contract or spread out as it trains?

At every snapshot step shared by the chosen members, the members are evaluated on the
same inputs and the mean over pairs of their function distances (Jensen-Shannon,
disagreement) and weight distance is recorded, with their mean loss and accuracy.

    table = spread_over_training(ens)    # test split; one row per snapshot step
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.function import (
    pairwise_disagreement,
    pairwise_js,
    per_member_loss_accuracy,
    probabilities,
)
from attractor.runs.ensemble import Ensemble


def _upper_mean(matrix: Tensor) -> float:
    """Mean over pairs i < j of a symmetric ``[members, members]`` matrix."""
    i, j = torch.triu_indices(len(matrix), len(matrix), offset=1)
    return float(matrix[i, j].mean())


def pairwise_weight_distance(params: dict[str, Tensor]) -> Tensor:
    """L2 distance between members' flattened parameter vectors.

    Args:
        params: stacked parameters, each ``[members, ...]`` (as from ``Ensemble.stacked``).

    Returns:
        ``[members, members]`` float64 distances (zero diagonal).

    References:
        Fort, Hu & Lakshminarayanan (2019), "Deep Ensembles: A Loss Landscape Perspective"
        (distances between independently trained solutions in weight space).
    """
    flat = torch.cat([p.reshape(p.shape[0], -1).to(torch.float64) for p in params.values()], dim=1)
    # Differences, not the Gram form |a|^2 + |b|^2 - 2ab, which cancels catastrophically
    # for nearby members (identical members would come out ~1e-8 * |a| apart).
    return torch.cdist(flat[None], flat[None], compute_mode="donot_use_mm_for_euclid_dist")[0]


def common_steps(ens: Ensemble, members: list[int]) -> list[int]:
    """Snapshot steps every one of ``members`` has, ascending."""
    shared = set(ens.steps(members[0]))
    for member in members[1:]:
        shared &= set(ens.steps(member))
    return sorted(shared)


def spread_over_training(
    ens: Ensemble,
    x: Tensor | None = None,
    targets: Tensor | None = None,
    members: list[int] | None = None,
) -> pd.DataFrame:
    """Spread of the ensemble at each snapshot step.

    Args:
        ens: a finished run.
        x: ``[batch, ...]`` eval inputs; default the task's test split (with its targets).
        targets: ``[batch]`` class ids for loss and accuracy; without them (``x`` given
            alone) the ``loss`` and ``accuracy`` columns are left out.
        members: members to compare (default: all finished, non-diverged); at least 2.

    Returns:
        One row per snapshot step common to all members: ``step``, ``members``, ``js``
        (mean pairwise Jensen-Shannon, nats), ``disagreement`` (mean pairwise share of
        differing predictions), ``weight_distance`` (mean pairwise L2 between flattened
        parameters), and ``loss`` / ``accuracy`` (means over members).

    References:
        Fort, Hu & Lakshminarayanan (2019), "Deep Ensembles: A Loss Landscape Perspective";
        Lin (1991), "Divergence measures based on the Shannon entropy".
    """
    members = ens.members if members is None else list(members)
    if len(members) < 2:
        raise UserError(
            f"spread over training needs at least 2 finished members, got {len(members)}"
        )
    if ens.task.num_classes is None:
        raise UserError(
            f"task {ens.config.task.name!r} has no classes; function-space spread needs class "
            "logits"
        )
    if x is None:
        x, targets = ens.task.x_test, ens.task.y_test
    rows = []
    for step in common_steps(ens, members):
        logits = ens.predict(x, members, step)
        # Tasks with several predictions per input (e.g. per token) count each one as an example.
        logits = logits.reshape(len(members), -1, logits.shape[-1])
        row: dict[str, float | int] = {
            "step": step,
            "members": len(members),
            "js": _upper_mean(pairwise_js(probabilities(logits))),
            "disagreement": _upper_mean(pairwise_disagreement(logits.argmax(-1))),
            "weight_distance": _upper_mean(pairwise_weight_distance(ens.stacked(members, step)[0])),
        }
        if targets is not None:
            loss, accuracy = per_member_loss_accuracy(logits, targets.reshape(-1))
            row |= {"loss": float(loss.mean()), "accuracy": float(accuracy.mean())}
        rows.append(row)
    return pd.DataFrame(rows)
