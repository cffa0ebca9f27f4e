"""How results are printed: one small function per kind of result a command shows.

The commands in ``core`` and ``measure`` compute and write; these functions only format
what they return, as rich tables or lines (``--json`` output is the result's own JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from attractor.cli._shared import console, emit_json

if TYPE_CHECKING:
    import pandas as pd

    from attractor.measure.lm import LMMeasures
    from attractor.measure.spread import Measures
    from attractor.measure.structural import StructuralResult
    from attractor.sensitivity import (
        GroupInfluence,
        SensitivityReport,
        SobolIndices,
        Suggestions,
        VarianceComponents,
    )


def print_wrote(paths: dict[str, str]) -> None:
    """The two files a result was written to."""
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)


def print_run_summary(summary: dict[str, Any]) -> None:
    """A run's member counts, test accuracy and loss over members, and their disagreement."""
    console.print(
        f"[bold]{escape(summary['task'])}[/bold] ensemble in {escape(summary['run'])}: "
        f"{summary['done']} done, {summary['diverged']} diverged, {summary['pending']} pending of "
        f"{summary['members']}",
        soft_wrap=True,
    )
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        if key in summary:
            s = summary[key]
            console.print(
                f"  {label:<22} {s['mean']:.4f} ± {s['sd']:.4f} (sd over members; min "
                f"{s['min']:.4f}, max {s['max']:.4f})",
                soft_wrap=True,
            )
    if "pairwise_disagreement" in summary:
        d = summary["pairwise_disagreement"]
        console.print(
            f"  {'pairwise disagreement':<22} {d['mean']:.4f} mean over pairs (max "
            f"{d['max']:.4f}) of test predictions",
            soft_wrap=True,
        )


def status_table(plan: pd.DataFrame) -> str:
    """The plan's member column, the factors that vary, and each member's status."""
    meta = ("member", "status", "diverged_step")
    varying = [c for c in plan.columns if c not in meta and plan[c].astype(str).nunique() > 1]
    diverged = ["diverged_step"] if plan["diverged_step"].notna().any() else []
    return plan[["member", *varying, "status", *diverged]].to_string(index=False, max_rows=20)


def print_measures(measures: Measures, paths: dict[str, str], title: str, as_json: bool) -> None:
    """A classification run's summary table, its basins and the files written."""
    if as_json:
        emit_json({**measures.to_json(), "files": paths})
        return
    table = Table("measure", "value", "95% interval", title=title)
    for name, estimate in measures.summary.items():
        interval = f"[{estimate['low']:.4g}, {estimate['high']:.4g}]" if "low" in estimate else ""
        table.add_row(name, f"{estimate['value']:.4g}", interval)
    console.print(table)
    b = measures.basins
    console.print(
        f"basins: {b.n_basins} (sizes {b.sizes}, representatives {b.representatives})", markup=False
    )
    print_wrote(paths)


def print_lm_measures(
    measures: LMMeasures, paths: dict[str, str], title: str, as_json: bool
) -> None:
    """A language-model run's next-token loss, JS and KL to the mean (as `lm` prints them)."""
    from attractor.cli.lm import format_lm_measure

    data = measures.to_json()
    emit_json(data) if as_json else console.print(
        format_lm_measure(data), markup=False, soft_wrap=True
    )


def print_comparison(result: dict[str, Any]) -> None:
    """Two runs' metric with intervals, and the paired difference A - B."""
    console.print(
        f"{result['metric']}: A = {result['a']:.4f} [{result['a_low']:.4f}, "
        f"{result['a_high']:.4f}]  "
        f"B = {result['b']:.4f} [{result['b_low']:.4f}, {result['b_high']:.4f}]",
        markup=False,
    )
    console.print(
        f"A - B = {result['difference']:+.4f}, 95% interval [{result['low']:+.4f}, "
        f"{result['high']:+.4f}], "
        f"p(A - B <= 0) = {result['p']:.3f} over {result['draws']} draws",
        markup=False,
    )


