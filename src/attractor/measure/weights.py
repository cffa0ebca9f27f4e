"""Weight space: how far members moved from their init and from each other, before and after
aligning hidden units.

Hidden units of an MLP can be permuted without changing its function, so two members
that compute the same function can sit far apart in raw parameter distance. Weight
matching finds, layer by layer, the permutation of model B's hidden units that brings its
weights closest to model A's; the distance after it is the one that says whether two
members landed in the same basin up to symmetry (the matching itself:
:mod:`attractor.measure.alignment`).

    states = [ens.params(m) for m in ens.members]
    permuted_b, perms = align(states[0], states[1], ens.task.make_model())
    pairwise_aligned_distance(states, ens.task.make_model())   # [members, members]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Re-exported: callers import the alignment from here, beside the distances it serves.
from attractor.measure.alignment import Perms, State, align, linear_chain, permute
from attractor.runs.ensemble import Ensemble

__all__ = [
    "Perms",
    "State",
    "align",
    "distance_to_init",
    "flatten",
    "linear_chain",
    "member_vectors",
    "pairwise_aligned_distance",
    "pairwise_distance",
    "permute",
]


# ---- distances -----------------------------------------------------------------------
def flatten(state: State, names: list[str] | None = None) -> Tensor:
    """All floating-point tensors of ``state`` (or only ``names``) as one float64 vector ``[P]``.

    Keys are taken in sorted order (or the order of ``names``) so two states of one
    architecture line up entry by entry; integer buffers (counters) are skipped.
    """
    keys = sorted(state) if names is None else names
    parts = [state[k].detach().reshape(-1).double() for k in keys if state[k].is_floating_point()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def member_vectors(
    ens: Ensemble, members: list[int] | None = None, step: int | None = None
) -> Tensor:
    """Parameters (no buffers) of ``members`` at ``step`` (default last), flattened: ``[members,
    P]``.
    """
    members = ens.members if members is None else members
    names = sorted(name for name, _ in ens.task.make_model().named_parameters())
    return torch.stack([flatten(ens.params(m, step), names) for m in members])


def pairwise_distance(flat: Tensor) -> Tensor:
    """Euclidean distance between every pair of rows: ``[members, P]`` -> ``[members, members]``
    float64.

    Computed from differences rather than through ``|a|^2 + |b|^2 - 2 a.b``, which loses
    all precision for nearby members (the case that matters: aligned copies).
    """
    x = flat.double()
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def distance_to_init(
    ens: Ensemble, members: list[int] | None = None, step: int | None = None
) -> Tensor:
    """L2 distance of each member's parameters at ``step`` (default last) from its step-0
    parameters: ``[members]``; NaN for all when a member has no step 0 (imported models).

    References:
        Frankle et al. (2020), "Linear Mode Connectivity and the Lottery Ticket Hypothesis"
        (the distance travelled from init as a measure of how far training moved a member).
    """
    members = ens.members if members is None else members
    if any(0 not in ens.steps(m) for m in members):  # imported final models: no init kept
        return torch.full((len(members),), float("nan"), dtype=torch.float64)
    return (member_vectors(ens, members, step) - member_vectors(ens, members, 0)).norm(dim=1)


def pairwise_aligned_distance(
    states: list[State], model_template: nn.Module, max_iter: int = 100, seed: int = 0
) -> Tensor:
    """Parameter distance between every pair after aligning the later member to the earlier one.

    Args:
        states: ``[members]`` state dicts of one MLP architecture.
        model_template: the task's model (``ens.task.make_model()``).

    Returns:
        ``[members, members]`` float64, symmetric (entry ``(i, j)`` for ``i < j`` aligns ``j``
        to ``i``; weight matching is a local search, so the other direction could differ slightly).

    References:
        Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo
        Permutation Symmetries"; Entezari et al. (2022), "The Role of Permutation
        Invariance in Linear Mode Connectivity of Neural Networks".
    """
    names = sorted(name for name, _ in model_template.named_parameters())
    m = len(states)
    out = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            aligned, _ = align(states[i], states[j], model_template, max_iter, seed)
            out[i, j] = out[j, i] = (flatten(states[i], names) - flatten(aligned, names)).norm()
    return out
