"""What every command shares: the Typer app, the console, argument types and small parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from attractor.config import Config
from attractor.errors import UserError
from attractor.runs.results import strict_json
from attractor.runs.trust import set_default_trust

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Measure and improve the stability of training runs.",
)


@app.callback()
def _global_options(
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Run the user code (a `module:function` task) of run directories this user did "
            "not make: only for directories whose code you trust (README: 'Sharing run "
            "directories').",
        ),
    ] = False,
) -> None:
    # Set on every invocation, so an in-process caller running several commands never
    # inherits an earlier command's --trust.
    set_default_trust(trust)


console = Console()


JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]


ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG",
        help="TOML config file with tables task, trainer, plan, run (samples in examples/, every "
        "key in the README's config reference).",
    ),
]


RunDirArg = Annotated[
    Path, typer.Argument(metavar="RUN_DIR", help="A run directory written by `attractor run`.")
]


DrawsOption = Annotated[
    int, typer.Option(min=1, help="Multi-bootstrap draws for the 95% intervals.")
]


DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the members' outputs are computed: cpu, cuda, cuda:N or auto (CUDA when "
        "available). Other measures stay on the CPU; results are the same files.",
    ),
]


TrainDeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where members train: auto, cpu, cuda or cuda:N (overrides [run] device; the "
        "directory stays the same, results agree across devices to float tolerance).",
    ),
]


def on_device(config: Config, device: str | None) -> Config:
    """``config`` with ``[run] device`` set to ``device`` (``None``: unchanged); a bad name is
    one line, exit 2.
    """
    if device is None:
        return config
    from attractor.config import parse_config

    data = config.resolved()
    data["run"]["device"] = device
    return parse_config(data, source="--device")


def emit_json(data: Any) -> None:
    """Print ``data`` as strict, indented JSON: NaN and infinities as null (the one rule of
    :func:`attractor.runs.results.strict_json`), values JSON does not know as strings."""
    typer.echo(json.dumps(strict_json(data), indent=2, default=str, allow_nan=False))


def check_split(split: str, option: str = "--split") -> None:
    """Refuse a split other than ``test`` or ``train``, naming the option that gave it."""
    if split not in ("test", "train"):
        raise UserError(f"{option} must be 'test' or 'train', not '{split}'")


def number_list(text: str, option: str, cast: type[int] | type[float] = float) -> list:
    """Comma-separated numbers of an option, or one line naming the option and the format."""
    try:
        return [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        kind = (
            "whole numbers like 0,5,20,100" if cast is int else "numbers like 0,0.01,0.05,0.1,0.2"
        )
        raise UserError(f"{option} takes comma-separated {kind}, not '{text}'") from None