def print_structural(result: StructuralResult, title: str) -> None:
    """The ensemble's perturbation curve and the members' areas under their KL curves."""
    table = Table(
        "level", "accuracy drop", "95% interval", "KL (nats)", "95% interval", title=title
    )
    for row in result.ensemble.itertuples():
        table.add_row(
            f"{row.level:g}",
            f"{row.acc_drop:.4f}",
            f"[{row.acc_drop_low:.4f}, {row.acc_drop_high:.4f}]",
            f"{row.kl:.4g}",
            f"[{row.kl_low:.4g}, {row.kl_high:.4g}]",
        )
    console.print(table)
    auc, ranked = result.auc_ensemble, sorted(result.auc.items(), key=lambda item: item[1])
    console.print(
        f"area under the KL curve: {auc['value']:.4g} [{auc['low']:.4g}, {auc['high']:.4g}] (mean "
        "over members); "
        f"stablest member {ranked[0][0]} ({ranked[0][1]:.4g}), least stable {ranked[-1][0]} "
        f"({ranked[-1][1]:.4g})",
        markup=False,
        soft_wrap=True,
    )


def print_sensitivity(result: SensitivityReport) -> None:
    """Whichever analyses the plan allowed: variance components, Sobol indices, influence."""
    if result.variance is not None:
        _print_variance(result.variance)
    if result.sobol is not None:
        _print_sobol(result.sobol)
    if result.influence is not None:
        _print_influence(result.influence)


def _print_variance(v: VarianceComponents) -> None:
    """Variance components: each effect's share of variance with its interval."""
    title = (
        f"variance components over {', '.join(v.factors)} ({v.replicates} per cell, "
        f"{v.diverged} diverged)"
    )
    columns = ("outcome", "effect", "share of variance", "95% interval", "share of sum of squares")
    table = Table(*columns, title=title)
    for row in v.table.itertuples():
        table.add_row(
            row.outcome,
            row.effect,
            f"{row.share:.3f}",
            f"[{row.share_low:.3f}, {row.share_high:.3f}]",
            f"{row.ss_share:.3f}",
        )
    console.print(table)


def _print_sobol(so: SobolIndices) -> None:
    """First-order and total Sobol indices with their intervals."""
    title = f"Sobol indices (N = {so.base_samples}, {so.members} members, {so.diverged} diverged)"
    table = Table("outcome", "factor", "S1", "95% interval", "ST", "95% interval", title=title)
    for row in so.table.itertuples():
        table.add_row(
            row.outcome,
            row.factor,
            f"{row.S1:.3f}",
            f"[{row.S1_low:.3f}, {row.S1_high:.3f}]",
            f"{row.ST:.3f}",
            f"[{row.ST_low:.3f}, {row.ST_high:.3f}]",
        )
    console.print(table)


def _print_influence(inf: GroupInfluence) -> None:
    """Each held-out group's effect on accuracy and on the spread."""
    title = f"leave-group-out influence (reference: {inf.reference}, {inf.split} split)"
    columns = ("group", "accuracy effect", "95% interval", "spread without", "spread with")
    table = Table(*columns, title=title)
    for row in inf.table.itertuples():
        table.add_row(
            str(row.group),
            f"{row.accuracy_effect:+.4f}",
            f"[{row.accuracy_low:+.4f}, {row.accuracy_high:+.4f}]",
            f"{row.spread_without:.4g}",
            f"{row.spread_with:.4g}",
        )
    console.print(table)


def print_suggestions(result: Suggestions, pool: str) -> None:
    """The ranked suggestions, one row each with its score and reason."""
    title = f"suggestions from {result.members} members ({pool} pool)"
    table = Table("rank", "kind", "id", "score", "reason", title=title)
    for row in result.rows.itertuples():
        table.add_row(
            str(row.rank), row.kind, str(row.id), f"{row.score:.4g} {row.unit}", row.reason
        )
    console.print(table)
