"""Commands that measure runs and models: measure, compare, structural, sensitivity, suggest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from attractor.cli._shared import (
    DeviceOption,
    DrawsOption,
    JsonFlag,
    RunDirArg,
    app,
    check_split,
    console,
    emit_json,
    number_list,
)
from attractor.cli.show import (
    print_comparison,
    print_lm_measures,
    print_measures,
    print_sensitivity,
    print_structural,
    print_suggestions,
    print_wrote,
)
from attractor.errors import UserError

if TYPE_CHECKING:
    from attractor.measure.verdict import Verdict


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
    lmc_repair: Annotated[
        str,
        typer.Option(
            help="BatchNorm statistics of each network on the LMC paths: reset (recompute on "
            "training data; nothing to do without BatchNorm), repair (REPAIR: also match each "
            "unit's mean and std to the ends') or none."
        ),
    ] = "reset",
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Measure the spread of a run (function, representation, weight space, basins, LMC).

    Writes RUN_DIR/measures.parquet (one row per member or pair and measure) and
    RUN_DIR/measures.json (summary with 95% multi-bootstrap intervals).
    """
    from attractor.measure.dispatch import measure_run
    from attractor.measure.repair import REPAIRS
    from attractor.measure.spread import MeasureOptions
    from attractor.measure.verdict import run_verdict
    from attractor.runs.ensemble import Ensemble

    check_split(split)
    if lmc_repair not in REPAIRS:
        raise UserError(f"--lmc-repair must be one of {', '.join(REPAIRS)}, not '{lmc_repair}'")
    chosen = (
        None if layers is None else [name.strip() for name in layers.split(",") if name.strip()]
    )
    ens = Ensemble.load(run_dir, device=device)
    options = MeasureOptions(
        split=split,  # type: ignore[arg-type]
        layers=chosen,
        draws=draws,
        lmc_repair=lmc_repair,
    )
    measures = measure_run(ens, options, progress=not as_json)
    paths = ens.store.write(measures)
    # Read back from the directory, as `info` and the report do: the new measures together
    # with whatever else the run holds (a sensitivity result answers "what drives it").
    found = run_verdict(ens)
    if as_json:
        emit_json({**measures.to_json(), "files": paths, "verdict": found.to_json()})
        return
    title = f"{ens.config.task.name}: {len(ens.members)} members, {split} split"
    _PRINTERS[measures.kind](measures, paths, title, as_json)
    print_verdict(found)


def print_verdict(found: Verdict) -> None:
    """The verdict's lines (``[status] answer — yardstick``), then the thresholds used."""
    console.print("verdict:", markup=False)
    for text in found.text():
        console.print(f"  {text}", markup=False, soft_wrap=True)


#: How each kind of spread measures is shown (:func:`attractor.measure.dispatch.measure_run`).
_PRINTERS: dict[str, Callable[[Any, dict[str, str], str, bool], None]] = {
    "measures": print_measures,
    "lm-measures": print_lm_measures,
}


CompareOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Directory of the comparison page: report.html, compare.json, compare.parquet "
        "(default: runs/compare-<hash of the two runs and settings>; never either run's "
        "directory).",
    ),
]
CompareForceFlag = Annotated[
    bool,
    typer.Option("--force", help="Delete OUT first if it holds another experiment or settings."),
]


def compare_report(
    run_a: Path,
    run_b: Path,
    out: Path | None,
    force: bool,
    split: str = "test",
    draws: int = 500,
    device: str = "cpu",
    as_json: bool = False,
    static: bool = False,
) -> None:
    """Write the comparison page of two runs in a directory of its own and say what it found
    (``attractor report RUN_A RUN_B`` and ``attractor compare --report``); ``static``: PNG
    figures only, no scripts.
    """
    from attractor.cli.experiments import emit_result, settings_of
    from attractor.experiments.two_runs import CompareSettings, run_compare
    from attractor.report import render_directory

    check_split(split)
    settings = settings_of(
        CompareSettings, a=str(run_a), b=str(run_b), split=split, draws=draws, device=device
    )
    store, result = run_compare(settings, out, force=force, progress=not as_json)
    page = render_directory(store.root, progress=not as_json, static=static)
    files = {"json": str(store.root / "compare.json"), "html": str(page)}
    if as_json:
        emit_result(result, files)
        return
    _print_run_comparison(result.runs, result.table)
    console.print(f"report: {page}", markup=False, soft_wrap=True)


