"""The result of ``attractor diff``: where two models part ways, from below and from above.

:class:`Disagreement` holds a search (a lower bound: inputs that show the disagreement),
its equal-budget random baseline and, where the models allow it, a certificate over the
same region (an upper bound no input can exceed); :mod:`attractor.experiments.compare`
computes it. A result of kind ``diff``: ``diff.json`` (:meth:`Disagreement.to_json`, with
the dreams' inputs) and ``diff.parquet`` (the per-output table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import Tensor

from attractor.runs.results import strict_json
from attractor.search import SearchResult

#: Search objective of the certificate's attack: the same quantity the certificate bounds.
CERTIFIED_OBJECTIVE = "max |f_B(x)_j - f_A(x)_j| over outputs j (logits)"


@dataclass(frozen=True, eq=False)
class Disagreement:
    """A search result and, where the models allow it, a certificate over the same region.

    Attributes:
        spec_a, spec_b: what was compared (model specs).
        region: ``"ball"`` (eps around test points) or ``"box"`` (the training data's range).
        eps: the balls' radius (None for the box).
        centers: ``[p, *shape]`` ball centres (None for the box).
        search: PGD on ``objective``; baseline: random sampling at the same evaluations.
        certificate: the branch-and-bound result (:class:`attractor.certify.CertifyResult`)
            or None.
        certify_note: why there is no certificate (None when there is one).
        per_output: one row per output ``j``: ``certified_low / certified_high`` of
            ``f_B - f_A`` over all boxes, ``attained_low / attained_high`` at the inputs seen.

    A result of kind ``diff``: ``diff.json`` (:meth:`to_json`) and ``diff.parquet`` (per output).
    """

    kind: ClassVar[str] = "diff"
    schema: ClassVar[int] = 1

    spec_a: str
    spec_b: str
    task: str
    region: str
    eps: float | None
    centers: Tensor | None
    search: SearchResult
    baseline: SearchResult
    certificate: Any
    certify_note: str | None
    per_output: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline numbers: search vs baseline, and the certificate's bounds and verdicts."""
        out: dict[str, Any] = {
            "objective": self.search.objective,
            "search_best": self.search.best,
            "baseline_best": self.baseline.best,
            "search_mean_per_point": float(self.search.best_per_point.mean()),
            "baseline_mean_per_point": float(self.baseline.best_per_point.mean()),
            "evaluations": self.search.evaluations,
        }
        if self.certificate is not None:
            cert = self.certificate
            verdicts = list(cert.verdicts)
            out.update(
                {
                    "certified_upper_max": float(cert.upper.max()),
                    "attained_lower_max": float(cert.lower.max()),
                    "gap_max": float(cert.gap.max()),
                    "verdicts": {
                        v: verdicts.count(v) for v in ("verified", "falsified", "unknown")
                    },
                }
            )
        return out

    def dreams(self, k: int = 6) -> list[dict[str, Any]]:
        """The ``k`` points with the highest search score: their best input, and their centre."""
        scores = torch.nan_to_num(self.search.best_per_point, nan=-torch.inf)
        order = torch.argsort(scores, descending=True)[:k]
        return [
            {
                "point": int(i),
                "score": float(self.search.best_per_point[i]),
                "input": self.search.best_inputs[i].tolist(),
                "center": None if self.centers is None else self.centers[i].tolist(),
            }
            for i in order
        ]

    @property
    def name(self) -> str:
        """The file stem: ``diff``."""
        return "diff"

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The per-output table (certified and attained ranges of ``f_B - f_A``)."""
        return {"": self.per_output}

    def to_json(self) -> dict[str, Any]:
        """Everything, with the dreams' inputs; NaN as null."""
        certificate = None if self.certificate is None else self.certificate.to_dict()
        return strict_json(
            {
                "dreams": self.dreams(),
                "a": self.spec_a,
                "b": self.spec_b,
                "task": self.task,
                "region": self.region,
                "eps": self.eps,
                "settings": self.settings,
                "summary": self.summary(),
                "search": self.search.to_dict(),
                "baseline": self.baseline.to_dict(with_inputs=False),
                "certificate": certificate,
                "certify_note": self.certify_note,
                "per_output": self.per_output,
            }
        )
