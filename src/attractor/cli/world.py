"""`attractor world CONFIG`: a trained model acting on a world; `attractor worlds` lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attractor.cli._shared import JsonFlag, app, console, emit_json
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of
from attractor.config import read_toml
from attractor.errors import UserError

_ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG",
        help="TOML with a [world] table (name, options, model, states, scales, map, "
        "structural, device); see examples/world-*.toml.",
    ),
]
_OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Experiment directory (default runs/world-HASH).")
]


def _read(config: Path) -> dict[str, Any]:
    """The ``[world]`` table of ``config``, its ``[task]``/``[trainer]``/... folded into train."""
    data = read_toml(config, "examples/world-cartpole.toml")
    world = data.pop("world", None)
    if not isinstance(world, dict):
        raise UserError(f"{config}: no [world] table; name a world there (attractor worlds)")
    unknown = sorted(set(data) - {"task", "trainer", "plan", "run"})
    if unknown:
        raise UserError(
            f"{config}: unknown table [{unknown[0]}]; use [world], [task], [trainer], [plan], [run]"
        )
    if data:
        world = {**world, "train": {**data, **world.get("train", {})}}
    return world


_DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where the rollouts run (the model's forward passes and the world's steps) and, "
        "when [world] model names none, where the model trains in OUT/run (overriding [run] "
        "device): auto, cpu, cuda or cuda:N (overrides [world] device; default auto). Random "
        "draws and measures stay on the CPU; the device is not part of OUT's identity.",
    ),
]


@app.command()
def world(
    config: _ConfigArg,
    out: _OutOption = None,
    device: _DeviceOption = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """World level: does a trained model bring a world to one basin from any start?

    Rolls every member of the model's ensemble out from the same perturbed initial states:
    basin share vs perturbation size (with intervals), the spread of outcomes split into
    member vs initial state, a basin map over two factors, closed-loop Lyapunov exponents,
    and the basin under perturbations of the model and of the world's constants. The
    rollouts run on --device (random draws and measures on the CPU). Writes
    OUT/world.json, its tables and OUT/report.html. The model is a run (model = "RUN" or
    "RUN:MEMBER"), trained in OUT/run when none is named, or for lm-continuation local
    Hugging Face directories (one, or a list: one member each).
    """
    from attractor.experiments import default_out, run_experiment
    from attractor.experiments.world import WorldSettings

    data = _read(config)
    if device is not None:
        data["device"] = device  # the rollouts
        if data.get("model") is None:  # and the model the world trains itself
            train = dict(data.get("train", {}))
            train["run"] = {**train.get("run", {}), "device": device}
            data["train"] = train
    settings = settings_of(WorldSettings, **data)
    out = out if out is not None else default_out("world", settings)
    store, results = run_experiment("world", settings, out, force=force, progress=not as_json)
    page = render_page(store.root, progress=not as_json)
    result = results[0]
    if as_json:
        emit_result(result, {"json": str(store.root / "world.json"), "html": str(page)})
        return
    summary = result.summary
    console.print(
        f"world {result.world}: basin share {summary.get('basin_share')} "
        f"(95 % CI {summary.get('low')} - {summary.get('high')})",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"report: {page}", markup=False, soft_wrap=True)


@app.command()
def worlds(as_json: JsonFlag = False) -> None:
    """List the built-in worlds (a user world is module:function in [world] name)."""
    from attractor.world import list_worlds

    found = list_worlds()
    if as_json:
        emit_json(found)
        return
    for name, summary in found.items():
        console.print(f"{name:18s} {summary}", markup=False, soft_wrap=True)
