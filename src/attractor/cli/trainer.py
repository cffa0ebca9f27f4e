"""Commands about the trainer: instability and hparam-map.

Each runs one experiment (:mod:`attractor.experiments`) in a directory of its own and
renders its page there (:mod:`attractor.cli.experiments` has what they share). The other
trainer-level commands are in ``trainer_shortcuts`` (shortcuts), ``trainer_stack``
(trainer2) and ``trainer_tangent`` (tangent), registered in that order after these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from attractor.cli._shared import (
    ConfigArg,
    DrawsOption,
    JsonFlag,
    TrainDeviceOption,
    app,
    check_split,
    console,
    number_list,
    on_device,
)
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of
from attractor.config import load_config
from attractor.errors import UserError

_SpawnStepsOption = Annotated[
    str,
    typer.Option(
        "--spawn-steps",
        help="Steps k to spawn copies at, comma-separated (each below the run's length).",
    ),
]
_PairsOption = Annotated[
    int, typer.Option(min=2, help="Pairs of copies per spawn step (for the interval).")
]
_ThresholdOption = Annotated[
    float,
    typer.Option(help="Error barrier below which copies count as stable (0.02 = 2 % error)."),
]
_InstabilityOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Directory for instability.json / .parquet and report.html "
        "(default: runs/instability-<hash of the settings>).",
    ),
]


_RepairOption = Annotated[
    str,
    typer.Option(
        help="BatchNorm statistics along the paths: none (interpolated, as Frankle et al.), "
        "reset (recomputed on training data) or repair (REPAIR, Jordan et al. 2022); no-op "
        "for a model without BatchNorm."
    ),
]


@app.command()
def instability(
    config: ConfigArg,
    spawn_steps: _SpawnStepsOption,
    pairs: _PairsOption = 4,
    threshold: _ThresholdOption = 0.02,
    out: _InstabilityOutOption = None,
    repair: _RepairOption = "none",
    device: TrainDeviceOption = None,
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

    settings = settings_of(
        InstabilitySettings,
        config=on_device(load_config(config), device),
        pairs=pairs,
        threshold=threshold,
        spawn_steps=number_list(spawn_steps, "--spawn-steps", int),
        repair=repair,
    )
    out = default_out("instability", settings) if out is None else out
    result = run_instability(settings, out, force=force, progress=not as_json)
    page = render_page(out, progress=not as_json)
    if as_json:
        emit_result(result, {"json": str(out / "instability.json"), "html": str(page)})
        return
    _print_instability(result, out, pairs, threshold)


def _lr_range(text: str) -> list[float]:
    """``LOW:HIGH:N`` → N log-spaced learning rates from LOW to HIGH (both included)."""
    import numpy as np

    parts = text.split(":")
    try:
        low, high, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(
            f"--lr takes LOW:HIGH:N like 1e-3:1:13 (N log-spaced learning rates), not '{text}'"
        ) from None
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


_LrOption = Annotated[
    str,
    typer.Option("--lr", help="Learning rates LOW:HIGH:N, N log-spaced values (e.g. 1e-3:1:13)."),
]
_MomentumOption = Annotated[
    str, typer.Option("--momentum", help="Momenta in [0, 1), comma-separated.")
]
_SeedsOption = Annotated[
    int, typer.Option(min=1, help="Replicates per cell (init and data-order seeds).")
]
_ToleranceOption = Annotated[
    float,
    typer.Option(help="An lr is good if its error is at most best error × (1 + tolerance)."),
]
_SplitOption = Annotated[
    str,
    typer.Option(
        help="Split whose accuracy defines training well: test (generalizes) or train (fits)."
    ),
]
_MapOutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Directory of the map: the grid's run in OUT/runs/grid (resumed), "
        "hparam-map.parquet / .json / .png and report.html.",
    ),
]


@app.command("hparam-map")
def hparam_map_command(
    config: ConfigArg,
    lr: _LrOption = "1e-3:1:13",
    momentum: _MomentumOption = "0,0.5,0.9,0.99",
    seeds: _SeedsOption = 4,
    tolerance: _ToleranceOption = 0.1,
    draws: DrawsOption = 500,
    split: _SplitOption = "test",
    out: _MapOutOption = Path("runs/hparam-map"),
    device: TrainDeviceOption = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Learning rate × momentum map of CONFIG's trainer: accuracy per cell and the width of the
    good-lr range.

    All cells train as one ensemble (SEEDS members per cell). Per momentum: the good-lr
    range (contiguous, around the best lr) with a seed-bootstrap 95% interval of its width
    in decades, and LR sensitivity (Wortsman et al. 2023).
    """
    from attractor.experiments.hparam_map import HparamMapSettings, hparam_map

    check_split(split)
    settings = settings_of(
        HparamMapSettings,
        config=on_device(load_config(config), device),
        lrs=_lr_range(lr),
        seeds=seeds,
        momenta=number_list(momentum, "--momentum"),
        tolerance=tolerance,
        draws=draws,
        split=split,
    )
    result = hparam_map(
        settings.config,
        settings.lrs,
        settings.momenta,
        seeds,
        out,
        tolerance,
        draws,
        split,
        force,
        progress=not as_json,
    )
    files = {
        "json": str(out / "hparam-map.json"),
        "png": str(_write_heatmap(out)),
        "html": str(render_page(out, progress=not as_json)),
    }
    if as_json:
        emit_result(result, files)
        return
    _print_map(result, out, split, tolerance, seeds)


def _print_map(result: Any, out: Path, split: str, tolerance: float, seeds: int) -> None:
    """Per momentum: the good-lr range, its width and interval, LR sensitivity; the files."""
    table = Table(
        "momentum",
        "best lr",
        "good lr range",
        "width (decades)",
        "95% interval",
        "LR sensitivity",
        title=f"good-lr range: {split} error within {tolerance:.0%} of the best, {seeds} seeds per "
        "cell",
    )
    for row in result.ranges.itertuples():
        table.add_row(
            f"{row.momentum:g}",
            f"{row.best_lr:.3g}",
            f"{row.lr_min:.3g} – {row.lr_max:.3g}",
            f"{row.width:.2f}",
            f"[{row.low:.2f}, {row.high:.2f}]",
            f"{row.sensitivity:.3f}",
        )
    console.print(table)
    console.print(
        f"wrote {out}/hparam-map.parquet, hparam-map.json and hparam-map.png",
        markup=False,
        soft_wrap=True,
    )


def _print_instability(result: Any, out: Path, pairs: int, threshold: float) -> None:
    """Per spawn step: the mean error barrier and its interval; the onset; the files."""
    table = Table(
        "spawn step k",
        "error barrier (mean)",
        "95% interval",
        title=f"instability over {result.total_steps} steps, {pairs} pairs per k",
    )
    for row in result.summary.itertuples():
        table.add_row(
            str(row.spawn_step),
            f"{row.barrier_error_mean:.2%}",
            f"[{row.barrier_error_ci_low:.2%}, {row.barrier_error_ci_high:.2%}]",
        )
    console.print(table)
    onset = "never (within the spawn steps)" if result.onset is None else f"k = {result.onset}"
    console.print(
        f"stable (barrier below {threshold:.1%} from then on): {onset}; by the upper bound: "
        f"{'never' if result.onset_upper is None else f'k = {result.onset_upper}'}",
        markup=False,
    )
    console.print(
        f"wrote {out}/instability.parquet, instability.json and report.html",
        markup=False,
        soft_wrap=True,
    )
