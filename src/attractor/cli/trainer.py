"""Commands about the trainer and the level above it: instability, hparam-map, shortcuts, trainer2, tangent.

Each runs one experiment (:mod:`attractor.experiments`) in a directory of its own and
renders its page there (:mod:`attractor.cli.experiments` has what they share).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attractor.cli._shared import (
    ConfigArg,
    DrawsOption,
    JsonFlag,
    app,
    check_split,
    console,
    number_list,
)
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of
from attractor.config import load_config
from attractor.errors import UserError


@app.command()
def instability(
    config: ConfigArg,
    spawn_steps: Annotated[str, typer.Option("--spawn-steps", help="Steps k to spawn copies at, comma-separated (each below the run's length).")],
    pairs: Annotated[int, typer.Option(min=2, help="Pairs of copies per spawn step (for the interval).")] = 4,
    threshold: Annotated[float, typer.Option(help="Error barrier below which copies count as stable (0.02 = 2 % error).")] = 0.02,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for instability.json / .parquet and report.html "
                                                               "(default: runs/instability-<hash of the settings>).")] = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Instability analysis (Frankle et al. 2020): from which step on do copies land in one basin?

    Trains one parent with CONFIG's task and trainer, spawns pairs of copies at every
    spawn step that continue with different data orders, and measures the error barrier
    on the linear path between the two copies of each pair at the end of training.
    """
    from attractor.experiments import default_out
    from attractor.experiments.instability import InstabilitySettings, run_instability

    settings = settings_of(InstabilitySettings, config=load_config(config), pairs=pairs, threshold=threshold,
                           spawn_steps=number_list(spawn_steps, "--spawn-steps", int))
    out = default_out("instability", settings) if out is None else out
    result = run_instability(settings, out, force=force)
    page = render_page(out)
    if as_json:
        emit_result(result, {"json": str(out / "instability.json"), "html": str(page)})
        return
    table = Table("spawn step k", "error barrier (mean)", "95% interval", title=f"instability over {result.total_steps} steps, {pairs} pairs per k")
    for row in result.summary.itertuples():
        table.add_row(str(row.spawn_step), f"{row.barrier_error_mean:.2%}", f"[{row.barrier_error_ci_low:.2%}, {row.barrier_error_ci_high:.2%}]")
    console.print(table)
    onset = "never (within the spawn steps)" if result.onset is None else f"k = {result.onset}"
    console.print(f"stable (barrier below {threshold:.1%} from then on): {onset}; by the upper bound: "
                  f"{'never' if result.onset_upper is None else f'k = {result.onset_upper}'}", markup=False)
    console.print(f"wrote {out}/instability.parquet, instability.json and report.html", markup=False, soft_wrap=True)



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



def _write_heatmap(out: Path) -> Path:
    """``OUT/hparam-map.png``: the map's heat map (the figure its report section shows)."""
    from attractor.report.sections.hparam_map import heatmap_png
    from attractor.runs.files import atomic_path
    from attractor.runs.store import RunStore

    path = out / "hparam-map.png"
    with atomic_path(path) as tmp:
        tmp.write_bytes(heatmap_png(RunStore(out).result("hparam-map")))
    return path


