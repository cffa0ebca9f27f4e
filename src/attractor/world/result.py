"""The result of a world experiment: basins, their sources, growth, structural stability.

:class:`WorldResult` (kind ``world``) holds the tables a world experiment measured
(:mod:`attractor.experiments.world`) and the headline numbers the report answers with:
the basin share at the default range with its interval, the dominant source of spread,
the top closed-loop Lyapunov exponent, and where structural perturbations break the basin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from attractor.runs.results import strict_json

#: Tables a world result may hold, with their columns (the report reads these names).
TABLES: dict[str, str] = {
    "scales": "scale, share, low, high, n, basin: basin share vs initial-state perturbation",
    "sources": "feature, source, variance, share, low, high: spread by source",
    "perturbed_sources": "feature, perturbation, source, variance, share, low, high: the "
    "spread split into model perturbation, member and initial state",
    "map": "factor_a, a, factor_b, b, share, label: basin share over two initial factors",
    "growth": "member, state, exponent, value: closed-loop finite-time Lyapunov exponents",
    "structural": "perturbation, target, level, share, low, high: basin share when perturbed",
    "trajectories": "member, state, t, px, py: projected trajectories (phase portrait)",
    "spread": "t, spread: mean distance between trajectories over time (projection)",
    "samples": "basin, member, state, and shape + pixels (images) or text: final states "
    "as the world renders them, per basin",
}


@dataclass(frozen=True, eq=False)
class WorldResult:
    """What a world experiment measured (see :data:`TABLES` for the tables' columns).

    Attributes:
        world: the world's name; description: its one line; constants: its constants.
        model: where the model came from (``{"run": path, "members": [...]}``, or
            ``{"models": [directory or RUN:MEMBER, ...], "members": [0, ...]}`` for models
            loaded one by one, or none).
        summary: headline numbers (``basin_share`` with ``low``/``high`` at scale 1,
            ``basin`` named when the world has no goal, ``dominant_source``,
            ``lyapunov_top`` with interval, ``agreement``, ``breaks``).
        tables: name -> DataFrame, a subset of :data:`TABLES`.
    """

    kind: ClassVar[str] = "world"
    schema: ClassVar[int] = 1

    world: str
    description: str
    constants: dict[str, float]
    model: dict[str, Any]
    settings: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file stem: ``world``."""
        return "world"

    def to_json(self) -> dict[str, Any]:
        """Everything but the big tables (trajectories, samples, growth), NaN as null."""
        keep = ("scales", "sources", "perturbed_sources", "structural")
        small = {k: v for k, v in self.tables.items() if k in keep}
        return strict_json(
            {
                "world": self.world,
                "description": self.description,
                "constants": self.constants,
                "model": self.model,
                "settings": self.settings,
                "summary": self.summary,
                **small,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """Every table; the main one is ``scales``."""
        tables = dict(self.tables)
        main = tables.pop("scales", pd.DataFrame(columns=["scale", "share", "low", "high"]))
        return {"": main, **tables}


__all__ = ["TABLES", "WorldResult"]
