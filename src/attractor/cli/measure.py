"""Commands that measure runs and models: measure, compare, structural, sensitivity, suggest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from attractor.cli._shared import (
    DrawsOption,
    JsonFlag,
    RunDirArg,
    app,
    check_split,
    console,
    emit_json,
    number_list,
)
from attractor.errors import UserError

if TYPE_CHECKING:
    from attractor.measure.lm import LMMeasures
    from attractor.measure.spread import Measures


@app.command()
def measure(
    run_dir: RunDirArg,
    split: Annotated[str, typer.Option(help="Evaluation split: test or train.")] = "test",
    layers: Annotated[
        str | None,
        typer.Option(
            help="CKA layers: module names or a glob, comma-separated (default: the activations)."
        ),
    ] = None,
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """Measure the spread of a run (function, representation, weight space, basins, LMC).

    Writes RUN_DIR/measures.parquet (one row per member or pair and measure) and
    RUN_DIR/measures.json (summary with 95% multi-bootstrap intervals).
    """
    from attractor.measure.dispatch import measure_run
    from attractor.measure.spread import MeasureOptions
    from attractor.runs.ensemble import Ensemble

    check_split(split)
    chosen = (
        None if layers is None else [name.strip() for name in layers.split(",") if name.strip()]
    )
    ens = Ensemble.load(run_dir)
    options = MeasureOptions(split=split, layers=chosen, draws=draws)  # type: ignore[arg-type]
    measures = measure_run(ens, options)
    paths = ens.store.write(measures)
    title = f"{ens.config.task.name}: {len(ens.members)} members, {split} split"
    _PRINTERS[measures.kind](measures, paths, title, as_json)


def _print_measures(measures: Measures, paths: dict[str, str], title: str, as_json: bool) -> None:
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
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)


def _print_lm_measures(
    measures: LMMeasures, paths: dict[str, str], title: str, as_json: bool
) -> None:
    """A language-model run's next-token loss, JS and KL to the mean (as `lm` prints them)."""
    from attractor.cli.lm import format_lm_measure

    data = measures.to_json()
    emit_json(data) if as_json else console.print(
        format_lm_measure(data), markup=False, soft_wrap=True
    )


#: How each kind of spread measures is shown (:func:`attractor.measure.dispatch.measure_run`).
_PRINTERS: dict[str, Callable[[Any, dict[str, str], str, bool], None]] = {
    "measures": _print_measures,
    "lm-measures": _print_lm_measures,
}


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="First run directory.")],
    run_b: Annotated[
        Path, typer.Argument(metavar="RUN_B", help="Second run directory (same task).")
    ],
    metric: Annotated[str, typer.Option(help="accuracy or loss.")] = "accuracy",
    split: Annotated[str, typer.Option(help="Evaluation split: test or train.")] = "test",
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """Compare two runs of the same task with a paired multi-bootstrap (A minus B)."""
    from attractor.measure.compare import compare_runs
    from attractor.runs.ensemble import Ensemble

    if metric not in ("accuracy", "loss"):
        raise UserError(f"--metric must be 'accuracy' or 'loss', not '{metric}'")
    check_split(split)
    runs = Ensemble.load(run_a), Ensemble.load(run_b)
    result = compare_runs(*runs, metric, split, draws)  # type: ignore[arg-type]
    if as_json:
        emit_json(result)
        return
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


