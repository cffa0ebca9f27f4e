"""Commands for causal language models: lm-compare, lm-search, lm-export (extra ``lm``).

Each command only parses options and prints; the plain functions below do the work and
return JSON-able dicts (tests and scripts call them directly)::

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
Models and measures are imported inside the functions, so transformers loads only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attractor.cli._shared import JsonFlag, app, console, emit_json
from attractor.tasks.corpus import BUILTIN_PYDOC

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
CorpusOption = Annotated[
    str, typer.Option(help="A text file, a directory of text files, or builtin:pydoc.")
]
SEARCH_METHODS = "baseline,sample-a,sample-b,sample-mix,gcg"


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


def lm_compare(
    a: str,
    b: str,
    corpus: str,
    *,
    batch_size: int = 8,
    window: int | None = None,
    stride: int | None = None,
    top_k: int = 10,
    draws: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Load both models and compare them over ``corpus``; the :class:`Comparison` as a dict."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from attractor.measure.lm_compare import compare_models
    from attractor.runs.lm_models import load_model
    from attractor.tasks.corpus import iter_corpus

    model_a, model_b = load_model(a), load_model(b)
    options = {
        "batch_size": batch_size,
        "window": window,
        "stride": stride,
        "top_k": top_k,
        "draws": draws,
        "seed": seed,
    }
    if not progress:
        result = compare_models(model_a, model_b, iter_corpus(corpus), **options)
        return {"corpus": corpus, **result.to_dict()}
    columns = (
        TextColumn("comparing"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} tokens"),
        _rate_column(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("compare", total=None)
        result = compare_models(
            model_a,
            model_b,
            iter_corpus(corpus),
            **options,
            on_tokens=lambda n: bar.advance(task, n),
        )
    return {"corpus": corpus, **result.to_dict()}


def _rate_column() -> Any:
    """A progress column with tokens per second (rich imported only when a bar is shown)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- tokens/s" if speed is None else f"{speed:,.0f} tokens/s")

    return Rate()


def format_comparison(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_compare`'s dict."""
    from attractor.measure.lm_compare import STATS

    lines = [
        f"A = {data['model_a']}",
        f"B = {data['model_b']}",
        f"{data['tokens']:,} positions in {data['documents']} documents of {data['corpus']}",
        "",
    ]
    levels = list(next(iter(data["quantiles"].values())))
    lines.append(
        f"{'statistic':<12} {'mean':>9} {'95% CI (documents)':>22} "
        + " ".join(f"{'q' + q:>9}" for q in levels)
    )
    for name in STATS:
        m = data["means"][name]
        ci = f"[{m['low']:.4f}, {m['high']:.4f}]"
        quantiles = " ".join(f"{data['quantiles'][name][q]:>9.4f}" for q in levels)
        lines.append(f"{name:<12} {m['value']:>9.4f} {ci:>22} " + quantiles)
    if data["top"]:
        lines += ["", f"most divergent positions (by {data['rank_by']}):"]
        for t in data["top"]:
            lines.append(
                f"  {t['stats'][data['rank_by']]:.4f}  {t['document']} @ {t['position']}: "
                f"...{t['context'][-40:]!r} -> {t['next_token']!r}"
            )
            lines.append(f"          A: {_tops(t['top_a'])}   B: {_tops(t['top_b'])}")
    return "\n".join(lines)


def _tops(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{token!r} {p:.2f}" for token, p in pairs)


def lm_search(
    a: str,
    b: str,
    corpus: str = BUILTIN_PYDOC,
    *,
    budget: int = 1024,
    length: int = 16,
    objective: str = "js",
    methods: tuple[str, ...] = tuple(SEARCH_METHODS.split(",")),
    top: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Load both models and search for divergent contexts; the :class:`SearchResult` as a dict."""
    from attractor.errors import UserError
    from attractor.runs.lm_models import load_model
    from attractor.search.tokens import search_divergent
    from attractor.tasks.corpus import iter_corpus

    model_a, model_b = load_model(a), load_model(b)
    try:
        result = search_divergent(
            model_a,
            model_b,
            iter_corpus(corpus),
            budget=budget,
            length=length,
            objective=objective,
            methods=methods,
            top=top,
            seed=seed,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return {"corpus": corpus, **result.to_dict()}


def format_search(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_search`'s dict."""
    lines = [
        f"A = {data['model_a']}",
        f"B = {data['model_b']}",
        f"{data['objective']} of the next-token distributions after {data['length']}-token "
        f"contexts; budget {data['budget']} forward passes per method",
        "",
    ]
    lines.append(
        f"{'method':<11} {'passes':>6} {'best':>9} {'gain':>9} {'x baseline':>10}  context"
    )
    for name, m in data["methods"].items():
        best = m["best"][0] if m["best"] else {"divergence": float("nan"), "text": ""}
        lines.append(
            f"{name:<11} {m['passes']:>6} {best['divergence']:>9.4f} {m['gain']:>+9.4f} "
            f"{m['ratio']:>10.2f}  {best['text']!r}"
        )
    return "\n".join(lines)


def lm_export(
    run_dir: str | Path,
    member: int,
    out: str | Path,
    *,
    step: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Save a run member as a Hugging Face model directory; ``{"path": ..., "files": [...]}``."""
    from attractor.runs.lm_models import save_member

    path = save_member(run_dir, member, out, step=step, force=force)
    return {"path": str(path), "files": sorted(p.name for p in path.iterdir())}


def format_lm_measure(data: dict[str, Any]) -> str:
    """Text report of :func:`attractor.measure.lm.measure_lm_run`'s dict."""
    lines = [
        f"{data['run']}: {len(data['members'])} members, {data['split']} split "
        f"({data['windows']} windows of {data['documents']} documents)"
    ]
    labels = (
        ("loss", "next-token loss"),
        ("pairwise_js", "pairwise JS"),
        ("kl_to_mean", "KL to ensemble mean"),
    )
    for name, label in labels:
        e = data[name]
        lines.append(f"  {label:<20} {e['value']:.4f}  [{e['low']:.4f}, {e['high']:.4f}]")
    per_member = zip(data["members"], data["loss"]["per_member"], strict=True)
    lines.append("  loss per member: " + ", ".join(f"{m}: {v:.4f}" for m, v in per_member))
    return "\n".join(lines)
