"""What a search returns: its best inputs and scores, per point and overall."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["SearchResult", "best_rows"]


@dataclass(frozen=True, eq=False)
class SearchResult:
    """The most disagreeing inputs a search found.

    Attributes:
        method: ``"pgd"`` or ``"random"``.
        objective: name of the maximized score.
        inputs: ``[k, *shape]`` the top-k inputs, best first.
        scores: ``[k]`` float64 their scores (descending).
        points: ``[k]`` the region point each came from.
        best_per_point: ``[p]`` float64 the best score found in each point's box.
        best_inputs: ``[p, *shape]`` where each point's best was found.
        evaluations: inputs scored, as accounted in :mod:`attractor.search.continuous`.
        settings: restarts, steps, step_size, seed (PGD) or samples per point (random).
    """

    method: str
    objective: str
    inputs: Tensor
    scores: Tensor
    points: Tensor
    best_per_point: Tensor
    best_inputs: Tensor
    evaluations: int
    settings: dict[str, Any]

    @property
    def best(self) -> float:
        return float(self.scores[0])

    def to_dict(self, with_inputs: bool = True) -> dict[str, Any]:
        """JSON-able summary; ``with_inputs=False`` leaves the top inputs' values out."""
        top = [
            {"score": float(s), "point": int(p)}
            for s, p in zip(self.scores, self.points, strict=True)
        ]
        if with_inputs:
            for row, x in zip(top, self.inputs, strict=True):
                row["input"] = x.tolist()
        per_point = self.best_per_point
        return {
            "method": self.method,
            "objective": self.objective,
            "evaluations": self.evaluations,
            "settings": dict(self.settings),
            "best": self.best,
            "top": top,
            "best_per_point": per_point.tolist(),
            "best_per_point_mean": float(per_point.mean()),
        }


def best_rows(
    scores: Tensor, inputs: Tensor, points: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best rows (descending; NaN scores last)."""
    order = torch.argsort(torch.nan_to_num(scores, nan=-math.inf), descending=True, stable=True)[:k]
    return scores[order], inputs[order], points[order]
