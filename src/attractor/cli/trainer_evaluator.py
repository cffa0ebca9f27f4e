"""`attractor evaluator`: trainer2 as a learned evaluator (examples -> evaluators -> models).

Runs the ``evaluator`` experiment (:mod:`attractor.stack.learned.experiment`) in a
directory of its own and renders its page there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attractor.cli._shared import JsonFlag, app, console
from attractor.cli.experiments import ForceFlag, emit_result, render_page, settings_of

_ConfigArg = Annotated[
    Path,
    typer.Argument(
        metavar="CONFIG",
        help="TOML with an [evaluator] table (setting digits or text, preferred or rule, "
        "examples, resamples, seeds, device, reward_model, trainer, structural); see "
        "examples/evaluator-digits.toml and examples/evaluator-text.toml.",
    ),
]
_OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Experiment directory (default runs/evaluator-HASH)."),
]
_DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where the evaluators train and score, the generators sample and fine-tune and a "
        "base is trained: auto, cpu, cuda or cuda:N (overrides [evaluator] device, default "
        "auto). Measures stay on the CPU; the directory stays the same, results agree across "
        "devices to float tolerance.",
    ),
]


@app.command()
def evaluator(
    config: _ConfigArg,
    out: _OutOption = None,
    device: _DeviceOption = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """trainer2 as a learned evaluator: resample the human's examples, train evaluators on
    them, let each drive a trainer (best-of-n or reward-weighted fine-tuning) of a
    generator (a denoise-digits sampler, or a tiny-lm language model with the lm extra),
    and measure whether the final models land in one basin.

    Members are a factorial of example resamples x evaluator seeds x trainer seeds: the
    spread of the models' true preference (with intervals), the share each factor adds,
    the evaluators' own disagreement, proxy vs true reward along the rounds, the design
    perturbed (width, weight decay, label noise, KL), and the examples to label next.
    Writes OUT/evaluator.json, its tables and OUT/report.html. With --device cuda the
    evaluators, the fine-tuning and a base's training run on the GPU (random numbers drawn
    on the CPU, the same files); the measures stay on the CPU.
    """
    from attractor.experiments import default_out, run_experiment
    from attractor.stack.learned.settings import EvaluatorSettings, read_evaluator

    table = read_evaluator(config)
    if device is not None:
        table["device"] = device  # run_experiment refuses a device this machine lacks
    settings = settings_of(EvaluatorSettings, **table)
    out = out if out is not None else default_out("evaluator", settings)
    store, results = run_experiment("evaluator", settings, out, force=force, progress=not as_json)
    page = render_page(store.root, progress=not as_json)
    result = results[0]
    if as_json:
        emit_result(result, {"json": str(store.root / "evaluator.json"), "html": str(page)})
        return
    s = result.summary
    before, after = s["true_base"], s["true_final"]
    console.print(
        f"true preference {before['true']:.3f} -> {after['true']:.3f} "
        f"(95 % CI {after['true_low']:.3f} - {after['true_high']:.3f}) over {s['members']} "
        "members",
        markup=False,
        soft_wrap=True,
    )
    if "dominant" in s:
        top = s["dominant"]
        console.print(
            f"the spread is driven by {top['factor']} ({100 * top['share']:.0f} % of variance)",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"report: {page}", markup=False, soft_wrap=True)