@app.command("hparam-map")
def hparam_map_command(
    config: ConfigArg,
    lr: Annotated[str, typer.Option("--lr", help="Learning rates LOW:HIGH:N, N log-spaced values (e.g. 1e-3:1:13).")] = "1e-3:1:13",
    momentum: Annotated[str, typer.Option("--momentum", help="Momenta in [0, 1), comma-separated.")] = "0,0.5,0.9,0.99",
    seeds: Annotated[int, typer.Option(min=1, help="Replicates per cell (init and data-order seeds).")] = 4,
    tolerance: Annotated[float, typer.Option(help="An lr is good if its error is at most best error × (1 + tolerance).")] = 0.1,
    draws: DrawsOption = 500,
    split: Annotated[str, typer.Option(help="Split whose accuracy defines training well: test (generalizes) or train (fits).")] = "test",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory of the map: the grid's run in OUT/runs/grid (resumed), "
                                                        "hparam-map.parquet / .json / .png and report.html.")] = Path("runs/hparam-map"),
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Learning rate × momentum map of CONFIG's trainer: accuracy per cell and the width of the good-lr range.

    All cells train as one ensemble (SEEDS members per cell). Per momentum: the good-lr
    range (contiguous, around the best lr) with a seed-bootstrap 95% interval of its width
    in decades, and LR sensitivity (Wortsman et al. 2023).
    """
    from attractor.experiments.hparam_map import HparamMapSettings, hparam_map

    check_split(split)
    settings = settings_of(HparamMapSettings, config=load_config(config), lrs=_lr_range(lr), seeds=seeds,
                           momenta=number_list(momentum, "--momentum"), tolerance=tolerance, draws=draws, split=split)
    result = hparam_map(settings.config, settings.lrs, settings.momenta, seeds, out, tolerance, draws, split, force)
    files = {"json": str(out / "hparam-map.json"), "png": str(_write_heatmap(out)), "html": str(render_page(out))}
    if as_json:
        emit_result(result, files)
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory: one run directory per variant in OUT/runs, shortcuts.parquet / .json, "
                                                        "report.html.")] = Path("runs/shortcuts"),
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Shortcuts and path dependence: CONFIG's task trained by several trainers with the same seeds.

    Per variant: shortcut reliance (accuracy with the shortcut set to the label minus with it
    random; tasks spurious-digits, or modular-addition with shortcut = true), distance from init,
    path length, test accuracy and seed spread, with 95% intervals; OUT/report.html shows them.
    """
    from attractor.experiments.shortcuts import DEFAULT_VARIANTS, ShortcutsSettings, shortcut_probe

    settings = settings_of(ShortcutsSettings, config=load_config(config), variants=list(trainer or DEFAULT_VARIANTS),
                           seeds=seeds, draws=draws)
    result = shortcut_probe(settings.config, settings.variants, seeds, out, draws, force=force)
    page = render_page(out)
    if as_json:
        emit_result(result, {"json": str(out / "shortcuts.json"), "html": str(page)})
        return
    summary = result.summary
    columns = [c for c in ("shortcut_reliance", "test_accuracy", "init_distance", "path_length", "seed_spread_js") if c in summary]
    table = Table("variant", "members", *[c.replace("_", " ") for c in columns], title=f"{settings.config.task.name}: mean [95% interval]")
    for row in summary.to_dict(orient="records"):
        cells = [f"{row[c]:.3g} [{row[f'{c}_low']:.3g}, {row[f'{c}_high']:.3g}]" for c in columns]
        table.add_row(str(row["variant"]), f"{row['members']} ({row['diverged']} diverged)", *cells)
    console.print(table)
    console.print(f"wrote {out}/shortcuts.parquet, shortcuts.json and report.html", markup=False, soft_wrap=True)



