"""What every experiment command shares (settings, directory, page), and `attractor diff`.

An experiment command is thin: it parses its options into the experiment's settings model,
runs it with :func:`attractor.experiments.run_experiment` in a directory of its own (the
same settings reopen it, others are refused unless ``--force``), prints what it found and
renders ``OUT/report.html`` from the results the directory holds. Unless ``--json``, the
experiment and the page tell on stderr how far they are (:mod:`attractor.runs.progress`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from attractor.cli._shared import JsonFlag, app, console, emit_json
from attractor.errors import UserError

M = TypeVar("M", bound=BaseModel)

ForceFlag = Annotated[
    bool,
    typer.Option("--force", help="Delete OUT first if it holds another experiment or settings."),
]


def settings_of(model: type[M], /, **values: Any) -> M:
    """``model(**values)``, or one line naming the first bad value (exit 2, nothing written)."""
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or model.__name__
        raise UserError(f"{where}: {error['msg']} (got {error.get('input')!r})") from None


def render_page(root: Path, progress: bool = False) -> Path:
    """``ROOT/report.html``: the sections of every result the experiment directory holds
    (``progress``: counted on stderr as they are rendered).
    """
    from attractor.report import render_directory

    return render_directory(Path(root), progress=progress)


def emit_result(result: Any, files: dict[str, str]) -> None:
    """``--json``: the result's JSON (strict: NaN as null) and the files written."""
    emit_json({**result.to_json(), "files": files})


_ModelAArg = Annotated[
    str,
    typer.Argument(
        metavar="A",
        help="Model spec: RUN_DIR:MEMBER[:STEP], RUN_DIR:mean, or FILE.safetensors (with --task); "
        "append @noise=1e-3, @dropout=0.1, @dropconnect=0.05, @prune=0.2, @fp16 or @int8 for a "
        "perturbed copy.",
    ),
]
_ModelBArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[B]",
        help="Second model spec (same task shapes); omit it, with A a run directory, "
        "to search where that run's members spread most.",
    ),
]
_EpsOption = Annotated[
    float | None,
    typer.Option(
        help="Radius of the L-infinity balls around test points; omit for the training data's "
        "whole box."
    ),
]
_PointsOption = Annotated[int, typer.Option(min=1, help="Test points (ball centres).")]
_ObjectiveOption = Annotated[
    str, typer.Option(help="Search objective: js, kl, symmetric_kl, logit, logit:K or margin.")
]
_DeltaOption = Annotated[
    float | None,
    typer.Option(
        help="Threshold on the largest logit difference: verified / falsified / unknown per point."
    ),
]
_BudgetOption = Annotated[
    float, typer.Option(help="Branch-and-bound seconds per point (0: one-shot bound only).")
]
_MethodOption = Annotated[
    str,
    typer.Option(help="Certificate bounds: auto, differential, linear, optimized or interval."),
]
_TaskOption = Annotated[
    str | None,
    typer.Option(help="Task for safetensors files: a run dir, a config TOML or a task name."),
]
_CentersOption = Annotated[
    Path | None,
    typer.Option(
        help="A .npy file [points, *input_shape] of ball centres instead of the test inputs."
    ),
]
_ClipOption = Annotated[
    bool,
    typer.Option("--clip/--no-clip", help="Intersect the balls with the training data's range."),
]
_RestartsOption = Annotated[int, typer.Option(min=1, help="PGD restarts per point.")]
_StepsOption = Annotated[int, typer.Option(min=0, help="PGD steps per restart.")]
_SeedOption = Annotated[int, typer.Option(help="Seed of the random starts and samples.")]
_DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the search runs the models: cpu, cuda, cuda:N or auto (CUDA when "
        "available); the certificate is computed in float64 on the CPU.",
    ),
]
_OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Directory of this comparison: diff.json, diff.parquet, report.html "
        "(default: runs/diff-<hash of the settings>, one per comparison).",
    ),
]


@app.command()
def diff(
    model_a: _ModelAArg,
    model_b: _ModelBArg = None,
    eps: _EpsOption = 0.05,
    points: _PointsOption = 20,
    objective: _ObjectiveOption = "js",
    delta: _DeltaOption = None,
    budget: _BudgetOption = 10.0,
    method: _MethodOption = "auto",
    task: _TaskOption = None,
    centers: _CentersOption = None,
    clip: _ClipOption = True,
    restarts: _RestartsOption = 8,
    steps: _StepsOption = 50,
    seed: _SeedOption = 0,
    out: _OutOption = None,
    device: _DeviceOption = "cpu",
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Where do two models disagree? A search from below, a certificate from above.

    PGD (vs random sampling at the same budget) finds the inputs where A and B disagree
    most; for Linear/ReLU networks branch and bound certifies how far their logits can
    differ over each ball, with the gap to the best input found. With A a run directory
    and no B: the inputs where its members spread most (objective mi or pairwise_js).
    Writes OUT/diff.json and OUT/report.html in a directory of its own (never A's run
    directory, never over another comparison); `attractor report OUT` shows it again.
    """
    from attractor.experiments.diff import DiffSettings, run_diff

    settings = settings_of(
        DiffSettings,
        a=model_a,
        b=model_b,
        task=task,
        eps=eps,
        points=points,
        objective=objective,
        delta=delta,
        budget_s=budget,
        method=method,
        restarts=restarts,
        steps=steps,
        seed=seed,
        centers=None if centers is None else str(centers),
        clip=clip,
        device=device,
    )
    store, result = run_diff(settings, out, force=force, progress=not as_json)
    page = render_page(store.root, progress=not as_json)
    files = {"json": str(store.root / "diff.json"), "html": str(page)}
    if as_json:
        emit_result(result, files)
        return
    _print_diff(result, files)


def _print_diff(result: Any, files: dict[str, str]) -> None:
    """The search against its baseline, the certificate (or why there is none), the files."""
    s = result.summary()
    console.print(
        f"search ({s['objective']}): best {s['search_best']:.4g} (PGD) vs {s['baseline_best']:.4g} "
        "(random), "
        f"mean per point {s['search_mean_per_point']:.4g} vs {s['baseline_mean_per_point']:.4g}, "
        f"{s['evaluations']} evaluations each",
        markup=False,
        soft_wrap=True,
    )
    if result.certificate is None:
        console.print(f"no certificate: {result.certify_note}", markup=False, soft_wrap=True)
    else:
        _print_certificate(result)
    console.print(f"wrote {files['json']} and {files['html']}", markup=False, soft_wrap=True)


def _print_certificate(result: Any) -> None:
    """Per ball: certified upper bound, attained lower bound, gap, verdict; then per output."""
    cert = result.certificate
    table = Table(
        "point",
        "certified upper",
        "attained lower",
        "gap",
        "verdict",
        title="max over outputs of |f_B - f_A| (logits) per ball",
    )
    for i, (up, low, verdict) in enumerate(
        zip(cert.upper.tolist(), cert.lower.tolist(), cert.verdicts, strict=True)
    ):
        table.add_row(str(i), f"{up:.4g}", f"{low:.4g}", f"{up - low:.3g}", verdict)
    console.print(table)
    per = Table(
        "output",
        "certified interval of f_B - f_A",
        "attained range",
        title="per output, over all balls",
    )
    for row in result.per_output.itertuples():
        per.add_row(
            str(row.output),
            f"[{row.certified_low:.4g}, {row.certified_high:.4g}]",
            f"[{row.attained_low:.4g}, {row.attained_high:.4g}]",
        )
    console.print(per)
