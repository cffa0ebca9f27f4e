"""`attractor` command line: a thin shell over the library. Every command takes ``--json``.

Bad input never ends in a traceback: a :class:`UserError` prints one line and exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from attractor.config import Config, load_config
from attractor.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure and improve the stability of training runs.")
console = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ConfigArg = Annotated[Path, typer.Argument(help="TOML config (see examples/ and the README's config reference).")]

DEMO_CONFIG: dict[str, Any] = {
    "task": {"name": "digits-mlp", "hidden": [128, 128]},
    "trainer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 10},
    "plan": {"members": 32, "design": "random", "seed": 0, "vary": ["init_seed", "data_seed", "bootstrap"]},
    "run": {"strategy": "auto", "snapshots": 8},
}


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def tasks(as_json: JsonFlag = False) -> None:
    """List the built-in tasks and their options."""
    from attractor.tasks import list_tasks

    found = list_tasks()
    if as_json:
        _emit_json([{"name": n, "summary": s, "options": o} for n, s, o in found])
        return
    table = Table("task", "summary", "options (defaults)")
    for name, summary, options in found:
        table.add_row(name, summary, ", ".join(f"{k}={v}" for k, v in options.items()))
    console.print(table)
    console.print("Your own task: [task] name = 'package.module:function' (a function returning attractor.Task).")


@app.command()
def plan(config: ConfigArg, as_json: JsonFlag = False) -> None:
    """Print the resolved config (every default filled in) and the plan table it makes."""
    from attractor.plan import build_plan, describe_plan
    from attractor.tasks import build_task

    cfg = load_config(config)
    task = build_task(cfg.task)
    table = build_plan(cfg.plan, cfg.trainer, task.group_ids)
    if as_json:
        _emit_json({"config": cfg.resolved(), "config_hash": cfg.hash(), "plan_hash": table.hash(), "plan": table.table.to_dict("records")})
        return
    console.print_json(json.dumps(cfg.resolved()))
    typer.echo(describe_plan(table))


def _train_and_summarize(cfg: Config, out: Path, force: bool, as_json: bool) -> dict[str, Any]:
    from attractor.measure import summarize
    from attractor.train.run import train

    ens = train(cfg, out, force=force, progress=not as_json)
    return summarize(ens)


def _print_summary(summary: dict[str, Any]) -> None:
    console.print(f"[bold]{summary['task']}[/bold] ensemble in {summary['run']}: "
                  f"{summary['done']} done, {summary['diverged']} diverged, {summary['pending']} pending of {summary['members']}")
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        if key in summary:
            s = summary[key]
            console.print(f"  {label:<22} {s['mean']:.4f} ± {s['sd']:.4f} (sd over members; min {s['min']:.4f}, max {s['max']:.4f})")
    if "pairwise_disagreement" in summary:
        d = summary["pairwise_disagreement"]
        console.print(f"  {'pairwise disagreement':<22} {d['mean']:.4f} mean over pairs (max {d['max']:.4f}) of test predictions")


@app.command()
def run(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create, or to resume if it holds this config's run.")],
    force: Annotated[bool, typer.Option("--force", help="Delete a run directory made from another config and start over.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train every member of CONFIG's plan into OUT (resumes an interrupted run)."""
    summary = _train_and_summarize(load_config(config), out, force, as_json)
    _emit_json(summary) if as_json else _print_summary(summary)


@app.command()
def info(run_dir: Annotated[Path, typer.Argument(help="A run directory.")], as_json: JsonFlag = False) -> None:
    """Show a run directory: config, member status, final metrics."""
    from attractor.ensemble import Ensemble
    from attractor.measure import summarize

    ens = Ensemble.load(run_dir)
    summary = summarize(ens)
    if as_json:
        _emit_json({"summary": summary, "config": ens.config.resolved(), "manifest": {k: v for k, v in ens.manifest.items() if k != "config"}})
        return
    _print_summary(summary)
    console.print(f"  config hash {ens.manifest['config_hash']}, plan hash {ens.manifest['plan_hash']}, strategy {ens.manifest.get('strategy')}")
    console.print(ens.plan.to_string(max_rows=20))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the demo ensemble.")] = Path("runs/demo"),
    members: Annotated[int, typer.Option(help="Ensemble members.")] = 32,
    force: Annotated[bool, typer.Option("--force", help="Replace a run directory made from another config.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train the built-in demo: digits-mlp members perturbed in init, data order and bootstrap."""
    from attractor.config import parse_config

    data = json.loads(json.dumps(DEMO_CONFIG))
    data["plan"]["members"] = members
    summary = _train_and_summarize(parse_config(data, source="demo"), out, force, as_json)
    _emit_json(summary) if as_json else _print_summary(summary)


def main() -> None:
    """Console entry point: one line and exit code 2 for anything the user must fix."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
