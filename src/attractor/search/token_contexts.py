"""Token contexts for the LM searches: the corpus pool, random windows, scoring and the best kept.

A context is scored by the divergence of two models' distributions of the token that follows
it; :class:`Scorer` counts the forward passes every search is budgeted in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from attractor.measure.lm_compare import position_stats
from attractor.tasks.corpus import Document
from attractor.tasks.lm_models import LanguageModel

__all__ = ["Found", "Scorer", "corpus_tokens", "keep_best", "random_windows"]


@dataclass
class Found:
    """A context and its divergence."""

    text: str
    ids: list[int]
    divergence: float


class Scorer:
    """Scores contexts ``[n, L]`` by the divergence at their last position; counts passes."""

    def __init__(self, a: LanguageModel, b: LanguageModel, objective: str, batch_size: int) -> None:
        self.a, self.b, self.objective, self.batch_size = a, b, objective, batch_size
        self.passes = 0

    @torch.no_grad()
    def __call__(self, ids: Tensor) -> Tensor:
        out = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            la, lb = self.a.logits(chunk)[:, -1], self.b.logits(chunk)[:, -1]
            out.append(position_stats(la, lb)[self.objective])
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


def keep_best(
    best: list[Found], model: LanguageModel, ids: Tensor, scores: Tensor, top: int
) -> list[Found]:
    """The ``top`` most divergent distinct contexts of ``best`` and the newly scored ``ids``."""
    order = scores.topk(min(top, len(scores))).indices.tolist()
    found = best + [
        Found(model.tokenizer.decode(ids[i].tolist()), ids[i].tolist(), float(scores[i]))
        for i in order
    ]
    unique: dict[tuple[int, ...], Found] = {}
    for f in sorted(found, key=lambda f: -f.divergence):
        unique.setdefault(tuple(f.ids), f)
    return list(unique.values())[:top]
