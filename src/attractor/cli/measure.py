"""Commands that measure runs and models: measure, compare, structural, sensitivity, suggest, diff."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


@app.command()
def measure(
    run_dir: RunDirArg,
    split: Annotated[str, typer.Option(help="Evaluation split: test or train.")] = "test",
    layers: Annotated[str | None, typer.Option(help="CKA layers: module names or a glob, comma-separated (default: the activations).")] = None,
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """Measure the spread of a run (function, representation, weight space, basins, LMC).

    Writes RUN_DIR/measures.parquet (one row per member or pair and measure) and
    RUN_DIR/measures.json (summary with 95% multi-bootstrap intervals).
    """
    from attractor.measure.spread import MeasureOptions, measure_ensemble, write_measures
    from attractor.runs.ensemble import Ensemble

    check_split(split)
    chosen = None if layers is None else [name.strip() for name in layers.split(",") if name.strip()]
    ens = Ensemble.load(run_dir)
    if ens.task.test_units is not None:  # a language-model run: next-token loss, JS, KL to the mean
        from attractor.cli.lm_format import format_lm_measure
        from attractor.measure.lm import measure_lm_run
        from attractor.runs.store import write_json

        lm = measure_lm_run(run_dir, split=split, draws=draws)
        write_json(ens.store.root / "measures.json", lm)
        emit_json(lm) if as_json else console.print(format_lm_measure(lm), markup=False, soft_wrap=True)
        return
    measures = measure_ensemble(ens, MeasureOptions(split=split, layers=chosen, draws=draws))  # type: ignore[arg-type]
    paths = write_measures(ens, measures)
    if as_json:
        emit_json({**measures.to_json(), "files": paths})
        return
    table = Table("measure", "value", "95% interval", title=f"{ens.config.task.name}: {len(ens.members)} members, {split} split")
    for name, estimate in measures.summary.items():
        interval = f"[{estimate['low']:.4g}, {estimate['high']:.4g}]" if "low" in estimate else ""
        table.add_row(name, f"{estimate['value']:.4g}", interval)
    console.print(table)
    b = measures.basins
    console.print(f"basins: {b.n_basins} (sizes {b.sizes}, representatives {b.representatives})", markup=False)
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)



@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="Second run directory (same task).")],
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
    result = compare_runs(Ensemble.load(run_a), Ensemble.load(run_b), metric, split, draws)  # type: ignore[arg-type]
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['metric']}: A = {result['a']:.4f} [{result['a_low']:.4f}, {result['a_high']:.4f}]  "
                  f"B = {result['b']:.4f} [{result['b_low']:.4f}, {result['b_high']:.4f}]", markup=False)
    console.print(f"A - B = {result['difference']:+.4f}, 95% interval [{result['low']:+.4f}, {result['high']:+.4f}], "
                  f"p(A - B <= 0) = {result['p']:.3f} over {result['draws']} draws", markup=False)



@app.command()
def structural(
    run_dir: RunDirArg,
    kind: Annotated[str, typer.Option(help="Perturbation: dropout, dropconnect, weight_noise or quantize.")] = "dropconnect",
    levels: Annotated[str, typer.Option(help="Comma-separated levels: drop probability in [0, 1) (dropout, dropconnect), "
                                             "noise std relative to each tensor's RMS (weight_noise), bits >= 1 (quantize).")] = "0,0.01,0.05,0.1,0.2",
    samples: Annotated[int, typer.Option(min=1, help="Sampled masks / noises per member and level (quantize is deterministic: 1).")] = 8,
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
    from attractor.measure.structural import perturbation_curves, write_structural
    from attractor.runs.ensemble import Ensemble

    check_split(split)
    ens = Ensemble.load(run_dir)
    x, y = ens.eval_set(split)
    result = perturbation_curves(ens, kind, number_list(levels, "--levels"), samples=samples, x=x, y=y, seed=seed, draws=draws)
    paths = write_structural(ens, result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    table = Table("level", "accuracy drop", "95% interval", "KL (nats)", "95% interval",
                  title=f"{ens.config.task.name}: {kind}, {len(ens.members)} members x {result.samples} samples, {split} split")
    for row in result.ensemble.itertuples():
        table.add_row(f"{row.level:g}", f"{row.acc_drop:.4f}", f"[{row.acc_drop_low:.4f}, {row.acc_drop_high:.4f}]",
                      f"{row.kl:.4g}", f"[{row.kl_low:.4g}, {row.kl_high:.4g}]")
    console.print(table)
    auc, ranked = result.auc_ensemble, sorted(result.auc.items(), key=lambda item: item[1])
    console.print(f"area under the KL curve: {auc['value']:.4g} [{auc['low']:.4g}, {auc['high']:.4g}] (mean over members); "
                  f"stablest member {ranked[0][0]} ({ranked[0][1]:.4g}), least stable {ranked[-1][0]} ({ranked[-1][1]:.4g})", markup=False, soft_wrap=True)
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
        table = Table("outcome", "effect", "share of variance", "95% interval", "share of sum of squares",
                      title=f"variance components over {', '.join(v.factors)} ({v.replicates} per cell, {v.diverged} diverged)")
        for row in v.table.itertuples():
            table.add_row(row.outcome, row.effect, f"{row.share:.3f}", f"[{row.share_low:.3f}, {row.share_high:.3f}]", f"{row.ss_share:.3f}")
        console.print(table)
    if result.sobol is not None:
        so = result.sobol
        table = Table("outcome", "factor", "S1", "95% interval", "ST", "95% interval",
                      title=f"Sobol indices (N = {so.base_samples}, {so.members} members, {so.diverged} diverged)")
        for row in so.table.itertuples():
            table.add_row(row.outcome, row.factor, f"{row.S1:.3f}", f"[{row.S1_low:.3f}, {row.S1_high:.3f}]",
                          f"{row.ST:.3f}", f"[{row.ST_low:.3f}, {row.ST_high:.3f}]")
        console.print(table)
    if result.influence is not None:
        inf = result.influence
        table = Table("group", "accuracy effect", "95% interval", "spread without", "spread with",
                      title=f"leave-group-out influence (reference: {inf.reference}, {inf.split} split)")
        for row in inf.table.itertuples():
            table.add_row(str(row.group), f"{row.accuracy_effect:+.4f}", f"[{row.accuracy_low:+.4f}, {row.accuracy_high:+.4f}]",
                          f"{row.spread_without:.4g}", f"{row.spread_with:.4g}")
        console.print(table)
    console.print("wrote " + ", ".join(sorted(set(paths.values()))), markup=False, soft_wrap=True)



@app.command()
def suggest(
    run_dir: RunDirArg,
    k: Annotated[int, typer.Option("--k", min=1, help="Rows per kind (examples, groups, training examples).")] = 20,
    pool: Annotated[str, typer.Option(help="Examples to rank: the task's test or train split.")] = "test",
    draws: DrawsOption = 500,
    as_json: JsonFlag = False,
) -> None:
    """What a human should label, check or rewrite next: the examples the members disagree on most
    (mutual information), the data groups that move the spread most, with a reason per row.

    Writes RUN_DIR/suggestions.parquet / .json.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.sensitivity import suggest as suggest_rows
    from attractor.sensitivity import write_suggestions

    check_split(pool, "--pool")
    ens = Ensemble.load(run_dir)
    result = suggest_rows(ens, k=k, pool=pool, draws=draws)
    paths = write_suggestions(ens, result)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    table = Table("rank", "kind", "id", "score", "reason", title=f"suggestions from {result.members} members ({pool} pool)")
    for row in result.rows.itertuples():
        table.add_row(str(row.rank), row.kind, str(row.id), f"{row.score:.4g} {row.unit}", row.reason)
    console.print(table)
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)



