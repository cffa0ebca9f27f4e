"""Where do two causal LMs disagree on a corpus? Per-position divergences, streamed.

For every token position ``t`` of every document, the two models' next-token
distributions ``p = A(. | x_<=t)`` and ``q = B(. | x_<=t)`` give (natural logs, nats):
``KL(p || q)``, ``KL(q || p)``, Jensen-Shannon ``JS(p, q)`` (at most ln 2), total variation
``TV = 0.5 |p - q|_1`` (in [0, 1]), top-1 agreement (argmax equal) and each model's
entropy. Means are over all positions of the corpus, with percentile bootstrap intervals
that resample *documents* (positions of one document are not independent); quantiles
come from a seeded uniform reservoir sample of positions (exact while the corpus has at
most ``reservoir`` positions); the ``top_k`` positions with the largest ``rank_by``
statistic are kept with their context and both models' most likely tokens.

Streaming: documents are read one at a time and scored in batches of windows, so memory
holds one batch, one number per document and statistic, the reservoir and the top-k —
never the corpus. Documents longer than the context are scored with sliding windows
(:func:`sliding_windows`): every position exactly once, each with at least
``window - stride`` tokens of context after the first window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attractor.measure import divergence
from attractor.measure.bootstrap import Estimate
from attractor.measure.divergence import LN2
from attractor.measure.lm_stream import MIN_DOCUMENTS, RunningStats, document_bootstrap
from attractor.tasks.corpus import Document
from attractor.tasks.lm_models import LanguageModel, check_compatible

STATS = ("kl_ab", "kl_ba", "js", "tv", "top1_agree", "entropy_a", "entropy_b")


def position_stats(logits_a: Tensor, logits_b: Tensor) -> dict[str, Tensor]:
    """Every statistic of :data:`STATS` per position: ``logits [N, vocab]`` -> ``{name: float64
    [N]}``.
    """
    la, lb = divergence.log_probs(logits_a), divergence.log_probs(logits_b)
    # Clamped into their ranges: these are reported (and ranked), and round-off can leave a
    # divergence of equal distributions at -1e-17.
    return {
        "kl_ab": divergence.kl(la, lb).clamp_min(0.0),
        "kl_ba": divergence.kl(lb, la).clamp_min(0.0),
        "js": divergence.js(la, lb).clamp(0.0, LN2),
        "tv": divergence.tv(la, lb).clamp(0.0, 1.0),
        "top1_agree": (logits_a.argmax(-1) == logits_b.argmax(-1)).to(torch.float64),
        "entropy_a": divergence.entropy(la),
        "entropy_b": divergence.entropy(lb),
    }


def sliding_windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, first_scored)`` windows over ``length`` tokens; positions
    ``first_scored..end-1`` are scored in each.

    Every position in ``[0, length)`` is scored by exactly one window; the last window
    ends at ``length`` (shifted left if needed so it is full).
    """
    if not 0 < stride <= window:
        raise ValueError(f"need 0 < stride <= window, got stride={stride}, window={window}")
    if length <= window:
        return [(0, length, 0)] if length else []
    out, start, scored = [], 0, 0
    while True:
        end = min(start + window, length)
        out.append((start, end, scored))
        if end == length:
            return out
        scored = end
        start = min(start + stride, length - window)


@dataclass
class TopPosition:
    """One of the most divergent positions."""

    document: str
    position: int
    stats: dict[str, float]
    context: str
    next_token: str | None
    top_a: list[tuple[str, float]]
    top_b: list[tuple[str, float]]


@dataclass
class Comparison:
    """Result of :func:`compare_models`."""

    model_a: str
    model_b: str
    documents: int
    tokens: int
    means: dict[str, Estimate]
    quantiles: dict[str, dict[str, float]]
    top: list[TopPosition] = field(default_factory=list)
    rank_by: str = "js"
    note: str | None = None  # why intervals are missing (null), when they are

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "documents": self.documents,
            "tokens": self.tokens,
            "means": {k: v.to_dict() for k, v in self.means.items()},
            "quantiles": self.quantiles,
            "rank_by": self.rank_by,
            "top": [vars(t) for t in self.top],
            "note": self.note,
        }


@dataclass
class _Window:
    document: int
    ids: list[int]  # the whole document's token ids (for the next token of a top position)
    start: int
    end: int
    first: int


def _windows(
    documents: Iterable[Document], model: LanguageModel, window: int, stride: int, names: list[str]
) -> Iterator[_Window]:
    for doc in documents:
        ids = model.tokenizer.encode(doc.text)
        if not ids:
            continue
        names.append(doc.name)
        for start, end, first in sliding_windows(len(ids), window, stride):
            yield _Window(len(names) - 1, ids, start, end, first)


def _batches(items: Iterator[_Window], size: int) -> Iterator[list[_Window]]:
    batch: list[_Window] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _token(model: LanguageModel, token: int) -> str:
    return model.tokenizer.decode([token])


