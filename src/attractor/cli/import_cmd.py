"""``attractor import``: a run directory from models trained elsewhere (thin over
:func:`attractor.runs.imports.import_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attractor.cli._shared import DeviceOption, JsonFlag, app, console, emit_json


@app.command("import")
def import_command(
    spec: Annotated[
        list[str],
        typer.Argument(
            metavar="SPEC",
            help="A members.csv / members.toml manifest, or paths and globs of safetensors state "
            "dicts and Hugging Face model directories (README: 'Measure models you already have').",
        ),
    ],
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="The models' task: a name (`attractor tasks`), module:function, or a TOML config "
            "whose [task] (and [trainer]) are used.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hard-link files that need no change instead of copying them (a symbolic link "
            "across file systems).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the import or run that --out holds.")
    ] = False,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Make a run directory from models trained elsewhere, so measure, report, compare and the
    other commands work on them. Nothing is written unless every file fits the task's model.
    """
    from attractor.runs.imports import import_run

    summary = import_run(
        spec, task, out, link=link, force=force, progress=not as_json, device=device
    )
    if as_json:
        emit_json(summary)
        return
    files = ", ".join(f"{summary[k]} {k}" for k in ("copied", "linked", "written") if summary[k])
    console.print(
        f"imported {summary['members']} members x {len(summary['steps'])} snapshots "
        f"({summary['task']}, steps {summary['steps']}) into {summary['run']}: {files}; "
        f"next: attractor measure {summary['run']}",
        markup=False,
        soft_wrap=True,
    )