@app.command()
def structural(
    run_dir: RunDirArg,
    kind: Annotated[
        str, typer.Option(help="Perturbation: dropout, dropconnect, weight_noise or quantize.")
    ] = "dropconnect",
    levels: Annotated[
        str,
        typer.Option(
            help="Comma-separated levels: drop probability in [0, 1) (dropout, dropconnect), "
            "noise std relative to each tensor's RMS (weight_noise), bits >= 1 (quantize)."
        ),
    ] = "0,0.01,0.05,0.1,0.2",
    samples: Annotated[
        int,
        typer.Option(
            min=1,
            help="Sampled masks / noises per member and level (quantize is deterministic: 1).",
        ),
    ] = 8,
    split: Annotated[str, typer.Option(help="Evaluation split: test or train.")] = "test",
    seed: Annotated[int, typer.Option(help="Seed of the masks and noises.")] = 0,
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """Structural stability: accuracy drop and KL to the unperturbed member vs perturbation level.

    Writes RUN_DIR/structural-KIND.parquet (one row per member and level, 95% t intervals
    over samples) and RUN_DIR/structural-KIND.json (with the ensemble curve, 95% multi-bootstrap
    intervals over members and samples, and each member's area under the KL curve).
    """
    from attractor.measure.structural import perturbation_curves
    from attractor.runs.ensemble import Ensemble

    check_split(split)
    ens = Ensemble.load(run_dir)
    x, y = ens.eval_set(split)
    result = perturbation_curves(
        ens,
        kind,
        number_list(levels, "--levels"),
        samples=samples,
        x=x,
        y=y,
        seed=seed,
        draws=draws,
    )
    paths = ens.store.write(result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    table = Table(
        "level",
        "accuracy drop",
        "95% interval",
        "KL (nats)",
        "95% interval",
        title=(
            f"{ens.config.task.name}: {kind}, {len(ens.members)} members x {result.samples} "
            f"samples, {split} split"
        ),
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
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)


@app.command()
def sensitivity(
    run_dir: RunDirArg,
    draws: DrawsOption = 500,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap draws.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Which factor of the plan drives the spread: variance components, Sobol indices, group influence.

    Variance components need a factorial or grid plan of crossed factors, Sobol indices a
    sobol plan, group influence a plan that varies holdout_group; whichever apply are
    computed and written to RUN_DIR/sensitivity-*.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity import analyze, write_sensitivity

    ens = Ensemble.load(run_dir)
    result = analyze(ens, draws=draws, seed=seed)
    paths = write_sensitivity(ens, result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    if result.variance is not None:
        v = result.variance
        table = Table(
            "outcome",
            "effect",
            "share of variance",
            "95% interval",
            "share of sum of squares",
            title=(
                f"variance components over {', '.join(v.factors)} ({v.replicates} per cell, "
                f"{v.diverged} diverged)"
            ),
        )
        for row in v.table.itertuples():
            table.add_row(
                row.outcome,
                row.effect,
                f"{row.share:.3f}",
                f"[{row.share_low:.3f}, {row.share_high:.3f}]",
                f"{row.ss_share:.3f}",
            )
        console.print(table)
    if result.sobol is not None:
        so = result.sobol
        table = Table(
            "outcome",
            "factor",
            "S1",
            "95% interval",
            "ST",
            "95% interval",
            title=(
                f"Sobol indices (N = {so.base_samples}, {so.members} members, {so.diverged} "
                "diverged)"
            ),
        )
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
    if result.influence is not None:
        inf = result.influence
        table = Table(
            "group",
            "accuracy effect",
            "95% interval",
            "spread without",
            "spread with",
            title=f"leave-group-out influence (reference: {inf.reference}, {inf.split} split)",
        )
        for row in inf.table.itertuples():
            table.add_row(
                str(row.group),
                f"{row.accuracy_effect:+.4f}",
                f"[{row.accuracy_low:+.4f}, {row.accuracy_high:+.4f}]",
                f"{row.spread_without:.4g}",
                f"{row.spread_with:.4g}",
            )
        console.print(table)
    console.print("wrote " + ", ".join(sorted(set(paths.values()))), markup=False, soft_wrap=True)


@app.command()
def suggest(
    run_dir: RunDirArg,
    k: Annotated[
        int, typer.Option("--k", min=1, help="Rows per kind (examples, groups, training examples).")
    ] = 20,
    pool: Annotated[
        str, typer.Option(help="Examples to rank: the task's test or train split.")
    ] = "test",
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """What a human should label, check or rewrite next: the examples the members disagree on most
    (mutual information), the data groups that move the spread most, with a reason per row.

    Writes RUN_DIR/suggestions.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity import suggest as suggest_rows

    check_split(pool, "--pool")
    ens = Ensemble.load(run_dir)
    result = suggest_rows(ens, k=k, pool=pool, draws=draws)
    paths = ens.store.write(result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    table = Table(
        "rank",
        "kind",
        "id",
        "score",
        "reason",
        title=f"suggestions from {result.members} members ({pool} pool)",
    )
    for row in result.rows.itertuples():
        table.add_row(
            str(row.rank), row.kind, str(row.id), f"{row.score:.4g} {row.unit}", row.reason
        )
    console.print(table)
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)
