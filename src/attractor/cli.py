"""`attractor` command line: a thin shell over the library. Every command takes ``--json``.

Bad input never ends in a traceback: a :class:`UserError` prints one line and exits 2.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attractor.config import Config, load_config
from attractor.errors import UserError

try:  # typer >= 0.20 vendors click; older typer re-raises click's own exceptions
    from typer import TyperException as _CliError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException as _CliError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown", help="Measure and improve the stability of training runs.")
console = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ConfigArg = Annotated[Path, typer.Argument(metavar="CONFIG", help="TOML config file with tables task, trainer, plan, run (samples in examples/, every key in the README's config reference).")]

DEMO_CONFIG: dict[str, Any] = {
    "task": {"name": "digits-mlp", "hidden": [128, 128]},
    "trainer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 10},
    "plan": {"members": 32, "design": "random", "seed": 0, "vary": ["init_seed", "data_seed", "bootstrap"]},
    "run": {"strategy": "auto", "snapshots": 8},
}


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def tasks(as_json: JsonFlag = False) -> None:
    """List the built-in tasks and their options."""
    from attractor.tasks import list_tasks

    found = list_tasks()
    if as_json:
        _emit_json([{"name": n, "summary": s, "options": o} for n, s, o in found])
        return
    table = Table("task", "summary", "options (defaults)")
    for name, summary, options in found:
        table.add_row(name, summary, ", ".join(f"{k}={v}" for k, v in options.items()))
    console.print(table)
    console.print("Your own task: [task] name = 'package.module:function' (a function returning attractor.Task).", markup=False, soft_wrap=True)


@app.command(epilog="Every config key with its default and meaning: the README's 'Config reference', or `python -m attractor.reference`.")
def plan(config: ConfigArg, as_json: JsonFlag = False) -> None:
    """Print the resolved config (every default filled in) and the plan table it makes."""
    from attractor.plan import build_plan, describe_plan
    from attractor.tasks import build_task

    cfg = load_config(config)
    task = build_task(cfg.task)
    table = build_plan(cfg.plan, cfg.trainer, task.group_ids)
    if as_json:
        _emit_json({"config": cfg.resolved(), "config_hash": cfg.hash(), "plan_hash": table.hash(), "plan": table.table.to_dict("records")})
        return
    console.print_json(json.dumps(cfg.resolved()))
    typer.echo(describe_plan(table))


def _train_and_summarize(cfg: Config, out: Path, force: bool, as_json: bool) -> dict[str, Any]:
    from attractor.measure import summarize
    from attractor.training.run import train

    ens = train(cfg, out, force=force, progress=not as_json)
    return summarize(ens)


def _print_summary(summary: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(summary['task'])}[/bold] ensemble in {escape(summary['run'])}: "
                  f"{summary['done']} done, {summary['diverged']} diverged, {summary['pending']} pending of {summary['members']}",
                  soft_wrap=True)
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        if key in summary:
            s = summary[key]
            console.print(f"  {label:<22} {s['mean']:.4f} ± {s['sd']:.4f} (sd over members; min {s['min']:.4f}, max {s['max']:.4f})",
                          soft_wrap=True)
    if "pairwise_disagreement" in summary:
        d = summary["pairwise_disagreement"]
        console.print(f"  {'pairwise disagreement':<22} {d['mean']:.4f} mean over pairs (max {d['max']:.4f}) of test predictions",
                      soft_wrap=True)


@app.command()
def run(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create, or to resume if it holds this config's run.")],
    force: Annotated[bool, typer.Option("--force", help="Delete a run directory made from another config and start over.")] = False,
    backend: Annotated[str | None, typer.Option("--backend", help="Where chunks run: local | process | ray (overrides run.backend; a run may resume under another backend).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="process: pool size; ray: CPUs of the local Ray instance (overrides run.workers).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="ray: HOST:PORT of a running cluster (`ray start --head`); without it a local Ray instance starts.")] = None,
    track: Annotated[str | None, typer.Option("--track", help="Also record the run in a tracker: mlflow (extra `mlflow`).")] = None,
    track_uri: Annotated[str | None, typer.Option("--track-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite mlflow.db beside --out).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train every member of CONFIG's plan into the run directory --out (resumes an interrupted run)."""
    from attractor.config import parse_config
    from attractor.errors import require

    cfg = load_config(config)
    if track not in (None, "mlflow"):
        raise UserError(f"--track takes 'mlflow', not '{track}'")
    # Options override the config's [run] / [track] keys and are validated like them.
    data = cfg.resolved()
    data["run"].update({k: v for k, v in {"backend": backend, "workers": workers, "ray_address": ray_address}.items() if v is not None})
    data["track"].update({k: v for k, v in {"mlflow": True if track else None, "uri": track_uri}.items() if v is not None})
    cfg = parse_config(data, source="options")
    if cfg.track.mlflow:
        require("mlflow", "mlflow")  # refuse before anything is trained or written
    summary = _train_and_summarize(cfg, out, force, as_json)
    if cfg.track.mlflow:
        from attractor.tracking import log_run

        summary["mlflow_run_id"] = log_run(out, cfg.track)
    _emit_json(summary) if as_json else _print_summary(summary)


