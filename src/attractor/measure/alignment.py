"""Permutation symmetry: weight matching to align two networks' hidden units and channels.

Hidden units (channels) of a network can be permuted without changing its function.
:func:`align` finds the permutation of model B's units that brings its weights closest to
model A's (weight matching over the model's permutation spec,
:mod:`attractor.measure.permutation_spec`: MLPs, LeNet, VGG, ResNet).
:func:`linear_chain` and :func:`permute` are the MLP-only helpers (a state dict alone,
no model).

    permuted_b, perms = align(state_a, state_b, ens.task.make_model())

Permutations are index tensors keyed by the module whose outputs they reorder: unit
``i`` of the permuted network is unit ``perms[name][i]`` of the original.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.permutation_spec import (
    PermutationSpec,
    block_index,
    permutation_spec,
    permute_state,
)
from attractor.training.forward import ELEMENTWISE

__all__ = ["Perms", "State", "align", "linear_chain", "permute", "weight_matching"]

State = dict[str, Tensor]
Perms = dict[str, Tensor]

# Layers that act on each unit separately, so they commute with a permutation of units:
# the engine's elementwise activations, and more that the batched forward does not take.
_ELEMENTWISE = (*ELEMENTWISE, nn.ELU, nn.Softplus, nn.Mish, nn.Hardtanh, nn.Dropout)


# ---- the chain of linear layers ------------------------------------------------------
def linear_chain(model: nn.Module) -> list[str]:
    """Names of ``model``'s ``nn.Linear`` layers in order, if it is an MLP weight matching can
    align.

    Raises:
        UserError: ``model`` is not an ``nn.Sequential`` of ``nn.Linear`` layers and
            elementwise activations (with an optional leading ``nn.Flatten``), or has no
            hidden layer; the message says which.
    """
    what = type(model).__name__
    if type(model) is not nn.Sequential:
        raise UserError(
            "permutation alignment needs an MLP (nn.Sequential of nn.Linear layers and "
            "elementwise "
            f"activations); the task's model is a {what}"
        )
    chain: list[str] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Linear):
            chain.append(name)
        elif isinstance(child, nn.Flatten) and not chain:
            continue  # reshapes the input only
        elif not isinstance(child, _ELEMENTWISE):
            raise UserError(
                f"permutation alignment needs elementwise layers between the nn.Linear layers; "
                f"layer '{name}' is a {type(child).__name__}"
            )
    if len(chain) < 2:
        raise UserError(
            f"permutation alignment needs a hidden layer; this {what} has {len(chain)} nn.Linear "
            "layer(s)"
        )
    return chain


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts '10.weight' after '2.weight' (nn.Sequential names are numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("."))


def _state_chain(state: State, layers: list[str] | None) -> list[str]:
    """Linear layer names of ``state`` in order, checked: every key belongs to one, shapes chain."""
    if layers is None:
        layers = sorted({k.rsplit(".", 1)[0] for k in state if k.endswith(".weight")}, key=_natural)
    owned = {f"{layer}.{part}" for layer in layers for part in ("weight", "bias")}
    stray = sorted(set(state) - owned)
    if stray:
        raise UserError(
            f"weights hold tensors outside the MLP's linear layers ({', '.join(stray[:3])}); "
            "permutation alignment needs a plain MLP"
        )
    for prev, layer in zip(layers, layers[1:], strict=False):
        w_prev, w = state.get(f"{prev}.weight"), state.get(f"{layer}.weight")
        if (
            w_prev is None
            or w is None
            or w_prev.dim() != 2
            or w.dim() != 2
            or w.shape[1] != w_prev.shape[0]
        ):
            raise UserError(
                f"layers '{prev}' and '{layer}' do not chain (weights {_shape(w_prev)} then "
                f"{_shape(w)})"
            )
    return layers


def _shape(t: Tensor | None) -> str:
    return "missing" if t is None else "x".join(map(str, t.shape))


def _check_matches(state: State, model: nn.Module, which: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        diff = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise UserError(
            f"weights of {which} do not match the model (first difference: '{diff[0]}')"
        )


# ---- permutations --------------------------------------------------------------------
def permute(state: State, perms: Perms, layers: list[str] | None = None) -> State:
    """``state`` with hidden units reordered: rows of ``W_l``, ``b_l`` and columns of ``W_{l+1}``.

    Args:
        state: MLP weights, ``{"<layer>.weight": [out, in], "<layer>.bias": [out]}``.
        perms: ``{layer: int64 [out]}``; unit ``i`` of the result is unit ``perms[layer][i]``.
            Layers left out keep their order; the last layer's outputs cannot be permuted.
        layers: the linear layers in order; default inferred from the names (numbers sorted
            numerically, as ``nn.Sequential`` names them).

    Returns:
        A new state dict computing exactly the same function.
    """
    layers = _state_chain(state, layers)
    unknown = sorted(set(perms) - set(layers[:-1]))
    if unknown:
        raise ValueError(
            f"no hidden layer '{unknown[0]}' to permute; hidden layers: {', '.join(layers[:-1])}"
        )
    out = dict(state)
    for layer, nxt in zip(layers, layers[1:], strict=False):
        if layer not in perms:
            continue
        index = perms[layer]
        out[f"{layer}.weight"] = out[f"{layer}.weight"][index]
        if f"{layer}.bias" in out:
            out[f"{layer}.bias"] = out[f"{layer}.bias"][index]
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, index]
    return out


class _Matching:
    """Weight matching of B onto A over a permutation spec; only parameters are compared.

    Every permutation's units are compared through every ``(tensor, axis)`` it reorders:
    the tensor is moved to put that axis first and flattened to ``[units, rest]`` (a
    flattened-conv axis of ``units * block`` entries groups each unit's block with it).
    """

    def __init__(self, spec: PermutationSpec, state_a: State, state_b: State) -> None:
        self.spec = spec
        names = [t for t in spec.axes if t in spec.parameters]
        self.a = {t: state_a[t].detach().double().cpu().numpy() for t in names}
        self.b = {t: state_b[t].detach().double().cpu().numpy() for t in names}
        self.uses = {
            p: [(t, axis) for t, axis in uses if t in self.a]
            for p, uses in spec.perm_axes().items()
        }

    def _permuted_b(self, tensor: str, perms: dict[str, np.ndarray], skip: int) -> np.ndarray:
        """B's ``tensor`` with every axis but ``skip`` permuted by the current ``perms``."""
        value = self.b[tensor]
        for index, axis in enumerate(self.spec.axes[tensor]):
            if index != skip and axis is not None and axis.perm in perms:
                order = block_index(torch.from_numpy(perms[axis.perm]), axis.block).numpy()
                value = np.take(value, order, axis=index)
        return value

    def similarity(
        self, perm: str, perms: dict[str, np.ndarray], incoming: bool = False
    ) -> np.ndarray:
        """``[units of A, units of B]``: summed products of every tensor ``perm`` reorders.

        With ``incoming``, only tensors whose axis 0 it reorders (a layer's own weights,
        bias, BatchNorm) and whose other axes are already in ``perms``.
        """
        n = self.spec.perms[perm]
        sim = np.zeros((n, n))
        for tensor, index in self.uses[perm]:
            axes = self.spec.axes[tensor]
            if incoming and (
                index != 0 or any(a is not None and a.perm not in perms for a in axes[1:])
            ):
                continue
            a = np.moveaxis(self.a[tensor], index, 0).reshape(n, -1)
            b = np.moveaxis(self._permuted_b(tensor, perms, index), index, 0).reshape(n, -1)
            sim += a @ b.T
        return sim

    def objective(self, perms: dict[str, np.ndarray]) -> float:
        """``<A, P(B)>`` over every parameter: what matching maximizes."""
        return float(sum((self.a[t] * self._permuted_b(t, perms, -1)).sum() for t in self.a))

    def forward_start(self) -> dict[str, np.ndarray]:
        """Match permutation by permutation in forward order, by incoming weights only.

        Needs no guess for later layers, so for an exactly permuted copy every step is
        exact (the identity start can stall in a wrong local optimum).
        """
        perms: dict[str, np.ndarray] = {}
        for perm in self.spec.perms:
            sim = self.similarity(perm, perms, incoming=True)
            perms[perm] = linear_sum_assignment(sim, maximize=True)[1]
        return perms

    def descend(
        self, perms: dict[str, np.ndarray], rng: np.random.Generator, max_iter: int
    ) -> dict[str, np.ndarray]:
        """Coordinate ascent over permutations in random order until a pass changes nothing."""
        perms = dict(perms)
        names = list(self.spec.perms)
        for _ in range(max_iter):
            changed = False
            for k in rng.permutation(len(names)):
                best = linear_sum_assignment(self.similarity(names[k], perms), maximize=True)[1]
                if not np.array_equal(best, perms[names[k]]):
                    perms[names[k]], changed = best, True
            if not changed:
                break
        return perms


def weight_matching(
    spec: PermutationSpec, state_a: State, state_b: State, max_iter: int = 100, seed: int = 0
) -> Perms:
    """Permutations of B's units that bring its parameters closest to A's (weight matching).

    Holding the other permutations fixed, the similarity of A's unit ``i`` and B's unit
    ``j`` under one permutation is the sum, over every parameter that permutation reorders
    (:meth:`PermutationSpec.perm_axes`), of the dot product of the slices of A and of
    (otherwise permuted) B at ``i`` and ``j``; ``linear_sum_assignment`` maximizes its sum.
    Permutations are visited in random order (``seed``) until a full pass changes nothing
    or ``max_iter`` passes.

    Coordinate ascent is a local search, so it runs from two starts and keeps the better
    end: the identity (Ainsworth et al.'s start, so the aligned distance never exceeds
    the unaligned one) and a forward sweep matching incoming weights layer by layer
    (from which an exactly permuted copy is recovered exactly; from the identity alone,
    34 of 400 random MLPs with 1-4 hidden layers of width 2-39 stalled short of it).

    Args:
        spec: the model's permutation spec.
        state_a: reference parameters and buffers; state_b: the same names and shapes.
        max_iter: most passes over the permutations per start.
        seed: order in which permutations are visited.

    Returns:
        ``{perm: int64 [units]}`` for every permutation of ``spec``, as
        :func:`~attractor.measure.permutation_spec.permute_state` takes them.

    References:
        Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo
        Permutation Symmetries", ICLR (weight matching, Algorithm 1).
    """
    matching = _Matching(spec, state_a, state_b)
    identity = {p: np.arange(n) for p, n in spec.perms.items()}
    ends = [
        matching.descend(start, np.random.default_rng(seed), max_iter)
        for start in (identity, matching.forward_start())
    ]
    best = max(ends, key=matching.objective)
    return {p: torch.from_numpy(best[p]).long() for p in spec.perms}


def align(
    state_a: State, state_b: State, model_template: nn.Module, max_iter: int = 100, seed: int = 0
) -> tuple[State, Perms]:
    """Permute model B's hidden units (channels) to match model A's by weight matching.

    Works for every model :func:`~attractor.measure.permutation_spec.permutation_spec`
    takes: MLPs and other flat ``nn.Sequential`` chains (LeNet, VGG), and attractor's
    ResNet (the residual stream shares one permutation). Running statistics of BatchNorm
    are permuted with their channels but not matched (:func:`weight_matching`).

    Args:
        state_a: reference weights (``ens.params(member, step)``).
        state_b: weights to permute, same architecture.
        model_template: the task's model (``ens.task.make_model()``), used to derive the
            spec and to check that both states belong to it.
        max_iter: most passes over the permutations per start.
        seed: order in which permutations are visited.

    Returns:
        ``(permuted_state_b, perms)``; ``perms`` keyed by the module whose outputs each
        reorders (for an MLP, every hidden ``nn.Linear``, as :func:`permute` takes them).

    Raises:
        UserError: the model has no spec or no hidden units, or a state does not match it.

    References:
        Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo
        Permutation Symmetries", ICLR (weight matching, Algorithm 1).
    """
    spec = permutation_spec(model_template)
    if not spec.perms:
        raise UserError(
            f"permutation alignment needs a hidden layer; this {type(model_template).__name__} "
            "has none"
        )
    _check_matches(state_a, model_template, "model A")
    _check_matches(state_b, model_template, "model B")
    perms = weight_matching(spec, state_a, state_b, max_iter, seed)
    return permute_state(spec, dict(state_b), perms), perms
