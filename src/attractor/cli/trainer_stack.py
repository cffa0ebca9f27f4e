"""`attractor trainer2`: the level above the trainer, a hyperparameter search's stability.

Runs the ``trainer2`` experiment (:mod:`attractor.stack.trainer2`) in a directory of its
own and renders its page there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attractor.cli._shared import (
    JsonFlag,
    TrainDeviceOption,
    app,
    console,
    number_list,
    on_device,
)
from attractor.cli.experiments import ForceFlag, emit_result, render_page

_ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG",
        help="TOML config with [task], [trainer], [run] and a [trainer2] table (see "
        "examples/trainer2.toml).",
    ),
]
_OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="Directory for trainer2.parquet / .json and report.html."),
]
_TrialsOption = Annotated[
    int | None, typer.Option(min=1, help="Trials per study (overrides [trainer2]).")
]
_SamplerSeedsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Sampler seeds (studies per validation resample and held-out group)."),
]
_ValidationBootstrapsOption = Annotated[
    int | None,
    typer.Option(
        min=0, help="Bootstrap resamples of the validation split (0: the split as it is)."
    ),
]
_HoldoutGroupsOption = Annotated[
    str | None,
    typer.Option(
        help="Data groups held out from the studies' training data, comma-separated (e.g. 3,8)."
    ),
]
_FinalMembersOption = Annotated[
    int | None, typer.Option(min=2, help="Members of each returned trainer's ensemble.")
]
_TrialMembersOption = Annotated[
    int | None, typer.Option(min=1, help="Seeds each trial is trained with.")
]
_SamplerOption = Annotated[str | None, typer.Option(help="tpe or random.")]
_SequentialOption = Annotated[
    bool,
    typer.Option(
        "--sequential",
        help="Run the studies one after another instead of in lockstep (same trials, slower).",
    ),
]
_ThreadsOption = Annotated[
    int | None,
    typer.Option(min=1, help="torch threads while training (1 is fastest on a busy machine)."),
]
_NoReportOption = Annotated[bool, typer.Option("--no-report", help="Skip OUT/report.html.")]


@app.command()
def trainer2(
    config: _ConfigArg,
    out: _OutOption = Path("runs/trainer2"),
    trials: _TrialsOption = None,
    sampler_seeds: _SamplerSeedsOption = None,
    validation_bootstraps: _ValidationBootstrapsOption = None,
    holdout_groups: _HoldoutGroupsOption = None,
    final_members: _FinalMembersOption = None,
    trial_members: _TrialMembersOption = None,
    sampler: _SamplerOption = None,
    sequential: _SequentialOption = False,
    threads: _ThreadsOption = None,
    device: TrainDeviceOption = None,
    no_report: _NoReportOption = False,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Trainer2: how stable is a hyperparameter search (Optuna) started from many initial
    conditions?

    One study per sampler seed x validation resample x held-out group; each returned trainer
    is trained as a small ensemble and the trainers are compared by the models they produce:
    spread of the chosen hyperparameters, of their scores and of the models, a basin count,
    and which initial condition moves the result most.
    """
    from attractor.stack import load_trainer2, run_trainer2, summary_lines

    base, settings = load_trainer2(config)
    base = on_device(base, device)
    overrides = _overrides(
        trials,
        sampler_seeds,
        validation_bootstraps,
        holdout_groups,
        final_members,
        trial_members,
        sampler,
        sequential,
        threads,
    )
    settings = settings.updated(**{k: v for k, v in overrides.items() if v is not None})
    # Progress on stderr (stages, the search's rounds); stdout keeps the results.
    result = run_trainer2(base, settings, out, force=force, progress=not as_json)
    files = {"json": str(out / "trainer2.json"), "parquet": str(out / "trainer2.parquet")}
    if not no_report:
        files["html"] = str(render_page(out, progress=not as_json))
    if as_json:
        emit_result(result, files)
        return
    for line in summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)
    console.print(
        f"wrote {out}/trainer2.parquet, trainer2.json" + ("" if no_report else " and report.html"),
        markup=False,
        soft_wrap=True,
    )


def _overrides(
    trials: int | None,
    sampler_seeds: int | None,
    validation_bootstraps: int | None,
    holdout_groups: str | None,
    final_members: int | None,
    trial_members: int | None,
    sampler: str | None,
    sequential: bool,
    threads: int | None,
) -> dict[str, Any]:
    """The options given on the command line, as ``[trainer2]`` keys (None: not given)."""
    overrides = {
        "trials": trials,
        "sampler_seeds": sampler_seeds,
        "validation_bootstraps": validation_bootstraps,
        "final_members": final_members,
        "trial_members": trial_members,
        "sampler": sampler,
        "threads": threads,
        "holdout_groups": None
        if holdout_groups is None
        else number_list(holdout_groups, "--holdout-groups", int),
    }
    if sequential:
        overrides["lockstep"] = False
    return overrides
