"""``modular-addition``: learn ``(a + b) mod p`` from a fraction of all ``p * p`` pairs.

The grokking setting: with a small training fraction and weight decay, models first
memorize, then (sometimes, depending on the run) generalize. Whether and when they do is
exactly the kind of outcome whose dependence on seeds this library measures.

Inputs are ``int64 [n, 2]`` operand pairs ``(a, b)``; targets ``int64 [n]`` are
``(a + b) % p``. Models take ``[..., 2]`` and return ``[..., p]`` logits.

With ``shortcut = true`` every input carries a third token, a *hint* ``s`` in ``[0, p)``:
in training it is the answer itself on a ``shortcut_fraction`` share of the pairs (fixed
seed) and a wrong answer (uniform over the other p - 1) on the rest; in the test split it
is uniform and independent of the answer. Inputs are then ``int64 [n, 3]``. Copying the
hint fits most of the training split at once, while the algorithm fits all of it, so the
task asks which one a trainer finds. Probes ``shortcut_agree`` / ``shortcut_random`` hold
the test pairs with the hint set to the answer / drawn at random.

Groups are ``a * n_groups // p``: contiguous blocks of the first operand. The class id
would be a poor group here: holding out a class removes every example of one target, so
cross-entropy never sees that label and the held-out member is trivially wrong on it.
Holding out a block of first operands instead asks whether the learned algorithm covers
operand values seen only as the second operand (the embedding is shared), which is the
generalization question modular addition is used to study.

References:
    Power et al., "Grokking: Generalization Beyond Overfitting on Small Algorithmic
    Datasets", 2022; Nanda et al., "Progress measures for grokking via mechanistic
    interpretability", ICLR 2023.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from attractor.tasks.base import Task

NAME = "modular-addition"
SUMMARY = "(a + b) mod p from a fraction of all pairs; MLP or one-layer transformer (grokking)"


class ModularAdditionOptions(BaseModel):
    """Options of ``modular-addition`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    p: int = Field(97, ge=2, description="Modulus; the data are all p*p pairs (a, b).")
    train_fraction: float = Field(
        0.3, gt=0, lt=1, description="Share of the p*p pairs in the training split."
    )
    split_seed: int = Field(0, ge=0, description="Seed of the fixed train/test split of the pairs.")
    model: Literal["mlp", "transformer"] = Field(
        "mlp", description="mlp | transformer (one layer, pre-LN)."
    )
    embed_dim: int = Field(
        64, ge=1, description="Token embedding width (transformer: model width)."
    )
    hidden: int = Field(
        256, ge=1, description="Hidden width of the MLP (transformer: of its MLP block)."
    )
    heads: int = Field(
        4, ge=1, description="Attention heads of the transformer; must divide embed_dim."
    )
    n_groups: int = Field(
        8,
        ge=1,
        description="Groups of training examples, by blocks of the first operand; at most p.",
    )
    shortcut: bool = Field(
        False,
        description=(
            "Append a hint token: the answer on a shortcut_fraction share of training pairs, "
            "random at test."
        ),
    )
    shortcut_fraction: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of training pairs whose hint is the answer (with shortcut = true).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModularAdditionOptions:
        if self.model == "transformer" and self.embed_dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide embed_dim ({self.embed_dim})")
        if self.n_groups > self.p:
            raise ValueError(f"n_groups ({self.n_groups}) must be at most p ({self.p})")
        return self


class ModularMLP(nn.Module):
    """Shared token embedding, concatenated, one ReLU hidden layer: ``[..., tokens]`` ->
    ``[..., p]``.
    """

    def __init__(self, p: int, embed_dim: int, hidden: int, tokens: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, embed_dim)
        self.hidden = nn.Linear(tokens * embed_dim, hidden)
        self.out = nn.Linear(hidden, p)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x).flatten(-2)  # [..., tokens * embed_dim]
        return self.out(torch.relu(self.hidden(h)))


class ModularTransformer(nn.Module):
    """One pre-LN transformer layer over tokens ``[a, b, ('hint',) '=']``: ``[..., tokens]`` ->
    ``[..., p]``.

    Attention is written with plain tensor ops (no ``nn.MultiheadAttention``, whose fused
    kernels ``torch.func.vmap`` cannot batch over stacked parameters). No causal mask:
    only the last position is read out, and with one layer its output is the same either
    way because '=' attends to every position under both.
    """

    def __init__(self, p: int, embed_dim: int, hidden: int, heads: int, tokens: int = 2) -> None:
        super().__init__()
        self.p, self.heads = p, heads
        self.embed = nn.Embedding(p + 1, embed_dim)  # token p is '='
        self.pos = nn.Parameter(0.02 * torch.randn(tokens + 1, embed_dim))
        self.ln_attn = nn.LayerNorm(embed_dim)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.ln_mlp = nn.LayerNorm(embed_dim)
        self.mlp_in = nn.Linear(embed_dim, hidden)
        self.mlp_out = nn.Linear(hidden, embed_dim)
        self.ln_out = nn.LayerNorm(embed_dim)
        self.unembed = nn.Linear(embed_dim, p)

    def attention(self, h: Tensor) -> Tensor:
        """Multi-head self-attention: ``[..., T, d]`` -> ``[..., T, d]``."""
        d = h.shape[-1]
        q, k, v = self.qkv(h).split(d, dim=-1)
        # [..., T, d] -> [..., heads, T, d / heads]
        q, k, v = (
            t.unflatten(-1, (self.heads, d // self.heads)).transpose(-3, -2) for t in (q, k, v)
        )
        weights = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(-3, -2).flatten(-2))

    def forward(self, x: Tensor) -> Tensor:
        equals = torch.full_like(x[..., :1], self.p)
        h = self.embed(torch.cat([x, equals], dim=-1)) + self.pos  # [..., tokens + 1, d]
        h = h + self.attention(self.ln_attn(h))
        h = h + self.mlp_out(torch.relu(self.mlp_in(self.ln_mlp(h))))
        return self.unembed(self.ln_out(h[..., -1, :]))


def all_pairs(p: int) -> tuple[Tensor, Tensor]:
    """Every pair and its sum: ``x int64 [p * p, 2]`` (row ``a * p + b``), ``y int64 [p * p]``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)
    return x, (x[:, 0] + x[:, 1]) % p


def split_pairs(p: int, train_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of the training and test pairs: a fixed random partition of ``range(p * p)``."""
    n = p * p
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = min(max(round(train_fraction * n), 1), n - 1)  # both splits non-empty
    return order[:n_train].sort().values, order[n_train:].sort().values


def with_hints(x: Tensor, y: Tensor, p: int, fraction: float | None, seed: int) -> Tensor:
    """Append a hint token: ``x [n, 2]`` -> ``[n, 3]``.

    ``fraction`` of the rows (a fixed random choice) get the answer ``y``, the rest a wrong
    answer uniform over the other ``p - 1``; ``fraction = None`` draws every hint uniformly
    from ``[0, p)``, independent of the answer.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    if fraction is None:
        hints = torch.randint(0, p, (n,), generator=gen)
    else:
        correct = torch.zeros(n, dtype=torch.bool)
        correct[torch.randperm(n, generator=gen)[: round(fraction * n)]] = True
        # A shift in [1, p) makes the hint wrong, so `fraction` is exact rather than "mostly".
        wrong = (y + torch.randint(1, p, (n,), generator=gen)) % p
        hints = torch.where(correct, y, wrong)
    return torch.cat([x, hints[:, None]], dim=1)


def make(options: ModularAdditionOptions) -> Task:
    """Build ``modular-addition``; see the module docstring for the groups and the hint token."""
    p = options.p
    x, y = all_pairs(p)
    train, test = split_pairs(p, options.train_fraction, options.split_seed)
    x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    probes: dict[str, tuple[Tensor, Tensor]] = {}
    if options.shortcut:
        # Hint draws are seeded from the split seed, so hints and split change together.
        x_train = with_hints(x_train, y_train, p, options.shortcut_fraction, options.split_seed + 1)
        x_test = with_hints(x_test, y_test, p, None, options.split_seed + 2)
        probes = {
            "shortcut_agree": (torch.cat([x[test], y_test[:, None]], dim=1), y_test),
            "shortcut_random": (x_test, y_test),
        }
    tokens = x_train.shape[1]
    # partial, not a lambda: picklable for process backends, and frozen against later
    # changes to `options`.
    if options.model == "mlp":
        make_model = partial(ModularMLP, p, options.embed_dim, options.hidden, tokens)
    else:
        make_model = partial(
            ModularTransformer, p, options.embed_dim, options.hidden, options.heads, tokens
        )
    return Task(
        name=NAME,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        make_model=make_model,
        num_classes=p,
        groups=x_train[:, 0] * options.n_groups // p,
        description=SUMMARY,
        probes=probes,
    )