@app.command()
def trainer2(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="TOML config with [task], [trainer], [run] and a [trainer2] table (see examples/trainer2.toml).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for trainer2.parquet / .json and report.html.")] = Path("runs/trainer2"),
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
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Trainer2: how stable is a hyperparameter search (Optuna) started from many initial conditions?

    One study per sampler seed x validation resample x held-out group; each returned trainer
    is trained as a small ensemble and the trainers are compared by the models they produce:
    spread of the chosen hyperparameters, of their scores and of the models, a basin count,
    and which initial condition moves the result most.
    """
    from attractor.stack import load_trainer2, run_trainer2, summary_lines

    base, settings = load_trainer2(config)
    overrides = {"trials": trials, "sampler_seeds": sampler_seeds, "validation_bootstraps": validation_bootstraps,
                 "final_members": final_members, "trial_members": trial_members, "sampler": sampler, "threads": threads,
                 "holdout_groups": None if holdout_groups is None else number_list(holdout_groups, "--holdout-groups", int)}
    if sequential:
        overrides["lockstep"] = False
    settings = settings.updated(**{k: v for k, v in overrides.items() if v is not None})
    with console.status(f"trainer2: {settings.n_studies} studies x {settings.trials} trials", spinner="dots") if not as_json else nullcontext():
        result = run_trainer2(base, settings, out, force=force)
    files = {"json": str(out / "trainer2.json"), "parquet": str(out / "trainer2.parquet")}
    if not no_report:
        files["html"] = str(render_page(out))
    if as_json:
        emit_result(result, files)
        return
    for line in summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"wrote {out}/trainer2.parquet, trainer2.json" + ("" if no_report else " and report.html"), markup=False, soft_wrap=True)



@app.command()
def tangent(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory: CONFIG's run is trained in OUT/run (or resumed), tangent.parquet / "
                                                        ".json and report.html written in OUT.")] = Path("runs/tangent"),
    directions: Annotated[int, typer.Option(min=1, help="Random tangent directions k of the initial weights.")] = 8,
    hyper: Annotated[str, typer.Option(help="Hypergradients with respect to: lr, momentum, weight_decay, init_scale (comma-separated; '' for none).")] = "lr,momentum",
    members: Annotated[str | None, typer.Option(help="Plan members to analyse, comma-separated (default: all).")] = None,
    reorth_every: Annotated[int, typer.Option(min=1, help="Steps between QR re-orthonormalizations of the directions.")] = 10,
    power_iterations: Annotated[int, typer.Option(min=0, help="Power-iteration rounds for the top growth (forward and reverse through the run).")] = 4,
    finite_scale: Annotated[float, typer.Option(min=0, help="Relative step of the finite-scale differences beside the derivatives (0: skip).")] = 0.1,
    float64: Annotated[bool, typer.Option("--float64", help="Replay in float64 (the engine trains in float32).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (1 is fastest on a busy machine).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Differentiate through training: how fast perturbations grow, how the outcome moves with the trainer's settings.

    Trains CONFIG's members into OUT/run (resuming), then replays each member with forward-mode
    tangents: finite-time Lyapunov exponents of k random directions (QR every REORTH_EVERY
    steps), their growth in weight and output space at the snapshots, the top growth by
    power iteration, and hypergradients of the final eval loss with finite-scale differences
    beside them. OUT/report.html (and `attractor report OUT`) shows them; `attractor report
    OUT/run` shows the run itself.
    """
    import torch

    from attractor.experiments.tangent import TangentSettings, run_tangent
    from attractor.tangent import HYPER_NAMES

    hypers = [h.strip() for h in hyper.split(",") if h.strip()]
    unknown = [h for h in hypers if h not in HYPER_NAMES]
    if unknown:
        raise UserError(f"--hyper: unknown '{unknown[0]}'; choose from {', '.join(HYPER_NAMES)}")
    settings = settings_of(TangentSettings, config=load_config(config), directions=directions, hypers=hypers,
                           members=None if members is None else number_list(members, "--members", int),
                           reorth_every=reorth_every, power_iterations=power_iterations,
                           finite_scale=finite_scale or None, dtype="float64" if float64 else "float32", seed=seed)
    previous = torch.get_num_threads()
    if threads is not None:  # where it runs, not what it computes: not part of the settings
        torch.set_num_threads(threads)
    try:
        result = run_tangent(settings, out, force=force)
    finally:
        torch.set_num_threads(previous)
    page = render_page(out)
    if as_json:
        emit_result(result, {"json": str(out / "tangent.json"), "html": str(page)})
        return
    console.print(result.members.to_string(index=False), markup=False, soft_wrap=True)
    console.print(f"wrote {out}/tangent.parquet, tangent.json and report.html (the run: {out}/run); "
                  f"`attractor report {out}` shows them", markup=False, soft_wrap=True)