def _print_run_comparison(runs: dict[str, dict[str, Any]], paired: Any) -> None:
    """Which run is which, then each measure's plain reading (A, B and A - B are on the page)."""
    for label in ("A", "B"):
        info = runs[label]
        console.print(
            f"{label}: {info['path']} ({info['done']} members)", markup=False, soft_wrap=True
        )
    for text in paired["reading"]:
        console.print(text, markup=False, soft_wrap=True)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="First run directory.")],
    run_b: Annotated[
        Path, typer.Argument(metavar="RUN_B", help="Second run directory (same task).")
    ],
    metric: Annotated[str, typer.Option(help="accuracy or loss.")] = "accuracy",
    split: Annotated[str, typer.Option(help="Evaluation split: test or train.")] = "test",
    draws: DrawsOption = 500,
    device: DeviceOption = "cpu",
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write the comparison page (both runs side by side, paired intervals of "
            "accuracy and spread) in a directory of its own, as `attractor report RUN_A RUN_B`.",
        ),
    ] = False,
    out: CompareOutOption = None,
    force: CompareForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare two runs of the same task with a paired multi-bootstrap (A minus B)."""
    from attractor.measure.compare import compare_runs
    from attractor.runs.ensemble import Ensemble

    if metric not in ("accuracy", "loss"):
        raise UserError(f"--metric must be 'accuracy' or 'loss', not '{metric}'")
    check_split(split)
    if report:
        compare_report(run_a, run_b, out, force, split, draws, device, as_json)
        return
    if out is not None or force:
        raise UserError("--out and --force go with --report (the comparison page's directory)")
    runs = Ensemble.load(run_a, device=device), Ensemble.load(run_b, device=device)
    result = compare_runs(*runs, metric, split, draws)  # type: ignore[arg-type]
    emit_json(result) if as_json else print_comparison(result)


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
    device: DeviceOption = "cpu",
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
    ens = Ensemble.load(run_dir, device=device)
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
    title = (
        f"{ens.config.task.name}: {kind}, {len(ens.members)} members x {result.samples} "
        f"samples, {split} split"
    )
    print_structural(result, title)
    print_wrote(paths)


@app.command()
def sensitivity(
    run_dir: RunDirArg,
    draws: DrawsOption = 500,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap draws.")] = 0,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Which factor of the plan drives the spread:
    variance components, Sobol indices, group influence.

    Variance components need a factorial or grid plan of crossed factors, Sobol indices a
    sobol plan, group influence a plan that varies holdout_group; whichever apply are
    computed and written to RUN_DIR/sensitivity-*.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity import analyze, write_sensitivity

    ens = Ensemble.load(run_dir, device=device)
    result = analyze(ens, draws=draws, seed=seed)
    paths = write_sensitivity(ens, result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    print_sensitivity(result)
    console.print("wrote " + ", ".join(sorted(set(paths.values()))), markup=False, soft_wrap=True)


@app.command("seed-advice")
def seed_advice_command(
    run_dir: RunDirArg,
    draws: DrawsOption = 500,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Which basin is the majority, and from which snapshot step a member's final basin can
    be read off its predictions (so unpromising seeds can be stopped early).

    Basins from the final pairwise JS; at each step, every member's nearest basin centroid
    of the other members; accuracy with a bootstrap interval against chance. Writes
    RUN_DIR/seed-advice.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity.seed_advice import TARGET, seed_advice

    ens = Ensemble.load(run_dir, device=device)
    result = seed_advice(ens, draws=draws)
    paths = ens.store.write(result)
    if as_json:
        emit_json({**result.to_json(), "files": paths})
        return
    console.print(
        f"{result.basins} basin(s); the majority (basin {result.majority}) holds "
        f"{100 * result.share:.0f} % of the members",
        markup=False,
        soft_wrap=True,
    )
    when = (
        f"from step {result.readable} on the final basin is predicted right >= "
        f"{100 * TARGET:.0f} % of the time"
        if result.readable is not None
        else "no snapshot step predicts the final basins that well"
    )
    console.print(when, markup=False, soft_wrap=True)
    print_wrote(paths)


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
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """What a human should label, check or rewrite next: the examples the members disagree on most
    (mutual information), the data groups that move the spread most, with a reason per row.

    Writes RUN_DIR/suggestions.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity import suggest as suggest_rows

    check_split(pool, "--pool")
    ens = Ensemble.load(run_dir, device=device)
    result = suggest_rows(ens, k=k, pool=pool, draws=draws)
    paths = ens.store.write(result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    print_suggestions(result, pool)
    print_wrote(paths)
