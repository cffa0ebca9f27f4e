"""`attractor tangent`: differentiate through training.

Runs the ``tangent`` experiment (:mod:`attractor.experiments.tangent`) in a directory of its
own and renders its page there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attractor.cli._shared import (
    ConfigArg,
    JsonFlag,
    app,
    console,
    number_list,
    on_device,
)
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of
from attractor.config import load_config
from attractor.errors import UserError

_OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Directory: CONFIG's run is trained in OUT/run (or resumed), tangent.parquet / "
        ".json and report.html written in OUT.",
    ),
]
_DirectionsOption = Annotated[
    int, typer.Option(min=1, help="Random tangent directions k of the initial weights.")
]
_HyperOption = Annotated[
    str,
    typer.Option(
        help="Hypergradients with respect to: lr, momentum, weight_decay, init_scale "
        "(comma-separated; '' for none)."
    ),
]
_MembersOption = Annotated[
    str | None, typer.Option(help="Plan members to analyse, comma-separated (default: all).")
]
_ReorthEveryOption = Annotated[
    int, typer.Option(min=1, help="Steps between QR re-orthonormalizations of the directions.")
]
_PowerIterationsOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Power-iteration rounds for the top growth (forward and reverse through the run).",
    ),
]
_FiniteScaleOption = Annotated[
    float,
    typer.Option(
        min=0,
        help="Relative step of the finite-scale differences beside the derivatives (0: skip).",
    ),
]
_Float64Option = Annotated[
    bool, typer.Option("--float64", help="Replay in float64 (the engine trains in float32).")
]
_ThreadsOption = Annotated[
    int | None, typer.Option(min=1, help="torch threads (1 is fastest on a busy machine).")
]
_SeedOption = Annotated[int, typer.Option(help="Seed of the random directions.")]
_DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where members train and the tangent replay runs: auto, cpu, cuda or cuda:N "
        "(overrides [run] device; random directions and perturbations are drawn on the CPU, "
        "the directory stays the same, results agree across devices to float tolerance).",
    ),
]


@app.command()
def tangent(
    config: ConfigArg,
    out: _OutOption = Path("runs/tangent"),
    directions: _DirectionsOption = 8,
    hyper: _HyperOption = "lr,momentum",
    members: _MembersOption = None,
    reorth_every: _ReorthEveryOption = 10,
    power_iterations: _PowerIterationsOption = 4,
    finite_scale: _FiniteScaleOption = 0.1,
    float64: _Float64Option = False,
    threads: _ThreadsOption = None,
    seed: _SeedOption = 0,
    device: _DeviceOption = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Differentiate through training: how fast perturbations grow, how the outcome moves with the
    trainer's settings.

    Trains CONFIG's members into OUT/run (resuming), then replays each member with forward-mode
    tangents: finite-time Lyapunov exponents of k random directions (QR every REORTH_EVERY
    steps), their growth in weight and output space at the snapshots, the top growth by
    power iteration, and hypergradients of the final eval loss with finite-scale differences
    beside them. OUT/report.html (and `attractor report OUT`) shows them; `attractor report
    OUT/run` shows the run itself. Training and the replay both run on --device ([run] device).
    """
    from attractor.experiments.tangent import TangentSettings
    from attractor.tangent import HYPER_NAMES

    hypers = [h.strip() for h in hyper.split(",") if h.strip()]
    unknown = [h for h in hypers if h not in HYPER_NAMES]
    if unknown:
        raise UserError(f"--hyper: unknown '{unknown[0]}'; choose from {', '.join(HYPER_NAMES)}")
    settings = settings_of(
        TangentSettings,
        config=on_device(load_config(config), device),
        directions=directions,
        hypers=hypers,
        members=None if members is None else number_list(members, "--members", int),
        reorth_every=reorth_every,
        power_iterations=power_iterations,
        finite_scale=finite_scale or None,
        dtype="float64" if float64 else "float32",
        seed=seed,
    )
    result = _run_with_threads(settings, out, force, threads, progress=not as_json)
    page = render_page(out, progress=not as_json)
    if as_json:
        emit_result(result, {"json": str(out / "tangent.json"), "html": str(page)})
        return
    console.print(result.members.to_string(index=False), markup=False, soft_wrap=True)
    console.print(
        f"wrote {out}/tangent.parquet, tangent.json and report.html (the run: {out}/run); "
        f"`attractor report {out}` shows them",
        markup=False,
        soft_wrap=True,
    )


def _run_with_threads(
    settings: Any, out: Path, force: bool, threads: int | None, progress: bool
) -> Any:
    """Run the experiment with ``threads`` torch threads (where it runs, not what it computes:
    not part of the settings), restoring the previous number afterwards.
    """
    import torch

    from attractor.experiments.tangent import run_tangent

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_tangent(settings, out, force=force, progress=progress)
    finally:
        torch.set_num_threads(previous)
