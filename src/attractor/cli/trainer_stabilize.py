"""`attractor stabilize`: search for the trainer whose runs spread least, and confirm it.

Runs the ``stabilize`` experiment (:mod:`attractor.stack.stabilize.experiment`) in a
directory of its own and renders its page there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attractor.cli._shared import JsonFlag, TrainDeviceOption, app, console, on_device
from attractor.cli.experiments import ForceFlag, emit_result, render_page

_ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG",
        help="TOML with [task], [trainer] (the starting trainer), [plan] (what members differ "
        "in) and a [stabilize] table with its [stabilize.search] space; see "
        "examples/stabilize-digits.toml.",
    ),
]
_OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Experiment directory (default runs/stabilize-HASH)."),
]
_SamplerOption = Annotated[
    str | None,
    typer.Option(help="nsga2, tpe or random (overrides [stabilize] sampler)."),
]
_TrialsOption = Annotated[
    int | None, typer.Option(min=2, help="Trials in the search (overrides [stabilize] trials).")
]
_NoReportOption = Annotated[bool, typer.Option("--no-report", help="Skip OUT/report.html.")]


@app.command()
def stabilize(
    config: _ConfigArg,
    out: _OutOption = None,
    sampler: _SamplerOption = None,
    trials: _TrialsOption = None,
    device: TrainDeviceOption = None,
    no_report: _NoReportOption = False,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """From measuring to improving: search (Optuna, multi-objective) for the trainer whose
    members land in one basin, then confirm the choice on seeds the search never saw.

    Each trial is a whole ensemble ([plan]'s first rows) trained as one vectorized run;
    objectives are the members' error and their spread (js, disagreement, accuracy_sd or
    minority), both with bootstrap intervals. The search space holds the trainer's settings
    and stability interventions (label smoothing, clipping, SAM, EMA, SWA, warm-up, batch
    size, weight decay, cone angle). The chosen trainer is the most stable within a
    tolerance of the best error; the confirmation compares it with [trainer] on fresh
    seeds with a paired multi-bootstrap and says plainly when it does not hold. The study
    is kept in OUT/stabilize.db: run the same command again to resume. Writes
    OUT/stabilize.json, its tables and OUT/report.html.
    """
    from attractor.experiments import default_out, run_experiment
    from attractor.stack.stabilize import StabilizeRun, load_stabilize, summary_lines
    from attractor.stack.stabilize.settings import updated

    base, settings = load_stabilize(config)
    base = on_device(base, device)
    given = {"sampler": sampler, "trials": trials}
    settings = updated(settings, **{k: v for k, v in given.items() if v is not None})
    both = StabilizeRun(config=base, stabilize=settings)
    out = out if out is not None else default_out("stabilize", both)
    # Progress on stderr (stages, the search's rounds); stdout keeps the results.
    store, results = run_experiment("stabilize", both, out, force=force, progress=not as_json)
    result = results[0]
    files = {"json": str(store.root / "stabilize.json"), "study": str(store.root / "stabilize.db")}
    if not no_report:
        files["html"] = str(render_page(store.root, progress=not as_json))
    if as_json:
        emit_result(result, files)
        return
    for line in summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)
    console.print(
        f"wrote {store.root}/stabilize.json" + ("" if no_report else " and report.html"),
        markup=False,
        soft_wrap=True,
    )
