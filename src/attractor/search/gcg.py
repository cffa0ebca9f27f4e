"""Greedy coordinate gradient search over tokens for the context two LMs diverge most on.

At each step the gradient of the divergence with respect to one-hot token indicators ranks,
for every position, the ``top_k`` swaps with the largest linearized increase; a batch of
``candidates`` single swaps (the top-ranked one at every position, the rest drawn at random
among the ``top_k``) is scored exactly and the best is kept if it beats the current context.
Needs both models to take input embeddings (Hugging Face models do).

References:
    Zou et al. (2023), "Universal and Transferable Adversarial Attacks on Aligned Language
    Models" (greedy coordinate gradient); Ebrahimi et al. (2018), "HotFlip".
"""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.measure.lm_compare import position_stats
from attractor.search.token_contexts import Found, Scorer, keep_best
from attractor.tasks.lm_models import LanguageModel

__all__ = ["gcg", "swap_scores"]


def _last_logits(model: LanguageModel, onehot: Tensor) -> Tensor:
    """The last position's logits ``[batch, vocab]``, back on ``onehot``'s device."""
    return model.logits_from_embeddings(model.embed(onehot), out=onehot.device)[:, -1]


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


def _candidates(current: Tensor, choices: Tensor, candidates: int, gen: torch.Generator) -> Tensor:
    """``[candidates, L]`` single swaps of ``current`` drawn from ``choices [L, top_k]``."""
    # The best-ranked swap at every position, then random swaps among each position's top_k.
    length = len(current)
    extra = max(0, candidates - length)
    positions = torch.cat(
        [torch.arange(length), torch.randint(0, length, (extra,), generator=gen)]
    )[:candidates]
    ranks = torch.cat(
        [
            torch.zeros(length, dtype=torch.long),
            torch.randint(0, choices.shape[1], (extra,), generator=gen),
        ]
    )[:candidates]
    trial = current.repeat(candidates, 1)
    trial[torch.arange(candidates), positions] = choices[positions, ranks]
    return trial


def gcg(
    score: Scorer,
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
    while score.passes + 2 + candidates <= budget:
        gains = swap_scores(a, b, current, score.objective, gen)
        score.passes += 2  # a forward and a backward through both models
        # [L, top_k]: the most promising swaps per position.
        choices = gains.topk(min(top_k, a.vocab_size), dim=-1).indices
        trial = _candidates(current, choices, candidates, gen)
        scores = score(trial)
        best = keep_best(best, a, trial, scores, top)
        i = int(scores.argmax())
        if float(scores[i]) > current_score:
            current, current_score = trial[i].clone(), float(scores[i])
    return best
