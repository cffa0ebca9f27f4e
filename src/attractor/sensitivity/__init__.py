"""Which factor of the plan drives the spread, and what to look at next.

* :func:`variance_components` — discrete crossed factors (factorial plans): ANOVA shares
  and random-effects variance components with pigeonhole-bootstrap intervals.
* :func:`sobol_analysis` — continuous factors (``sobol`` plans): SALib's S1 / ST.
* :func:`group_influence` — leave-group-out effects of data groups (``holdout_group``).
* :func:`suggest` — examples (BALD mutual information) and groups to look at next.
* :func:`analyze` — whichever of the first three the run's plan supports.

Each returns a frozen dataclass that is a result (:mod:`attractor.runs.results`): the run
store writes it as Parquet + JSON in the run directory (``ens.store.write(result)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.sensitivity.influence import (
    GroupInfluence,
    group_effects,
    group_influence,
    write_influence,
)
from attractor.sensitivity.sobol import SobolIndices, sobol_analysis, sobol_indices, write_sobol
from attractor.sensitivity.suggest import (
    Suggestions,
    rank_examples,
    rank_groups,
    rank_training_examples,
    suggest,
    write_suggestions,
)
from attractor.sensitivity.training_examples import example_effects, example_influence
from attractor.sensitivity.variance import (
    VarianceComponents,
    crossed_factors,
    decompose,
    variance_components,
    write_variance,
)

__all__ = [
    "GroupInfluence",
    "SobolIndices",
    "Suggestions",
    "VarianceComponents",
    "SensitivityReport",
    "analyze",
    "crossed_factors",
    "decompose",
    "example_effects",
    "example_influence",
    "group_effects",
    "group_influence",
    "rank_examples",
    "rank_groups",
    "rank_training_examples",
    "sobol_analysis",
    "sobol_indices",
    "suggest",
    "variance_components",
    "write_influence",
    "write_sensitivity",
    "write_sobol",
    "write_suggestions",
    "write_variance",
]


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    """What :func:`analyze` could compute for a run; None where the plan does not allow a part."""

    variance: VarianceComponents | None
    sobol: SobolIndices | None
    influence: GroupInfluence | None

    def to_dict(self) -> dict[str, Any]:
        """Each part's plain data under its name (None where the plan does not allow it)."""
        return {
            name: None if part is None else part.to_dict()
            for name, part in (
                ("variance", self.variance),
                ("sobol", self.sobol),
                ("influence", self.influence),
            )
        }


def analyze(
    ens: Ensemble, draws: int = 500, seed: int = 0, level: float = 0.95
) -> SensitivityReport:
    """Sobol indices for a ``sobol`` plan, variance components for a ``factorial`` / ``grid``
    plan, and group influence when ``holdout_group`` varies.

    Raises:
        UserError: the plan supports none of them (the message says what plan would).
    """
    plan = ens.plan
    design = ens.config.plan.design
    sobol = sobol_analysis(ens, level=level, seed=seed) if design == "sobol" else None
    # Only factorial / grid plans are crossings by construction; a random plan's levels are
    # unbalanced.
    factors = crossed_factors(plan) if design in ("factorial", "grid") else []
    variance = (
        variance_components(ens, factors, draws=draws, seed=seed, level=level) if factors else None
    )
    influence = (
        group_influence(ens, draws=draws, seed=seed, level=level)
        if plan["holdout_group"].notna().any()
        else None
    )
    if sobol is variance is influence is None:
        raise UserError(
            'nothing to analyze: use design = "factorial" with [plan.levels] (variance '
            "components), "
            'design = "sobol" with [plan.ranges] (Sobol indices), or vary holdout_group (influence)'
        )
    return SensitivityReport(variance, sobol, influence)


def write_sensitivity(ens: Ensemble, report: SensitivityReport) -> dict[str, str]:
    """Write every part of ``report`` through the run store; returns ``{name_kind: path}``."""
    paths: dict[str, str] = {}
    for name, part in (
        ("variance", report.variance),
        ("sobol", report.sobol),
        ("influence", report.influence),
    ):
        if part is not None:
            paths.update({f"{name}_{kind}": path for kind, path in ens.store.write(part).items()})
    return paths
