"""`attractor verify DIR`: every recorded file of a run or experiment directory, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attractor.cli._shared import JsonFlag, app, emit_json


@app.command()
def verify(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A run or experiment directory written by attractor."),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Check every file of DIR against the sha256 recorded when it was written
    (exit 0 if all match, 2 if any is missing or damaged).
    """
    from attractor.runs.verify import verify_directory

    report = verify_directory(directory)
    if as_json:
        emit_json(report)
    else:
        for bad in report["damaged"]:
            typer.echo(f"damaged: {bad['path']} ({bad['problem']})")
        if report["unrecorded"]:
            typer.echo(
                f"not checked: {len(report['unrecorded'])} member(s) or result(s) written "
                "before attractor recorded sums"
            )
        if report["ok"]:
            typer.echo(f"ok: {report['checked']} files of '{directory}' match their sha256")
        else:
            typer.echo(
                f"{len(report['damaged'])} of {report['checked']} files of '{directory}' are "
                "damaged; re-run the config (or analysis) on this directory to rebuild them",
                err=True,
            )
    if not report["ok"]:
        raise typer.Exit(2)
