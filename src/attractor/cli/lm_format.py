"""Plain functions behind the language-model CLI commands; the CLI only parses options and prints.

    attractor lm-compare A B --corpus PATH [--batch-size 8] [--window N] [--stride N]
                         [--top-k 10] [--draws 1000] [--seed 0] [--json]
        -> lm_compare(...) -> dict;  format_comparison(dict) -> text
    attractor lm-search A B [--corpus builtin:pydoc] [--budget 1024] [--length 16]
                        [--objective js] [--methods baseline,sample-a,sample-b,sample-mix,gcg]
                        [--seed 0] [--json]
        -> lm_search(...) -> dict;  format_search(dict) -> text
    attractor lm-export RUN_DIR MEMBER OUT [--step K] [--force] [--json]
        -> lm_export(...) -> dict
    attractor measure RUN_DIR on a tiny-lm run (until measure_ensemble handles sequences)
        -> attractor.measure.lm.measure_lm_run(run_dir, split, draws=...) -> dict;  format_lm_measure(dict) -> text

A and B are Hugging Face model directories, ``RUN_DIR:MEMBER`` or ``module:function``
(see :mod:`attractor.tasks.lm_models`). Bad input raises :class:`attractor.errors.UserError`
(one line, exit 2), including two models with different vocabularies or tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from attractor.measure.lm_compare import STATS, compare_models
from attractor.search.tokens import SAMPLERS, search_divergent
from attractor.tasks.corpus import BUILTIN_PYDOC, iter_corpus
from attractor.tasks.lm_models import load_model, save_member


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- tokens/s" if speed is None else f"{speed:,.0f} tokens/s")


def lm_compare(a: str, b: str, corpus: str, *, batch_size: int = 8, window: int | None = None, stride: int | None = None,
               top_k: int = 10, draws: int = 1000, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Load both models and compare them over ``corpus``; the :class:`Comparison` as a dict."""
    model_a, model_b = load_model(a), load_model(b)
    documents = iter_corpus(corpus)
    if not progress:
        result = compare_models(model_a, model_b, documents, batch_size=batch_size, window=window, stride=stride,
                                top_k=top_k, draws=draws, seed=seed)
        return {"corpus": corpus, **result.to_dict()}
    columns = (TextColumn("comparing"), BarColumn(), TextColumn("{task.completed:,.0f} tokens"), _Rate(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("compare", total=None)
        result = compare_models(model_a, model_b, documents, batch_size=batch_size, window=window, stride=stride, top_k=top_k,
                                draws=draws, seed=seed, on_tokens=lambda n: bar.advance(task, n))
    return {"corpus": corpus, **result.to_dict()}


def format_comparison(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_compare`'s dict."""
    lines = [f"A = {data['model_a']}", f"B = {data['model_b']}",
             f"{data['tokens']:,} positions in {data['documents']} documents of {data['corpus']}", ""]
    levels = list(next(iter(data["quantiles"].values())))
    lines.append(f"{'statistic':<12} {'mean':>9} {'95% CI (documents)':>22} " + " ".join(f"{'q' + q:>9}" for q in levels))
    for name in STATS:
        m = data["means"][name]
        ci = f"[{m['low']:.4f}, {m['high']:.4f}]"
        lines.append(f"{name:<12} {m['value']:>9.4f} {ci:>22} " + " ".join(f"{data['quantiles'][name][q]:>9.4f}" for q in levels))
    if data["top"]:
        lines += ["", f"most divergent positions (by {data['rank_by']}):"]
        for t in data["top"]:
            lines.append(f"  {t['stats'][data['rank_by']]:.4f}  {t['document']} @ {t['position']}: ...{t['context'][-40:]!r} -> {t['next_token']!r}")
            lines.append(f"          A: {_tops(t['top_a'])}   B: {_tops(t['top_b'])}")
    return "\n".join(lines)


def _tops(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{token!r} {p:.2f}" for token, p in pairs)


def lm_search(a: str, b: str, corpus: str = BUILTIN_PYDOC, *, budget: int = 1024, length: int = 16, objective: str = "js",
              methods: tuple[str, ...] = ("baseline", *SAMPLERS, "gcg"), top: int = 5, seed: int = 0) -> dict[str, Any]:
    """Load both models and search for divergent contexts; the :class:`SearchResult` as a dict."""
    from attractor.errors import UserError

    model_a, model_b = load_model(a), load_model(b)
    try:
        result = search_divergent(model_a, model_b, iter_corpus(corpus), budget=budget, length=length, objective=objective,
                                  methods=methods, top=top, seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return {"corpus": corpus, **result.to_dict()}


def format_search(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_search`'s dict."""
    lines = [f"A = {data['model_a']}", f"B = {data['model_b']}",
             f"{data['objective']} of the next-token distributions after {data['length']}-token contexts; "
             f"budget {data['budget']} forward passes per method", ""]
    lines.append(f"{'method':<11} {'passes':>6} {'best':>9} {'gain':>9} {'x baseline':>10}  context")
    for name, m in data["methods"].items():
        best = m["best"][0] if m["best"] else {"divergence": float("nan"), "text": ""}
        lines.append(f"{name:<11} {m['passes']:>6} {best['divergence']:>9.4f} {m['gain']:>+9.4f} {m['ratio']:>10.2f}  {best['text']!r}")
    return "\n".join(lines)


def lm_export(run_dir: str | Path, member: int, out: str | Path, *, step: int | None = None, force: bool = False) -> dict[str, Any]:
    """Save a run member as a Hugging Face model directory; ``{"path": ..., "files": [...]}``."""
    path = save_member(run_dir, member, out, step=step, force=force)
    return {"path": str(path), "files": sorted(p.name for p in path.iterdir())}


def format_lm_measure(data: dict[str, Any]) -> str:
    """Text report of :func:`attractor.measure.lm.measure_lm_run`'s dict."""
    lines = [f"{data['run']}: {len(data['members'])} members, {data['split']} split "
             f"({data['windows']} windows of {data['documents']} documents)"]
    for name, label in (("loss", "next-token loss"), ("pairwise_js", "pairwise JS"), ("kl_to_mean", "KL to ensemble mean")):
        e = data[name]
        lines.append(f"  {label:<20} {e['value']:.4f}  [{e['low']:.4f}, {e['high']:.4f}]")
    lines.append("  loss per member: " + ", ".join(f"{m}: {v:.4f}" for m, v in zip(data["members"], data["loss"]["per_member"], strict=True)))
    return "\n".join(lines)
