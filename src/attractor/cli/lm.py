"""Commands for causal language models: lm-compare, lm-search, lm-export (extra ``lm``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attractor.cli._shared import JsonFlag, app, console, emit_json

ModelA = Annotated[str, typer.Argument(metavar="A", help="A local Hugging Face model directory, RUN_DIR:MEMBER of a tiny-lm run, or module:function.")]
ModelB = Annotated[str, typer.Argument(metavar="B", help="The second model (same vocabulary and tokenizer).")]


@app.command("lm-compare")
def lm_compare(
    model_a: ModelA,
    model_b: ModelB,
    corpus: Annotated[str, typer.Option(help="A text file, a directory of text files, or builtin:pydoc.")] = "builtin:pydoc",
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    window: Annotated[int | None, typer.Option(min=2, help="Tokens per window (default: the smaller model context).")] = None,
    stride: Annotated[int | None, typer.Option(min=1, help="Tokens between window starts (default: half the window).")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Most divergent positions listed.")] = 10,
    draws: Annotated[int, typer.Option(min=1, help="Bootstrap draws over documents for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and the quantile reservoir.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Compare two causal LMs' next-token distributions over a corpus, token by token.

    KL both ways, Jensen-Shannon, total variation, top-1 agreement and each model's entropy
    per position; means with bootstrap intervals over documents, quantiles, and the most
    divergent positions with their context. Streams the corpus in batches.
    """
    from attractor.cli.lm_format import format_comparison
    from attractor.cli.lm_format import lm_compare as compare

    data = compare(model_a, model_b, corpus, batch_size=batch_size, window=window, stride=stride, top_k=top_k, draws=draws,
                   seed=seed, progress=not as_json)
    emit_json(data) if as_json else console.print(format_comparison(data), markup=False, soft_wrap=True)


@app.command("lm-search")
def lm_search(
    model_a: ModelA,
    model_b: ModelB,
    corpus: Annotated[str, typer.Option(help="Where random contexts come from: a text file, a directory, or builtin:pydoc.")] = "builtin:pydoc",
    budget: Annotated[int, typer.Option(min=1, help="Forward passes per method (a gradient counts as two).")] = 1024,
    length: Annotated[int, typer.Option(min=1, help="Tokens per context.")] = 16,
    objective: Annotated[str, typer.Option(help="Divergence of the next-token distributions: js, kl_ab, kl_ba or tv.")] = "js",
    methods: Annotated[str, typer.Option(help="Comma-separated: baseline, sample-a, sample-b, sample-mix, gcg.")] = "baseline,sample-a,sample-b,sample-mix,gcg",
    top: Annotated[int, typer.Option(min=1, help="Best contexts kept per method.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Search for the contexts where two causal LMs' next-token distributions diverge most.

    Random corpus contexts (the baseline), contexts sampled from A, B and their mixture, and
    a GCG-style token search, each at the same number of forward passes; the gain over the baseline.
    """
    from attractor.cli.lm_format import format_search
    from attractor.cli.lm_format import lm_search as search

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    data = search(model_a, model_b, corpus, budget=budget, length=length, objective=objective, methods=chosen, top=top, seed=seed)
    emit_json(data) if as_json else console.print(format_search(data), markup=False, soft_wrap=True)


@app.command("lm-export")
def lm_export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A tiny-lm run directory.")],
    member: Annotated[int, typer.Argument(help="The member to export.")],
    out: Annotated[Path, typer.Argument(help="An empty or new folder for the Hugging Face model directory.")],
    step: Annotated[int | None, typer.Option(help="Snapshot step (default: the member's last).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty OUT.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Save a run member as a standard Hugging Face causal-LM directory (AutoModelForCausalLM loads it)."""
    from attractor.cli.lm_format import lm_export as export

    data = export(run_dir, member, out, step=step, force=force)
    emit_json(data) if as_json else console.print(f"wrote {data['path']}: {', '.join(data['files'])}", markup=False, soft_wrap=True)



