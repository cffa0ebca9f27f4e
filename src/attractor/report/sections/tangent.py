"""The report's ``tangent`` section: growth curves, the basin around each run, and local beside
global sensitivity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from attractor.report.page import collapsible, figure, section, table
from attractor.report.sections import Context, Section
from attractor.report.sections.tangent_parts import (
    basin_plot,
    basin_table,
    growth_plot,
    hypergradient_table,
    local_global_table,
)
from attractor.runs.results import StoredResult

__all__ = ["SECTION", "hypergradient_table", "local_global_table", "render", "tangent_section"]


def _frames(data: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Mapping[str, Any]]:
    """Curves, members, hypergradients and settings from a ``TangentResult`` or its JSON."""
    if isinstance(data, Mapping):
        frames = (pd.DataFrame(data.get(key, [])) for key in ("curves", "members", "hypergrads"))
        return (*frames, data)  # type: ignore[return-value]
    return data.curves, data.members, data.hypergrads, data.to_json()


def _read_sobol(settings: Mapping[str, Any], *places: Path) -> Mapping[str, Any] | None:
    """``sensitivity-sobol.json`` that ``attractor sensitivity`` left in one of ``places`` or
    in the run the analysis read (``settings["out"]``), if any; read as data, never as code."""
    candidates = [*places, *([Path(str(settings["out"]))] if settings.get("out") else [])]
    for path in (place / "sensitivity-sobol.json" for place in candidates):
        try:
            if path.is_file():
                return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def tangent_section(data: Any, sobol: Mapping[str, Any] | None = None) -> str:
    """Section ``tangent`` from a :class:`~attractor.tangent.TangentResult` or the dict in
    ``tangent.json``.

    ``sobol``: the JSON of ``attractor sensitivity``'s Sobol indices (default: read
    ``sensitivity-sobol.json`` from the run directory the analysis was written into).
    """
    curves, members, hypergrads, settings = _frames(data)
    basin = pd.DataFrame(settings.get("basin") or [])
    sensitivity = pd.DataFrame(settings.get("sensitivity") or [])
    sobol = sobol if sobol is not None else _read_sobol(settings)
    body = _growth(curves, members) + _hypergradients(members, hypergrads, settings)
    if len(sensitivity):
        body += _local_global(sensitivity, sobol)
    if len(basin):
        body += _basin(basin, members, settings.get("basin_tolerance"))
    lead = (
        f"Forward mode through each member's own training run ({settings.get('dtype', '')}, "
        f"{settings.get('directions', 0)} random directions, "
        f"QR every {settings.get('reorth_every', '')} steps). Exponents are finite-time Lyapunov "
        "exponents in nats per step (< 0: initial "
        "perturbations of the weights shrink); random growth = |J v| of a random direction "
        "(typical), power top growth = largest singular "
        "value of the training map (worst case). d/dh is the local derivative at the member's own "
        "setting (forward-mode hypergradient); "
        "Δ/Δh is a central difference of two whole runs at ± the stated relative step "
        "(finite-scale sensitivity): for ReLU nets they differ "
        "because activation patterns flip along the way. Basin ε = the smallest perturbation of "
        "the start at which a perturbed replay "
        "stops following the tangent (the size of the region around the run where derivatives "
        "describe it)."
    )
    return section("tangent", "Derivatives through training", lead, "".join(body))


def _growth(curves: pd.DataFrame, members: pd.DataFrame) -> list[str]:
    """The growth figure (when the curves have it) and the members' table."""
    body: list[str] = []
    if len(curves) and "log_growth_top" in curves:
        body.append(
            figure(
                growth_plot(curves, members),
                "growth of initial perturbations over training (log scale)",
            )
        )
    if len(members):
        shown = [
            c
            for c in (
                "member",
                "optimizer",
                "lr",
                "momentum",
                "test_loss",
                "leading_exponent",
                "random_growth",
                "power_top_growth",
                "function_growth_top",
                "basin_eps",
                "diverged_step",
                "engine_max_abs_diff",
            )
            if c in members
        ]
        body.append(table(members[shown]))
    return body


def _hypergradients(
    members: pd.DataFrame, hypergrads: pd.DataFrame, settings: Mapping[str, Any]
) -> list[str]:
    """Hypergradients beside finite-scale differences, then every member's, collapsed."""
    if not len(hypergrads):
        return []
    body = []
    body.append(table(hypergradient_table(hypergrads, settings.get("finite_scale"))))
    body.append(
        collapsible(
            f"hypergradients of all {members['member'].nunique() if len(members) else 0} members",
            table(hypergrads),
            open_=False,
        )
    )
    return body


def _local_global(sensitivity: pd.DataFrame, sobol: Mapping[str, Any] | None) -> list[str]:
    """Local derivatives beside the global slope across the plan (and Sobol indices)."""
    body = []
    body.append("<h3>Local vs global sensitivity</h3>")
    body.append(
        "<p>Local: the forward-mode derivative d outcome/dh of each member at its own setting "
        "(mean and sd over members). "
        "Global: the least-squares slope of the members' final outcome against their setting of h "
        "across the plan, with a "
        "bootstrap interval over members; it exists only where the plan varies h, and it also "
        "carries whatever else the plan "
        "varies (seeds, data order) as noise. Sobol indices (from <code>attractor "
        "sensitivity</code>, if run on this directory) "
        "are shares of the outcome's variance, not slopes.</p>"
    )
    body.append(table(local_global_table(sensitivity, sobol)))
    return body


def _basin(basin: pd.DataFrame, members: pd.DataFrame, tolerance: float | None) -> list[str]:
    """The basin around each run: perturbed replays against the tangent's prediction."""
    body = []
    body.append("<h3>The basin around each run</h3>")
    body.append(
        "<p>Each member replayed in float64 from its initial weights moved by ε·v (v: its first "
        "random direction, |v| = 1), "
        "with the same batches. While the run is linear in the start, the final distance is ε·|J "
        "v|; the breakdown ε is the "
        "smallest ε of the grid where they differ by more than "
        f"{tolerance if tolerance is not None else 0.1:g} (relative). "
        "Flips: (step, training example, unit) triples whose ReLU pre-activation sign differs "
        "between the two runs, "
        "summed over the run.</p>"
    )
    body.append(
        figure(basin_plot(basin, members), "final distance vs initial perturbation (log-log)")
    )
    body.append(table(basin_table(basin, members)))
    body.append(collapsible(f"basin cross-check, all {len(basin)} rows", table(basin), open_=False))
    return body


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``tangent`` result of the directory; Sobol indices from the run it analysed.

    The tangent experiment keeps its run in ``DIR/run``: ``attractor sensitivity DIR/run``
    leaves its Sobol indices there (looked up first, then beside the result).
    """
    places = (context.store.root / "run", context.store.root)
    return "".join(tangent_section(r.data, _read_sobol(r.data, *places)) for r in results)


SECTION = Section(kind="tangent", order=60, render=render)
