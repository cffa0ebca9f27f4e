"""`attractor shortcuts`: one task trained by several trainers with the same seeds.

Runs the ``shortcuts`` experiment (:mod:`attractor.experiments.shortcuts`) in a directory
of its own and renders its page there.
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
    console,
    on_device,
)
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of
from attractor.config import load_config

_TrainerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trainer",
        "-t",
        help="A trainer variant LABEL:KEY=VALUE,... of [trainer] keys, "
        "e.g. 'adam:optimizer=adam,lr=0.001'; repeat for more (default: sgd, adam, cone, sgd+sd).",
    ),
]
_SeedsOption = Annotated[
    int,
    typer.Option(
        min=2,
        help="Members per variant (init and data-order seeds, the same in every variant).",
    ),
]
_OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Directory: one run directory per variant in OUT/runs, shortcuts.parquet / .json, "
        "report.html.",
    ),
]


@app.command()
def shortcuts(
    config: ConfigArg,
    trainer: _TrainerOption = None,
    seeds: _SeedsOption = 8,
    draws: DrawsOption = 500,
    out: _OutOption = Path("runs/shortcuts"),
    device: TrainDeviceOption = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Shortcuts and path dependence: CONFIG's task trained by several trainers with the same seeds.

    Per variant: shortcut reliance (accuracy with the shortcut set to the label minus with it
    random; tasks spurious-digits, or modular-addition with shortcut = true), distance from init,
    path length, test accuracy and seed spread, with 95% intervals; OUT/report.html shows them.
    """
    from attractor.experiments.shortcuts import DEFAULT_VARIANTS, ShortcutsSettings, shortcut_probe

    settings = settings_of(
        ShortcutsSettings,
        config=on_device(load_config(config), device),
        variants=list(trainer or DEFAULT_VARIANTS),
        seeds=seeds,
        draws=draws,
    )
    result = shortcut_probe(
        settings.config, settings.variants, seeds, out, draws, force=force, progress=not as_json
    )
    page = render_page(out, progress=not as_json)
    if as_json:
        emit_result(result, {"json": str(out / "shortcuts.json"), "html": str(page)})
        return
    _print_shortcuts(result, out, settings.config.task.name)


def _print_shortcuts(result: Any, out: Path, task: str) -> None:
    """Per variant: members, and each measure with its 95 % interval; the files."""
    summary = result.summary
    columns = [
        c
        for c in (
            "shortcut_reliance",
            "test_accuracy",
            "init_distance",
            "path_length",
            "seed_spread_js",
        )
        if c in summary
    ]
    table = Table(
        "variant",
        "members",
        *[c.replace("_", " ") for c in columns],
        title=f"{task}: mean [95% interval]",
    )
    for row in summary.to_dict(orient="records"):
        cells = [f"{row[c]:.3g} [{row[f'{c}_low']:.3g}, {row[f'{c}_high']:.3g}]" for c in columns]
        table.add_row(str(row["variant"]), f"{row['members']} ({row['diverged']} diverged)", *cells)
    console.print(table)
    console.print(
        f"wrote {out}/shortcuts.parquet, shortcuts.json and report.html",
        markup=False,
        soft_wrap=True,
    )
