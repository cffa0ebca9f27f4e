"""Commands that make and show runs: tasks, plan, run, info, demo, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from attractor.cli._shared import (
    ConfigArg,
    DeviceOption,
    JsonFlag,
    RunDirArg,
    app,
    console,
    emit_json,
)
from attractor.cli.measure import (
    CompareForceFlag,
    CompareOutOption,
    compare_report,
    print_verdict,
)
from attractor.cli.show import print_run_summary, status_table
from attractor.config import Config, load_config
from attractor.errors import UserError

DEMO_CONFIG: dict[str, Any] = {
    "task": {"name": "digits-mlp", "hidden": [128, 128]},
    "trainer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 10},
    "plan": {
        "members": 32,
        "design": "random",
        "seed": 0,
        "vary": ["init_seed", "data_seed", "bootstrap"],
    },
    "run": {"strategy": "auto", "snapshots": 8},
}


@app.command()
def tasks(as_json: JsonFlag = False) -> None:
    """List the built-in tasks and their options."""
    from attractor.tasks import list_tasks

    found = list_tasks()
    if as_json:
        emit_json([{"name": n, "summary": s, "options": o} for n, s, o in found])
        return
    table = Table("task", "summary", "options (defaults)")
    for name, summary, options in found:
        table.add_row(name, summary, ", ".join(f"{k}={v}" for k, v in options.items()))
    console.print(table)
    console.print(
        "Your own task: [task] name = 'package.module:function' (a function returning "
        "attractor.Task).",
        markup=False,
        soft_wrap=True,
    )


@app.command(
    epilog=(
        "Every config key with its default and meaning: the README's 'Config reference', or "
        "`python -m attractor.reference`."
    )
)
def plan(config: ConfigArg, as_json: JsonFlag = False) -> None:
    """Print the resolved config (every default filled in) and the plan table it makes."""
    from attractor.plan import build_plan, describe_plan
    from attractor.tasks import build_task

    cfg = load_config(config)
    task = build_task(cfg.task)
    table = build_plan(cfg.plan, cfg.trainer, task.group_ids)
    if as_json:
        emit_json(
            {
                "config": cfg.resolved(),
                "config_hash": cfg.hash(),
                "plan_hash": table.hash(),
                "plan": table.table.to_dict("records"),
            }
        )
        return
    console.print_json(json.dumps(cfg.resolved()))
    typer.echo(describe_plan(table))


def _train_and_summarize(cfg: Config, out: Path, force: bool, as_json: bool) -> dict[str, Any]:
    from attractor.measure import summarize
    from attractor.runs.launch import train

    ens = train(cfg, out, force=force, progress=not as_json)
    return summarize(ens)


# The options of `attractor run`, named so that its signature reads in one screen.
OutOption = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Run directory to create, or to resume if it holds this config's run."
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Delete a run directory made from another config and start over."),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help=(
            "Where chunks run: local | process | ray (overrides run.backend; a run may "
            "resume under another backend)."
        ),
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="process: pool size; ray: CPUs of the local Ray instance (overrides run.workers).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help=(
            "ray: HOST:PORT of a running cluster (`ray start --head`); without it a local "
            "Ray instance starts."
        ),
    ),
]
TrackOption = Annotated[
    str | None,
    typer.Option("--track", help="Also record the run in a tracker: mlflow (extra `mlflow`)."),
]
TrackUriOption = Annotated[
    str | None,
    typer.Option(
        "--track-uri",
        help=(
            "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite mlflow.db beside "
            "--out)."
        ),
    ),
]


@app.command()
def run(
    config: ConfigArg,
    out: OutOption,
    force: ForceOption = False,
    backend: BackendOption = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    track: TrackOption = None,
    track_uri: TrackUriOption = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Where members train: auto, cpu, cuda or cuda:N (overrides run.device; a run "
            "may resume on another device).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train every member of CONFIG's plan into the run directory --out
    (resumes an interrupted run).
    """
    from attractor.errors import require

    cfg = _with_options(
        load_config(config), backend, workers, ray_address, track, track_uri, device
    )
    if cfg.track.mlflow:
        require("mlflow", "mlflow")  # refuse before anything is trained or written
    summary = _train_and_summarize(cfg, out, force, as_json)
    if cfg.track.mlflow:
        from attractor.tracking import log_run

        summary["mlflow_run_id"] = log_run(out, cfg.track)
    emit_json(summary) if as_json else print_run_summary(summary)


def _with_options(
    cfg: Config,
    backend: str | None,
    workers: int | None,
    ray_address: str | None,
    track: str | None,
    track_uri: str | None,
    device: str | None = None,
) -> Config:
    """``cfg`` with the options that were given over its [run] / [track] keys."""
    from attractor.config import parse_config

    if track not in (None, "mlflow"):
        raise UserError(f"--track takes 'mlflow', not '{track}'")
    # Options override the config's [run] / [track] keys and are validated like them.
    data = cfg.resolved()
    data["run"].update(
        {
            k: v
            for k, v in {
                "backend": backend,
                "workers": workers,
                "ray_address": ray_address,
                "device": device,
            }.items()
            if v is not None
        }
    )
    data["track"].update(
        {
            k: v
            for k, v in {"mlflow": True if track else None, "uri": track_uri}.items()
            if v is not None
        }
    )
    return parse_config(data, source="options")