def _status_table(plan: Any) -> str:
    """The plan's member column, the factors that vary, and each member's status."""
    meta = ("member", "status", "diverged_step")
    varying = [c for c in plan.columns if c not in meta and plan[c].astype(str).nunique() > 1]
    diverged = ["diverged_step"] if plan["diverged_step"].notna().any() else []
    return plan[["member", *varying, "status", *diverged]].to_string(index=False, max_rows=20)


@app.command()
def info(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory made by `attractor run` or `attractor demo`.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a run directory: member status, final metrics and the plan (--json adds the full config)."""
    from attractor.ensemble import Ensemble
    from attractor.measure import summarize

    ens = Ensemble.load(run_dir)
    summary = summarize(ens)
    if as_json:
        _emit_json({"summary": summary, "config": ens.config.resolved(), "manifest": {k: v for k, v in ens.manifest.items() if k != "config"}})
        return
    _print_summary(summary)
    typer.echo(f"  config hash {ens.manifest['config_hash']}, plan hash {ens.manifest['plan_hash']}, strategy {ens.manifest.get('strategy')}")
    typer.echo(_status_table(ens.plan))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the demo ensemble.")] = Path("runs/demo"),
    members: Annotated[int, typer.Option(min=1, help="Ensemble members.")] = 32,
    force: Annotated[bool, typer.Option("--force", help="Replace a run directory made from another config.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train the built-in demo (digits-mlp members perturbed in init, data order and bootstrap), measure it, write its report."""
    from attractor.config import parse_config

    data = json.loads(json.dumps(DEMO_CONFIG))
    data["plan"]["members"] = members
    summary = _train_and_summarize(parse_config(data, source="demo"), out, force, as_json)
    summary["report"] = str(_measure_and_report(out, as_json)) if summary["done"] >= 2 else None
    _emit_json(summary) if as_json else _print_summary(summary)
    if summary["report"] and not as_json:
        console.print(f"report: {summary['report']}", markup=False, soft_wrap=True)


def _check_split(split: str, option: str = "--split") -> None:
    if split not in ("test", "train"):
        raise UserError(f"{option} must be 'test' or 'train', not '{split}'")


def _number_list(text: str, option: str, cast: type[int] | type[float] = float) -> list:
    """Comma-separated numbers of an option, or one line naming the option and the format."""
    try:
        return [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        kind = "whole numbers like 0,5,20,100" if cast is int else "numbers like 0,0.01,0.05,0.1,0.2"
        raise UserError(f"{option} takes comma-separated {kind}, not '{text}'") from None


RunDirArg = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory written by `attractor run`.")]
DrawsOption = Annotated[int, typer.Option(min=1, help="Multi-bootstrap draws for the 95% intervals.")]


def _measure_and_report(run_dir: Path, quiet: bool) -> Path:
    from attractor.ensemble import Ensemble
    from attractor.measure.spread import measure_ensemble, write_measures
    from attractor.report import render_report

    ens = Ensemble.load(run_dir)
    with console.status("measuring the ensemble", spinner="dots") if not quiet else nullcontext():
        measures = measure_ensemble(ens)
        write_measures(ens, measures)
        data = measures.report_data()
        # Perturbation curves written earlier by `attractor structural` join the report.
        structural = [json.loads(p.read_text()) for p in sorted(ens.store.root.glob("structural-*.json"))]
        if structural:
            data["structural"] = structural
        sensitivity = {name: json.loads(path.read_text()) for name in ("variance", "sobol", "influence")
                       if (path := ens.store.root / f"sensitivity-{name}.json").is_file()}
        if sensitivity:
            data["sensitivity"] = sensitivity
        if (ens.store.root / "tangent.json").is_file():  # written by `attractor tangent`
            data["tangent"] = json.loads((ens.store.root / "tangent.json").read_text())
        if (ens.store.root / "diff.json").is_file():  # written by `attractor diff` on a member of this run
            data["disagreement"] = json.loads((ens.store.root / "diff.json").read_text())
        return render_report(ens, data, ens.store.root / "report.html")


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
    from attractor.ensemble import Ensemble
    from attractor.measure.spread import MeasureOptions, measure_ensemble, write_measures

    _check_split(split)
    chosen = None if layers is None else [name.strip() for name in layers.split(",") if name.strip()]
    ens = Ensemble.load(run_dir)
    measures = measure_ensemble(ens, MeasureOptions(split=split, layers=chosen, draws=draws))  # type: ignore[arg-type]
    paths = write_measures(ens, measures)
    if as_json:
        _emit_json({**measures.to_json(), "files": paths})
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
    from attractor.ensemble import Ensemble
    from attractor.measure.compare import compare_runs

    if metric not in ("accuracy", "loss"):
        raise UserError(f"--metric must be 'accuracy' or 'loss', not '{metric}'")
    _check_split(split)
    result = compare_runs(Ensemble.load(run_a), Ensemble.load(run_b), metric, split, draws)  # type: ignore[arg-type]
    if as_json:
        _emit_json(result)
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
    from attractor.ensemble import Ensemble
    from attractor.measure.structural import perturbation_curves, write_structural

    _check_split(split)
    ens = Ensemble.load(run_dir)
    x, y = ens.eval_set(split)
    result = perturbation_curves(ens, kind, _number_list(levels, "--levels"), samples=samples, x=x, y=y, seed=seed, draws=draws)
    paths = write_structural(ens, result)
    if as_json:
        _emit_json({**result.to_dict(), "files": paths})
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
def instability(
    config: ConfigArg,
    spawn_steps: Annotated[str, typer.Option("--spawn-steps", help="Steps k to spawn copies at, comma-separated (each below the run's length).")],
    pairs: Annotated[int, typer.Option(min=2, help="Pairs of copies per spawn step (for the interval).")] = 4,
    threshold: Annotated[float, typer.Option(help="Error barrier below which copies count as stable (0.02 = 2 % error).")] = 0.02,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for instability.parquet / .json.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Instability analysis (Frankle et al. 2020): from which step on do copies land in one basin?

    Trains one parent with CONFIG's task and trainer, spawns pairs of copies at every
    spawn step that continue with different data orders, and measures the error barrier
    on the linear path between the two copies of each pair at the end of training.
    """
    from attractor.measure.instability import instability_analysis

    result = instability_analysis(load_config(config), _number_list(spawn_steps, "--spawn-steps", int), pairs, threshold, out=out)
    if as_json:
        _emit_json(result.to_dict())
        return
    table = Table("spawn step k", "error barrier (mean)", "95% interval", title=f"instability over {result.total_steps} steps, {pairs} pairs per k")
    for row in result.summary.itertuples():
        table.add_row(str(row.spawn_step), f"{row.barrier_error_mean:.2%}", f"[{row.barrier_error_ci_low:.2%}, {row.barrier_error_ci_high:.2%}]")
    console.print(table)
    onset = "never (within the spawn steps)" if result.onset is None else f"k = {result.onset}"
    console.print(f"stable (barrier below {threshold:.1%} from then on): {onset}; by the upper bound: "
                  f"{'never' if result.onset_upper is None else f'k = {result.onset_upper}'}", markup=False)
    if out is not None:
        console.print(f"wrote {out}/instability.parquet and instability.json", markup=False, soft_wrap=True)


def _lr_range(text: str) -> list[float]:
    """``LOW:HIGH:N`` → N log-spaced learning rates from LOW to HIGH (both included)."""
    import numpy as np

    parts = text.split(":")
    try:
        low, high, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(f"--lr takes LOW:HIGH:N like 1e-3:1:13 (N log-spaced learning rates), not '{text}'") from None
    if not (0 < low < high) or n < 2:
        raise UserError(f"--lr needs 0 < LOW < HIGH and N >= 2, got '{text}'")
    return [float(v) for v in np.logspace(np.log10(low), np.log10(high), n)]


@app.command("hparam-map")
def hparam_map_command(
    config: ConfigArg,
    lr: Annotated[str, typer.Option("--lr", help="Learning rates LOW:HIGH:N, N log-spaced values (e.g. 1e-3:1:13).")] = "1e-3:1:13",
    momentum: Annotated[str, typer.Option("--momentum", help="Momenta in [0, 1), comma-separated.")] = "0,0.5,0.9,0.99",
    seeds: Annotated[int, typer.Option(min=1, help="Replicates per cell (init and data-order seeds).")] = 4,
    tolerance: Annotated[float, typer.Option(help="An lr is good if its error is at most best error × (1 + tolerance).")] = 0.1,
    draws: DrawsOption = 500,
    split: Annotated[str, typer.Option(help="Split whose accuracy defines training well: test (generalizes) or train (fits).")] = "test",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (resumed if it holds this map); gets hparam-map.parquet / .json / .png.")] = Path("runs/hparam-map"),
    as_json: JsonFlag = False,
) -> None:
    """Learning rate × momentum map of CONFIG's trainer: accuracy per cell and the width of the good-lr range.

    All cells train as one ensemble (SEEDS members per cell). Per momentum: the good-lr
    range (contiguous, around the best lr) with a seed-bootstrap 95% interval of its width
    in decades, and LR sensitivity (Wortsman et al. 2023).
    """
    from attractor.measure.hparams import hparam_map

    _check_split(split)
    result = hparam_map(load_config(config), _lr_range(lr), _number_list(momentum, "--momentum"), seeds, out, tolerance=tolerance, draws=draws, split=split)
    if as_json:
        _emit_json(result.to_dict())
        return
    table = Table("momentum", "best lr", "good lr range", "width (decades)", "95% interval", "LR sensitivity",
                  title=f"good-lr range: {split} error within {tolerance:.0%} of the best, {seeds} seeds per cell")
    for row in result.ranges.itertuples():
        table.add_row(f"{row.momentum:g}", f"{row.best_lr:.3g}", f"{row.lr_min:.3g} – {row.lr_max:.3g}", f"{row.width:.2f}",
                      f"[{row.low:.2f}, {row.high:.2f}]", f"{row.sensitivity:.3f}")
    console.print(table)
    console.print(f"wrote {out}/hparam-map.parquet, hparam-map.json and hparam-map.png", markup=False, soft_wrap=True)


@app.command()
def shortcuts(
    config: ConfigArg,
    trainer: Annotated[list[str] | None, typer.Option("--trainer", "-t", help="A trainer variant LABEL:KEY=VALUE,... of [trainer] keys, "
                                                      "e.g. 'adam:optimizer=adam,lr=0.001'; repeat for more (default: sgd, adam, cone, sgd+sd).")] = None,
    seeds: Annotated[int, typer.Option(min=2, help="Members per variant (init and data-order seeds, the same in every variant).")] = 8,
    draws: DrawsOption = 500,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder: one run directory per variant, shortcuts.parquet / .json, report.html.")] = Path("runs/shortcuts"),
    as_json: JsonFlag = False,
) -> None:
    """Shortcuts and path dependence: CONFIG's task trained by several trainers with the same seeds.

    Per variant: shortcut reliance (accuracy with the shortcut set to the label minus with it
    random; tasks spurious-digits, or modular-addition with shortcut = true), distance from init,
    path length, test accuracy and seed spread, with 95% intervals; OUT/report.html shows them.
    """
    from attractor.measure.shortcuts import shortcut_probe

    result = shortcut_probe(load_config(config), trainer, seeds, out, draws)
    if as_json:
        _emit_json(result.to_dict())
        return
    summary = result.summary
    columns = [c for c in ("shortcut_reliance", "test_accuracy", "init_distance", "path_length", "seed_spread_js") if c in summary]
    table = Table("variant", "members", *[c.replace("_", " ") for c in columns], title=f"{load_config(config).task.name}: mean [95% interval]")
    for row in summary.to_dict(orient="records"):
        cells = [f"{row[c]:.3g} [{row[f'{c}_low']:.3g}, {row[f'{c}_high']:.3g}]" for c in columns]
        table.add_row(str(row["variant"]), f"{row['members']} ({row['diverged']} diverged)", *cells)
    console.print(table)
    console.print(f"wrote {out}/shortcuts.parquet, shortcuts.json and report.html", markup=False, soft_wrap=True)


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
    from attractor.disagreement import compare_models, ensemble_spread, write_disagreement

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
        _emit_json({**result.to_dict(), "files": paths})
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
    from attractor.ensemble import Ensemble
    from attractor.sensitivity import analyze, write_sensitivity

    ens = Ensemble.load(run_dir)
    result = analyze(ens, draws=draws, seed=seed)
    paths = write_sensitivity(ens, result)
    if as_json:
        _emit_json({**result.to_dict(), "files": paths})
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
    from attractor.ensemble import Ensemble
    from attractor.sensitivity import suggest as suggest_rows
    from attractor.sensitivity import write_suggestions

    _check_split(pool, "--pool")
    ens = Ensemble.load(run_dir)
    result = suggest_rows(ens, k=k, pool=pool, draws=draws)
    paths = write_suggestions(ens, result)
    if as_json:
        _emit_json({**result.to_dict(), "files": paths})
        return
    table = Table("rank", "kind", "id", "score", "reason", title=f"suggestions from {result.members} members ({pool} pool)")
    for row in result.rows.itertuples():
        table.add_row(str(row.rank), row.kind, str(row.id), f"{row.score:.4g} {row.unit}", row.reason)
    console.print(table)
    console.print(f"wrote {paths['parquet']} and {paths['json']}", markup=False, soft_wrap=True)


@app.command()
def trainer2(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="TOML config with [task], [trainer], [run] and a [trainer2] table (see examples/trainer2.toml).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for trainer2.parquet / .json and report.html.")] = Path("runs/trainer2"),
    trials: Annotated[int | None, typer.Option(min=1, help="Trials per study (overrides [trainer2]).")] = None,
    sampler_seeds: Annotated[int | None, typer.Option(min=1, help="Sampler seeds (studies per validation resample and held-out group).")] = None,
    validation_bootstraps: Annotated[int | None, typer.Option(min=0, help="Bootstrap resamples of the validation split (0: the split as it is).")] = None,
    holdout_groups: Annotated[str | None, typer.Option(help="Data groups held out from the studies' training data, comma-separated (e.g. 3,8).")] = None,
    final_members: Annotated[int | None, typer.Option(min=2, help="Members of each returned trainer's ensemble.")] = None,
    trial_members: Annotated[int | None, typer.Option(min=1, help="Seeds each trial is trained with.")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe or random.")] = None,
    sequential: Annotated[bool, typer.Option("--sequential", help="Run the studies one after another instead of in lockstep (same trials, slower).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads while training (1 is fastest on a busy machine).")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip OUT/report.html.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Trainer2: how stable is a hyperparameter search (Optuna) started from many initial conditions?

    One study per sampler seed x validation resample x held-out group; each returned trainer
    is trained as a small ensemble and the trainers are compared by the models they produce:
    spread of the chosen hyperparameters, of their scores and of the models, a basin count,
    and which initial condition moves the result most.
    """
    from attractor.stack import load_trainer2, summary_lines, trainer2_study

    base, settings = load_trainer2(config)
    overrides = {"trials": trials, "sampler_seeds": sampler_seeds, "validation_bootstraps": validation_bootstraps,
                 "final_members": final_members, "trial_members": trial_members, "sampler": sampler, "threads": threads,
                 "holdout_groups": None if holdout_groups is None else _number_list(holdout_groups, "--holdout-groups", int)}
    if sequential:
        overrides["lockstep"] = False
    settings = settings.updated(**{k: v for k, v in overrides.items() if v is not None})
    with console.status(f"trainer2: {settings.n_studies} studies x {settings.trials} trials", spinner="dots") if not as_json else nullcontext():
        result = trainer2_study(base, settings, out, report=not no_report)
    if as_json:
        _emit_json(result.to_dict())
        return
    for line in summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"wrote {out}/trainer2.parquet, trainer2.json" + ("" if no_report else " and report.html"), markup=False, soft_wrap=True)


@app.command()
def tangent(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory: CONFIG's run is trained there (or resumed) and tangent.parquet / .json written.")] = Path("runs/tangent"),
    directions: Annotated[int, typer.Option(min=1, help="Random tangent directions k of the initial weights.")] = 8,
    hyper: Annotated[str, typer.Option(help="Hypergradients with respect to: lr, momentum, weight_decay, init_scale (comma-separated; '' for none).")] = "lr,momentum",
    members: Annotated[str | None, typer.Option(help="Plan members to analyse, comma-separated (default: all).")] = None,
    reorth_every: Annotated[int, typer.Option(min=1, help="Steps between QR re-orthonormalizations of the directions.")] = 10,
    power_iterations: Annotated[int, typer.Option(min=0, help="Power-iteration rounds for the top growth (forward and reverse through the run).")] = 4,
    finite_scale: Annotated[float, typer.Option(min=0, help="Relative step of the finite-scale differences beside the derivatives (0: skip).")] = 0.1,
    float64: Annotated[bool, typer.Option("--float64", help="Replay in float64 (the engine trains in float32).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (1 is fastest on a busy machine).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Differentiate through training: how fast perturbations grow, how the outcome moves with the trainer's settings.

    Trains CONFIG's members into OUT (resuming), then replays each member with forward-mode
    tangents: finite-time Lyapunov exponents of k random directions (QR every REORTH_EVERY
    steps), their growth in weight and output space at the snapshots, the top growth by
    power iteration, and hypergradients of the final eval loss with finite-scale differences
    beside them. `attractor report OUT` shows them.
    """
    import torch

    from attractor.tangent import HYPER_NAMES, tangent_analysis
    from attractor.training.run import train

    hypers = tuple(h.strip() for h in hyper.split(",") if h.strip())
    unknown = [h for h in hypers if h not in HYPER_NAMES]
    if unknown:
        raise UserError(f"--hyper: unknown '{unknown[0]}'; choose from {', '.join(HYPER_NAMES)}")
    cfg = load_config(config)
    chosen = None if members is None else _number_list(members, "--members", int)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        train(cfg, out)
        result = tangent_analysis(cfg, out, directions, hypers, members=chosen, reorth_every=reorth_every,
                                  power_iterations=power_iterations, finite_scale=finite_scale or None,
                                  dtype=torch.float64 if float64 else torch.float32, seed=seed)
    finally:
        torch.set_num_threads(previous)
    if as_json:
        _emit_json(result.to_dict())
        return
    console.print(result.members.to_string(index=False), markup=False, soft_wrap=True)
    console.print(f"wrote {out}/tangent.parquet and tangent.json; `attractor report {out}` shows them", markup=False, soft_wrap=True)


@app.command()
def report(run_dir: RunDirArg, as_json: JsonFlag = False) -> None:
    """Measure a run and write RUN_DIR/report.html, one self-contained page."""
    path = _measure_and_report(run_dir, as_json)
    _emit_json({"report": str(path)}) if as_json else console.print(f"report: {path}", markup=False, soft_wrap=True)


def _usage_line(exc: Any) -> str:
    """A click/typer usage error as one line, with the command whose --help explains it."""
    ctx = getattr(exc, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    return f"error: {exc.format_message().rstrip('.')}{where}"


def main() -> None:
    """Console entry point: one line and exit code 2 for anything the user must fix."""
    try:
        app(prog_name="attractor", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted (an interrupted `attractor run` resumes when started again)", err=True)
        sys.exit(130)
    except _CliError as exc:  # usage errors: missing or unknown options, bad option values
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `attractor`: show the help
            exc.show()
        else:
            typer.echo(_usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a path the user gave cannot be read or written
        if exc.filename is None:
            raise
        reason = exc.strerror or type(exc).__name__
        typer.echo(f"error: '{exc.filename}': {reason}; check the path, its permissions and free disk space", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
