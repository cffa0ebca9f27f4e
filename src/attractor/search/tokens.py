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
  to take input embeddings (Hugging Face models do).

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

from attractor.errors import UserError
from attractor.measure.lm_compare import STATS, position_stats
from attractor.tasks.corpus import Document
from attractor.tasks.lm_models import LanguageModel, check_compatible

SAMPLERS = ("sample-a", "sample-b", "sample-mix")


@dataclass
class Found:
    """A context and its divergence."""

    text: str
    ids: list[int]
    divergence: float


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


class _Scorer:
    """Scores contexts ``[n, L]`` by the divergence at their last position; counts passes."""

    def __init__(self, a: LanguageModel, b: LanguageModel, objective: str, batch_size: int) -> None:
        self.a, self.b, self.objective, self.batch_size = a, b, objective, batch_size
        self.passes = 0

    @torch.no_grad()
    def __call__(self, ids: Tensor) -> Tensor:
        out = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            out.append(
                position_stats(self.a.logits(chunk)[:, -1], self.b.logits(chunk)[:, -1])[
                    self.objective
                ]
            )
        self.passes += len(ids)
        return torch.cat(out)


def corpus_tokens(
    model: LanguageModel, documents: Iterable[Document], limit: int = 1 << 20
) -> Tensor:
    """Token ids of the corpus, concatenated, at most ``limit``: the pool of random contexts."""
    ids: list[int] = []
    for doc in documents:
        ids += model.tokenizer.encode(doc.text)
        if len(ids) >= limit:
            break
    return torch.tensor(ids[:limit], dtype=torch.long)


def random_windows(pool: Tensor, n: int, length: int, gen: torch.Generator) -> Tensor:
    """``n`` random windows of ``length`` tokens from ``pool``: ``[n, length]``."""
    if len(pool) < length:
        raise ValueError(
            f"the corpus has {len(pool)} tokens, fewer than the context length {length}"
        )
    starts = torch.randint(0, len(pool) - length + 1, (n,), generator=gen)
    return pool[starts[:, None] + torch.arange(length)]


def _keep(
    best: list[Found], model: LanguageModel, ids: Tensor, scores: Tensor, top: int
) -> list[Found]:
    order = scores.topk(min(top, len(scores))).indices.tolist()
    found = best + [
        Found(model.tokenizer.decode(ids[i].tolist()), ids[i].tolist(), float(scores[i]))
        for i in order
    ]
    unique: dict[tuple[int, ...], Found] = {}
    for f in sorted(found, key=lambda f: -f.divergence):
        unique.setdefault(tuple(f.ids), f)
    return list(unique.values())[:top]


def baseline(
    score: _Scorer, pool: Tensor, budget: int, length: int, gen: torch.Generator, top: int
) -> list[Found]:
    """Best of ``budget`` random corpus windows."""
    ids = random_windows(pool, budget, length, gen)
    return _keep([], score.a, ids, score(ids), top)


@torch.no_grad()
def sample(
    score: _Scorer,
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
            best = _keep(best, a, seq, scores, top)
            pa, pb = torch.softmax(la.double(), -1), torch.softmax(lb.double(), -1)
            probs = {"sample-a": pa, "sample-b": pb, "sample-mix": 0.5 * (pa + pb)}[source]
            seq = torch.cat([seq, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return best


def _last_logits(model: LanguageModel, onehot: Tensor) -> Tensor:
    if model.embeddings is None:
        raise UserError(
            f"token search (gcg) needs a model with input embeddings; {model.name!r} has none"
        )
    return model.logits_from_embeddings(onehot @ model.embeddings.weight)[:, -1]


def swap_scores(
    a: LanguageModel, b: LanguageModel, current: Tensor, objective: str, gen: torch.Generator
) -> Tensor:
    """Linearized gain of every single-token swap of ``current [L]``: ``[L, vocab]``.

    Where the two models already differ, this is the gradient of the divergence with
    respect to the one-hot token indicators (GCG). Where they agree exactly, every
    divergence has zero gradient (it is flat to first order at p = q), so the swaps are
    ranked instead by how much they move the log-probability difference along a random
    direction: ``|g(pos, tok) - g(pos, current token)|`` with ``g`` the gradient of
    ``u . (log p - log q)``.
    """
    onehot = (
        torch.nn.functional.one_hot(current, a.vocab_size)
        .to(a.embeddings.weight.dtype)[None]
        .requires_grad_(True)
    )
    la, lb = _last_logits(a, onehot), _last_logits(b, onehot)
    divergence = position_stats(la, lb)[objective].sum()
    if float(divergence.detach()) > 1e-9:
        (grad,) = torch.autograd.grad(divergence, onehot)
        return grad[0]
    u = torch.randn(a.vocab_size, generator=gen, dtype=torch.float64)
    diff = torch.log_softmax(la.double(), -1) - torch.log_softmax(lb.double(), -1)
    (grad,) = torch.autograd.grad((diff * u).sum(), onehot)
    grad = grad[0]
    return (grad - grad.gather(1, current[:, None])).abs()


def gcg(
    score: _Scorer,
    start: Tensor,
    budget: int,
    gen: torch.Generator,
    top: int,
    candidates: int = 64,
    top_k: int = 32,
) -> list[Found]:
    """Greedy coordinate gradient ascent of the divergence from context ``start [L]`` (see the
    module docstring).
    """
    a, b = score.a, score.b
    current = start.clone()
    current_score = float(score(current[None])[0])
    best = [Found(a.tokenizer.decode(current.tolist()), current.tolist(), current_score)]
    end = budget
    while score.passes + 2 + candidates <= end:
        gains = swap_scores(a, b, current, score.objective, gen)
        score.passes += 2  # a forward and a backward through both models
        choices = gains.topk(
            min(top_k, a.vocab_size), dim=-1
        ).indices  # [L, top_k]: most promising swaps per position
        # The best-ranked swap at every position, then random swaps among each position's top_k.
        length = len(current)
        positions = torch.cat(
            [
                torch.arange(length),
                torch.randint(0, length, (max(0, candidates - length),), generator=gen),
            ]
        )[:candidates]
        ranks = torch.cat(
            [
                torch.zeros(length, dtype=torch.long),
                torch.randint(0, choices.shape[1], (max(0, candidates - length),), generator=gen),
            ]
        )[:candidates]
        picks = choices[positions, ranks]
        trial = current.repeat(candidates, 1)
        trial[torch.arange(candidates), positions] = picks
        scores = score(trial)
        best = _keep(best, a, trial, scores, top)
        i = int(scores.argmax())
        if float(scores[i]) > current_score:
            current, current_score = trial[i].clone(), float(scores[i])
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
        score = _Scorer(a, b, objective, batch_size)
        if method == "baseline":
            found = baseline(score, pool, budget, length, gen, top)
        elif method in SAMPLERS:
            found = sample(score, pool, budget, length, method, gen, top)
        elif method == "gcg":
            # A quarter of the budget picks the start: the most divergent of random corpus windows.
            starts = baseline(score, pool, max(1, budget // 4), length, gen, 1)
            found = gcg(score, torch.tensor(starts[0].ids), budget, gen, top, candidates, top_k)
        else:
            raise ValueError(
                f"unknown search method {method!r}; methods: baseline, {', '.join(SAMPLERS)}, gcg"
            )
        result.methods[method] = MethodResult(method, score.passes, found)
    if "baseline" in result.methods:
        base = result.methods["baseline"].best[0].divergence
        for m in result.methods.values():
            top_value = m.best[0].divergence if m.best else 0.0
            m.gain = top_value - base
            m.ratio = top_value / base if base > 0 else math.inf
    return result