@app.command()
def diff(
    model_a: Annotated[str, typer.Argument(metavar="A", help="Model spec: RUN_DIR:MEMBER[:STEP], RUN_DIR:mean, or FILE.safetensors (with --task); "
                                                         "append @noise=1e-3, @dropout=0.1, @dropconnect=0.05, @prune=0.2, @fp16 or @int8 for a perturbed copy.")],
    model_b: Annotated[str | None, typer.Argument(metavar="[B]", help="Second model spec (same task shapes); omit it, with A a run directory, "
                                                                     "to search where that run's members spread most.")] = None,
    eps: Annotated[float | None, typer.Option(help="Radius of the L-infinity balls around test points; omit for the training data's whole box.")] = 0.05,
    points: Annotated[int, typer.Option(min=1, help="Test points (ball centres).")] = 20,
    objective: Annotated[str, typer.Option(help="Search objective: js, kl, symmetric_kl, logit, logit:K or margin.")] = "js",
    delta: Annotated[float | None, typer.Option(help="Threshold on the largest logit difference: verified / falsified / unknown per point.")] = None,
    budget: Annotated[float, typer.Option(help="Branch-and-bound seconds per point (0: one-shot bound only).")] = 10.0,
    method: Annotated[str, typer.Option(help="Certificate bounds: auto, differential, linear, optimized or interval.")] = "auto",
    task: Annotated[str | None, typer.Option(help="Task for safetensors files: a run dir, a config TOML or a task name.")] = None,
    centers: Annotated[Path | None, typer.Option(help="A .npy file [points, *input_shape] of ball centres instead of the test inputs.")] = None,
    clip: Annotated[bool, typer.Option("--clip/--no-clip", help="Intersect the balls with the training data's range.")] = True,
    restarts: Annotated[int, typer.Option(min=1, help="PGD restarts per point.")] = 8,
    steps: Annotated[int, typer.Option(min=0, help="PGD steps per restart.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the random starts and samples.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for diff.json and diff.html (default: A's run directory, else runs/diff).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Where do two models disagree? A search from below, a certificate from above.

    PGD (vs random sampling at the same budget) finds the inputs where A and B disagree
    most; for Linear/ReLU networks branch and bound certifies how far their logits can
    differ over each ball, with the gap to the best input found. With A a run directory
    and no B: the inputs where its members spread most (objective mi or pairwise_js).
    Writes OUT/diff.json and OUT/diff.html; `attractor report` on that run shows it too.
    """
    from attractor.experiments.diff import compare_models, ensemble_spread, write_disagreement

    if eps is not None and not eps >= 0:
        raise UserError(f"--eps must be >= 0, got {eps}")
    if model_b is None:
        if not (Path(model_a) / "manifest.json").is_file():
            raise UserError(f"with one argument A must be a run directory (to search where its members spread); '{model_a}' is not one")
        spread_objective = "mi" if objective == "js" else objective
        result = ensemble_spread(model_a, eps=eps, points=points, objective=spread_objective, centers=centers, clip=clip,
                                 restarts=restarts, steps=steps, seed=seed)
        model_a = f"{model_a}:mean"  # the output folder below is the run's
    else:
        result = compare_models(model_a, model_b, task=task, eps=eps, points=points, objective=objective, delta=delta,
                                budget_s=budget, method=method, restarts=restarts, steps=steps, seed=seed, centers=centers, clip=clip)
    if out is None:
        run = Path(model_a.split("@")[0].rsplit(":", 1)[0]) if ":" in model_a.split("@")[0] else None
        out = run if run is not None and (run / "manifest.json").is_file() else Path("runs/diff")
    paths = write_disagreement(result, out)
    if as_json:
        emit_json({**result.to_dict(), "files": paths})
        return
    s = result.summary()
    console.print(f"search ({s['objective']}): best {s['search_best']:.4g} (PGD) vs {s['baseline_best']:.4g} (random), "
                  f"mean per point {s['search_mean_per_point']:.4g} vs {s['baseline_mean_per_point']:.4g}, {s['evaluations']} evaluations each", markup=False, soft_wrap=True)
    if result.certificate is None:
        console.print(f"no certificate: {result.certify_note}", markup=False, soft_wrap=True)
    else:
        cert = result.certificate
        table = Table("point", "certified upper", "attained lower", "gap", "verdict", title="max over outputs of |f_B - f_A| (logits) per ball")
        for i, (up, low, verdict) in enumerate(zip(cert.upper.tolist(), cert.lower.tolist(), cert.verdicts, strict=True)):
            table.add_row(str(i), f"{up:.4g}", f"{low:.4g}", f"{up - low:.3g}", verdict)
        console.print(table)
        per = Table("output", "certified interval of f_B - f_A", "attained range", title="per output, over all balls")
        for row in result.per_output.itertuples():
            per.add_row(str(row.output), f"[{row.certified_low:.4g}, {row.certified_high:.4g}]", f"[{row.attained_low:.4g}, {row.attained_high:.4g}]")
        console.print(per)
    console.print(f"wrote {paths['json']} and {paths['html']}", markup=False, soft_wrap=True)