@app.command()
def info(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR", help="A run directory made by `attractor run` or `attractor demo`."
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Show a run directory: the verdict of its stored results first, then member status,
    final metrics and the plan (--json adds the full config).
    """
    from attractor.measure import summarize
    from attractor.measure.verdict import run_verdict
    from attractor.runs.ensemble import Ensemble

    ens = Ensemble.load(run_dir)
    summary = summarize(ens)
    found = run_verdict(ens)
    if as_json:
        emit_json(
            {
                "verdict": found.to_json(),
                "summary": summary,
                "config": ens.config.resolved(),
                "manifest": {k: v for k, v in ens.manifest.items() if k != "config"},
            }
        )
        return
    print_verdict(found)
    print_run_summary(summary)
    typer.echo(
        f"  config hash {ens.manifest['config_hash']}, plan hash {ens.manifest['plan_hash']}, "
        f"strategy {ens.manifest.get('strategy')}"
    )
    typer.echo(status_table(ens.plan))


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory for the demo ensemble.")
    ] = Path("runs/demo"),
    members: Annotated[int, typer.Option(min=1, help="Ensemble members.")] = 32,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a run directory made from another config.")
    ] = False,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Where the members train and are measured: auto, cpu, cuda or cuda:N (the "
            "directory and its files are the same whatever the device).",
        ),
    ] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train the built-in demo (digits-mlp members perturbed in init, data order and bootstrap),
    measure it, write its report.
    """
    from attractor.config import parse_config

    data = json.loads(json.dumps(DEMO_CONFIG))
    data["plan"]["members"] = members
    data["run"]["device"] = device
    summary = _train_and_summarize(parse_config(data, source="demo"), out, force, as_json)
    done = summary["done"] >= 2
    summary["report"] = str(_measure_and_report(out, as_json, device)) if done else None
    emit_json(summary) if as_json else print_run_summary(summary)
    if summary["report"] and not as_json:
        console.print(f"report: {summary['report']}", markup=False, soft_wrap=True)


def _measure_and_report(
    run_dir: Path, quiet: bool, device: str = "cpu", static: bool = False
) -> Path:
    """Measure a run (``RUN/measures.*``, whatever its task) and render every result it holds
    (``static``: PNG figures only, no scripts)."""
    from attractor.measure.dispatch import measure_run
    from attractor.report import render_directory
    from attractor.runs.ensemble import Ensemble

    ens = Ensemble.load(run_dir, device=device)
    # Progress on stderr (stages, then sections), never a spinner on stdout's console.
    ens.store.write(measure_run(ens, progress=not quiet))
    return render_directory(ens.store.root, progress=not quiet, static=static)


#: ``attractor report --static``: the page without scripts (see report/interactive.py).
StaticFlag = Annotated[
    bool,
    typer.Option(
        "--static",
        help="PNG figures only, no scripts: a smaller page (see the README for sizes); by "
        "default the cloud moves, heat maps show values on hover and members can be selected.",
    ),
]


@app.command()
def report(
    run_dir: RunDirArg,
    run_b: Annotated[
        Path | None,
        typer.Argument(
            metavar="[RUN_B]",
            help="A second run of the same task: write the comparison page of RUN_DIR (A) and "
            "RUN_B side by side, in a directory of its own.",
        ),
    ] = None,
    out: CompareOutOption = None,
    force: CompareForceFlag = False,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
    static: StaticFlag = False,
) -> None:
    """Measure a run and write RUN_DIR/report.html, one self-contained page.

    The page shows every result the directory holds (structural curves, sensitivity,
    suggestions, ...). On an experiment's directory (instability, shortcuts, diff, ...)
    nothing is measured: its results are rendered. With RUN_B: the two runs side by side
    with paired intervals (A minus B), written to OUT (default runs/compare-<hash>), never
    into either run's directory.
    """
    from attractor.report import render_directory
    from attractor.runs.store import RunStore

    if run_b is not None:
        compare_report(run_dir, run_b, out, force, device=device, as_json=as_json, static=static)
        return
    if out is not None or force:
        raise UserError("--out and --force go with RUN_B (the comparison page's directory)")
    if RunStore(run_dir).experiment() is None:
        path = _measure_and_report(run_dir, as_json, device, static)
    else:
        path = render_directory(run_dir, progress=not as_json, static=static)
    emit_json({"report": str(path)}) if as_json else console.print(
        f"report: {path}", markup=False, soft_wrap=True
    )