@torch.no_grad()
def compare_models(
    a: LanguageModel,
    b: LanguageModel,
    documents: Iterable[Document],
    *,
    batch_size: int = 8,
    window: int | None = None,
    stride: int | None = None,
    top_k: int = 10,
    rank_by: str = "js",
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
    reservoir: int = 100_000,
    draws: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    context_tokens: int = 48,
    on_tokens: Callable[[int], None] | None = None,
) -> Comparison:
    """Compare two causal LMs position by position over ``documents`` (see the module docstring).

    Args:
        a, b: models with the same vocabulary and tokenizer (else :class:`UserError`).
        documents: an iterable of :class:`Document`, consumed once, lazily.
        batch_size: windows per forward pass.
        window: tokens per window; default the smaller context of the two models.
        stride: step between windows of a long document; default ``window // 2``.
        top_k: most divergent positions to keep (by ``rank_by``, one of :data:`STATS`).
        quantiles: levels reported for every statistic.
        reservoir: positions kept for the quantiles (uniform sample, seeded).
        draws, level, seed: bootstrap over documents.
        context_tokens: tokens of context shown with a top position.
        on_tokens: called with the number of positions scored after every batch.

    Returns:
        :class:`Comparison`.

    References:
        Lin (1991), "Divergence measures based on the Shannon entropy" (JS); Sellam et
        al. (2021), "The MultiBERTs" (bootstrap over evaluation units).
    """
    # Over 60 lines only by its signature and docstring; the body is short.
    check_compatible(a, b)
    if rank_by not in STATS:
        raise ValueError(f"rank_by must be one of {STATS}, got {rank_by!r}")
    window = window or min(a.context, b.context)
    stride = stride or max(1, window // 2)
    names: list[str] = []
    running = RunningStats(len(STATS), reservoir, top_k, seed)
    for batch in _batches(_windows(documents, a, window, stride, names), batch_size):
        la, lb, owners, places = _score(a, b, batch)
        stats = position_stats(la, lb)
        table = torch.stack([stats[s] for s in STATS], dim=1)  # [positions, stats]
        running.add(table, owners)

        def describe(j: int, batch=batch, places=places, la=la, lb=lb, stats=stats) -> TopPosition:
            # Called inside this iteration only; the defaults pin this batch's values.
            i, position = places[j]
            w = batch[i]
            values = {s: float(stats[s][j]) for s in STATS}
            return _describe(
                a, b, names[w.document], w, position, la[j], lb[j], values, context_tokens
            )

        running.offer_top(stats[rank_by], describe)
        if on_tokens is not None:
            on_tokens(len(table))
    if not running.counts:
        raise ValueError("the corpus holds no text")
    sums, counts = running.per_document()
    q = running.quantiles(quantiles)
    return Comparison(
        a.name,
        b.name,
        len(counts),
        int(counts.sum()),
        document_bootstrap(sums, counts, STATS, draws, level, seed),
        {
            s: {f"{lv:g}": float(q[i, k]) for i, lv in enumerate(quantiles)}
            for k, s in enumerate(STATS)
        },
        running.top_items(),
        rank_by,
        None
        if len(counts) >= MIN_DOCUMENTS
        else (
            f"{len(counts)} document: intervals need at least {MIN_DOCUMENTS} documents "
            "(positions of one document are not independent), so low and high are null"
        ),
    )


def _score(
    a: LanguageModel, b: LanguageModel, batch: list[_Window]
) -> tuple[Tensor, Tensor, list[int], list[tuple[int, int]]]:
    """Both models' logits at the scored positions of ``batch``: ``[positions, vocab]`` each,
    with each position's document and its (window in batch, position in document)."""
    longest = max(w.end - w.start for w in batch)
    # Right padding: causal attention never lets a scored position see it.
    ids = torch.zeros(len(batch), longest, dtype=torch.long)
    for i, w in enumerate(batch):
        ids[i, : w.end - w.start] = torch.tensor(w.ids[w.start : w.end])
    logits_a, logits_b = a.logits(ids), b.logits(ids)
    rows, owners, places = [], [], []
    for i, w in enumerate(batch):
        rows.append(torch.arange(w.first - w.start, w.end - w.start) + i * longest)
        owners += [w.document] * (w.end - w.first)
        places += [(i, p) for p in range(w.first, w.end)]
    flat = torch.cat(rows)
    vocab = logits_a.shape[-1]
    return logits_a.reshape(-1, vocab)[flat], logits_b.reshape(-1, vocab)[flat], owners, places


def _describe(
    a: LanguageModel,
    b: LanguageModel,
    name: str,
    w: _Window,
    position: int,
    la: Tensor,
    lb: Tensor,
    stats: dict[str, float],
    context_tokens: int,
) -> TopPosition:
    context = a.tokenizer.decode(w.ids[max(w.start, position + 1 - context_tokens) : position + 1])
    next_token = _token(a, w.ids[position + 1]) if position + 1 < len(w.ids) else None

    def best(logits: Tensor, model: LanguageModel) -> list[tuple[str, float]]:
        probs = torch.softmax(logits.to(torch.float64), -1)
        values, indices = probs.topk(min(3, len(probs)))
        return [(_token(model, int(i)), float(v)) for v, i in zip(values, indices, strict=True)]

    return TopPosition(name, position, stats, context, next_token, best(la, a), best(lb, b))
