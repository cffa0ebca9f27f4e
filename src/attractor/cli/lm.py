"""Commands for causal language models: lm-compare, lm-search, lm-export (extra ``lm``).

Each command only parses options and prints; plain functions in :mod:`attractor.cli.lm_run`
do the work and return JSON-able dicts (tests and scripts call them directly), and
:mod:`attractor.cli.lm_format` turns them into text::

    attractor lm-compare A B --corpus PATH [--batch-size 8] [--window N] [--stride N]
                         [--top-k 10] [--draws 1000] [--seed 0] [--json]
        -> lm_compare(...) -> dict;  format_comparison(dict) -> text
    attractor lm-search A B [--corpus builtin:pydoc] [--budget 1024] [--length 16]
                        [--objective js] [--methods baseline,sample-a,sample-b,sample-mix,gcg]
                        [--seed 0] [--json]
        -> lm_search(...) -> dict;  format_search(dict) -> text
    attractor lm-export RUN_DIR MEMBER OUT [--step K] [--force] [--json]
        -> lm_export(...) -> dict
    attractor measure RUN_DIR on a tiny-lm run
        -> attractor.measure.lm.measure_lm_run(...) -> dict;  format_lm_measure(dict) -> text

A and B are Hugging Face model directories, ``RUN_DIR:MEMBER`` or ``module:function``
(see :mod:`attractor.runs.lm_models`). Bad input raises :class:`attractor.errors.UserError`
(one line, exit 2), including two models with different vocabularies or tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attractor.cli._shared import JsonFlag, app, console, emit_json
from attractor.cli.lm_format import format_comparison, format_lm_measure, format_search
from attractor.cli.lm_run import SEARCH_METHODS, lm_compare, lm_export, lm_search
from attractor.tasks.corpus import BUILTIN_PYDOC

# The work and the text reports moved to lm_run.py and lm_format.py; they stay importable here.
__all__ = [
    "format_comparison",
    "format_lm_measure",
    "format_search",
    "lm_compare",
    "lm_compare_command",
    "lm_export",
    "lm_export_command",
    "lm_search",
    "lm_search_command",
]

ModelA = Annotated[
    str,
    typer.Argument(
        metavar="A",
        help=(
            "A local Hugging Face model directory, RUN_DIR:MEMBER of a tiny-lm run, or "
            "module:function."
        ),
    ),
]
ModelB = Annotated[
    str, typer.Argument(metavar="B", help="The second model (same vocabulary and tokenizer).")
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the models' forward passes run: cpu, cuda, cuda:N or auto (CUDA when "
        "available); divergences are computed in float64 on the CPU.",
    ),
]
CorpusOption = Annotated[
    str, typer.Option(help="A text file, a directory of text files, or builtin:pydoc.")
]


@app.command("lm-compare")
def lm_compare_command(
    model_a: ModelA,
    model_b: ModelB,
    corpus: CorpusOption = BUILTIN_PYDOC,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    window: Annotated[
        int | None,
        typer.Option(min=2, help="Tokens per window (default: the smaller model context)."),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens between window starts (default: half the window)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Most divergent positions listed.")] = 10,
    draws: Annotated[
        int, typer.Option(min=1, help="Bootstrap draws over documents for the 95% intervals.")
    ] = 1000,
    seed: Annotated[
        int, typer.Option(help="Seed of the bootstrap and the quantile reservoir.")
    ] = 0,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Compare two causal LMs' next-token distributions over a corpus, token by token.

    KL both ways, Jensen-Shannon, total variation, top-1 agreement and each model's entropy
    per position; means with bootstrap intervals over documents, quantiles, and the most
    divergent positions with their context. Streams the corpus in batches.
    """
    data = lm_compare(
        model_a,
        model_b,
        corpus,
        batch_size=batch_size,
        window=window,
        stride=stride,
        top_k=top_k,
        draws=draws,
        seed=seed,
        device=device,
        progress=not as_json,
    )
    _emit(data, as_json, format_comparison)


@app.command("lm-search")
def lm_search_command(
    model_a: ModelA,
    model_b: ModelB,
    corpus: Annotated[
        str,
        typer.Option(
            help="Where random contexts come from: a text file, a directory, or builtin:pydoc.",
        ),
    ] = BUILTIN_PYDOC,
    budget: Annotated[
        int, typer.Option(min=1, help="Forward passes per method (a gradient counts as two).")
    ] = 1024,
    length: Annotated[int, typer.Option(min=1, help="Tokens per context.")] = 16,
    objective: Annotated[
        str,
        typer.Option(help="Divergence of the next-token distributions: js, kl_ab, kl_ba or tv."),
    ] = "js",
    methods: Annotated[
        str, typer.Option(help="Comma-separated: baseline, sample-a, sample-b, sample-mix, gcg.")
    ] = SEARCH_METHODS,
    top: Annotated[int, typer.Option(min=1, help="Best contexts kept per method.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Search for the contexts where two causal LMs' next-token distributions diverge most.

    Random corpus contexts (the baseline), contexts sampled from A, B and their mixture, and
    a GCG-style token search, each at the same number of forward passes; the gain over the baseline.
    """
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    data = lm_search(
        model_a,
        model_b,
        corpus,
        budget=budget,
        length=length,
        objective=objective,
        methods=chosen,
        top=top,
        seed=seed,
        device=device,
    )
    _emit(data, as_json, format_search)


@app.command("lm-export")
def lm_export_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A tiny-lm run directory.")],
    member: Annotated[int, typer.Argument(help="The member to export.")],
    out: Annotated[
        Path, typer.Argument(help="An empty or new folder for the Hugging Face model directory.")
    ],
    step: Annotated[
        int | None, typer.Option(help="Snapshot step (default: the member's last).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty OUT.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Save a run member as a standard Hugging Face causal-LM directory (AutoModelForCausalLM loads
    it).
    """
    data = lm_export(run_dir, member, out, step=step, force=force)
    _emit(data, as_json, lambda d: f"wrote {d['path']}: {', '.join(d['files'])}")


def _emit(data: dict[str, Any], as_json: bool, text: Any) -> None:
    if as_json:
        emit_json(data)
    else:
        console.print(text(data), markup=False, soft_wrap=True)
