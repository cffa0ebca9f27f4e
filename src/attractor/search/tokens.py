"""Contexts on which two causal LMs' next-token distributions diverge most.

Three searches, each given the same budget of *forward passes* (one pass = one context
scored by both models; a gradient costs two), all scoring a context by the divergence
(Jensen-Shannon by default) of the two models' distributions of the token that follows it:

* ``baseline``: random windows of ``length`` tokens cut from a corpus.
* ``sample-a`` / ``sample-b`` / ``sample-mix``: sequences sampled from A, from B and from
  their mixture ``(p + q) / 2``, starting from one random corpus token; every prefix of a
  sampled sequence is a scored context (the step that samples its next token scores it).
* ``gcg``: greedy coordinate search over tokens guided by the gradient of the divergence
  with respect to one-hot token indicators: at each step the gradient ranks, for every
  position, the ``top_k`` swaps with the largest linearized increase; a batch of
  ``candidates`` single swaps (the top-ranked one at every position, the rest drawn at
  random among the ``top_k``) is scored exactly and the best is kept
  if it beats the current context. Starts from the most divergent of ``budget // 4``
  random corpus windows (counted in its budget). Needs both models
  to take input embeddings (Hugging Face models do); see :mod:`attractor.search.gcg`.

``gain`` is each method's best divergence minus the baseline's best, and their ratio.

References:
    Zou et al. (2023), "Universal and Transferable Adversarial Attacks on Aligned Language
    Models" (greedy coordinate gradient); Ebrahimi et al. (2018), "HotFlip".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attractor.measure.lm_compare import STATS, position_stats
from attractor.search.gcg import gcg, swap_scores
from attractor.search.token_contexts import (
    Found,
    Scorer,
    corpus_tokens,
    keep_best,
    random_windows,
)
from attractor.tasks.corpus import Document
from attractor.tasks.lm_models import LanguageModel, check_compatible

# The contexts' pieces moved to token_contexts.py and GCG to gcg.py; they stay importable here.
__all__ = [
    "SAMPLERS",
    "Found",
    "MethodResult",
    "SearchResult",
    "baseline",
    "corpus_tokens",
    "gcg",
    "random_windows",
    "sample",
    "search_divergent",
    "swap_scores",
]

SAMPLERS = ("sample-a", "sample-b", "sample-mix")


@dataclass
class MethodResult:
    """What one search found with its budget."""

    method: str
    passes: int
    best: list[Found]
    gain: float = 0.0
    ratio: float = 1.0


@dataclass
class SearchResult:
    """Result of :func:`search_divergent`."""

    model_a: str
    model_b: str
    objective: str
    budget: int
    length: int
    methods: dict[str, MethodResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "objective": self.objective,
            "budget": self.budget,
            "length": self.length,
            "methods": {
                k: {
                    "passes": m.passes,
                    "gain": m.gain,
                    "ratio": m.ratio,
                    "best": [vars(f) for f in m.best],
                }
                for k, m in self.methods.items()
            },
        }


def baseline(
    score: Scorer, pool: Tensor, budget: int, length: int, gen: torch.Generator, top: int
) -> list[Found]:
    """Best of ``budget`` random corpus windows."""
    ids = random_windows(pool, budget, length, gen)
    return keep_best([], score.a, ids, score(ids), top)


@torch.no_grad()
def sample(
    score: Scorer,
    pool: Tensor,
    budget: int,
    length: int,
    source: str,
    gen: torch.Generator,
    top: int,
) -> list[Found]:
    """Sample sequences from ``source`` (A, B or their mixture); score every prefix as it is
    extended.
    """
    a, b = score.a, score.b
    best: list[Found] = []
    rows = max(1, min(score.batch_size, budget // length))
    while score.passes + rows <= budget:
        seq = random_windows(pool, rows, 1, gen)
        for _ in range(length):
            if score.passes + len(seq) > budget:
                break
            la, lb = a.logits(seq)[:, -1], b.logits(seq)[:, -1]
            score.passes += len(seq)
            scores = position_stats(la, lb)[score.objective]
            best = keep_best(best, a, seq, scores, top)
            pa, pb = torch.softmax(la.double(), -1), torch.softmax(lb.double(), -1)
            probs = {"sample-a": pa, "sample-b": pb, "sample-mix": 0.5 * (pa + pb)}[source]
            seq = torch.cat([seq, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return best


def search_divergent(
    a: LanguageModel,
    b: LanguageModel,
    documents: Iterable[Document],
    *,
    budget: int = 1024,
    length: int = 16,
    objective: str = "js",
    methods: tuple[str, ...] = ("baseline", *SAMPLERS, "gcg"),
    top: int = 5,
    batch_size: int = 64,
    candidates: int = 64,
    top_k: int = 32,
    seed: int = 0,
) -> SearchResult:
    """Run each of ``methods`` with ``budget`` forward passes; report their best contexts and gain
    over the baseline.

    Args:
        a, b: models with the same vocabulary and tokenizer.
        documents: corpus for random contexts and sampling prefixes.
        budget: forward passes per method (a context scored by both models is one pass).
        length: tokens per context.
        objective: the statistic of :data:`attractor.measure.lm_compare.STATS` to maximize (``js``,
            ``kl_ab``, ``tv``...).
        methods: any of ``baseline``, ``sample-a``, ``sample-b``, ``sample-mix``, ``gcg``.
        top: contexts reported per method.
        batch_size: contexts per forward pass.
        candidates, top_k: GCG's swaps scored per step and swaps per position it draws from.
        seed: seed of every random draw.
    """
    check_compatible(a, b)
    if objective not in STATS or objective in ("top1_agree", "entropy_a", "entropy_b"):
        raise ValueError(
            f"objective must be a divergence (kl_ab, kl_ba, js, tv), got {objective!r}"
        )
    length = min(length, a.context, b.context)
    pool = corpus_tokens(a, documents)
    result = SearchResult(a.name, b.name, objective, budget, length)
    for index, method in enumerate(methods):
        gen = torch.Generator().manual_seed(seed * 1000 + index)
        score = Scorer(a, b, objective, batch_size)
        found = _run_method(method, score, pool, budget, length, gen, top, candidates, top_k)
        result.methods[method] = MethodResult(method, score.passes, found)
    _gains(result)
    return result


def _run_method(
    method: str,
    score: Scorer,
    pool: Tensor,
    budget: int,
    length: int,
    gen: torch.Generator,
    top: int,
    candidates: int,
    top_k: int,
) -> list[Found]:
    """The best contexts one method finds within ``budget`` passes of ``score``."""
    if method == "baseline":
        return baseline(score, pool, budget, length, gen, top)
    if method in SAMPLERS:
        return sample(score, pool, budget, length, method, gen, top)
    if method == "gcg":
        # A quarter of the budget picks the start: the most divergent of random corpus windows.
        starts = baseline(score, pool, max(1, budget // 4), length, gen, 1)
        return gcg(score, torch.tensor(starts[0].ids), budget, gen, top, candidates, top_k)
    raise ValueError(
        f"unknown search method {method!r}; methods: baseline, {', '.join(SAMPLERS)}, gcg"
    )


def _gains(result: SearchResult) -> None:
    """Each method's gain over the baseline's best, and their ratio (when a baseline ran)."""
    if "baseline" in result.methods:
        base = result.methods["baseline"].best[0].divergence
        for m in result.methods.values():
            top_value = m.best[0].divergence if m.best else 0.0
            m.gain = top_value - base
            m.ratio = top_value / base if base > 0 else math.inf
