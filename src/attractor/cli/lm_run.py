"""The work of the lm commands: plain functions that load models and return JSON-able dicts.

Models and measures are imported inside the functions, so transformers loads only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attractor.tasks.corpus import BUILTIN_PYDOC

SEARCH_METHODS = "baseline,sample-a,sample-b,sample-mix,gcg"

__all__ = ["SEARCH_METHODS", "lm_compare", "lm_export", "lm_search"]


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
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Load both models and compare them over ``corpus``; the :class:`Comparison` as a dict.

    ``device``: where the forward passes run (the divergences are float64 on the CPU).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from attractor.measure.lm_compare import compare_models
    from attractor.tasks.corpus import iter_corpus

    model_a, model_b = _load_pair(a, b, device)
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


def _load_pair(a: str, b: str, device: str) -> tuple[Any, Any]:
    """Both :class:`~attractor.tasks.lm_models.LanguageModel` s, computing on ``device``; a
    bad device name or a GPU this machine lacks is one line, before the models load.
    """
    from attractor.runs.lm_models import load_model
    from attractor.training.device import resolve_device

    where = resolve_device(device)
    models = load_model(a), load_model(b)
    return models if where.type == "cpu" else (models[0].to(where), models[1].to(where))


def _rate_column() -> Any:
    """A progress column with tokens per second (rich imported only when a bar is shown)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- tokens/s" if speed is None else f"{speed:,.0f} tokens/s")

    return Rate()


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
    device: str = "cpu",
) -> dict[str, Any]:
    """Load both models and search for divergent contexts; the :class:`SearchResult` as a dict.

    ``device``: where the forward and backward passes run (the search's own draws and scores
    stay on the CPU).
    """
    from attractor.errors import UserError
    from attractor.search.tokens import search_divergent
    from attractor.tasks.corpus import iter_corpus

    model_a, model_b = _load_pair(a, b, device)
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
