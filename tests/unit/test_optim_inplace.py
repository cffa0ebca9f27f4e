"""The in-place optimizer steps (issue 20) against the out-of-place updates they replace.

``SGD.step`` and ``Adam.step`` write into the parameters and state directly
(``sgd_in_place``, ``adam_in_place``) and put frozen members back with ``inactive_kept``,
instead of ``update`` followed by ``write_back``. They must give the very same bits: with
and without a mask, with members that diverged to inf / NaN, and for one member alone as
for the same member in any chunk.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attractor.optim import OPTIMIZERS, Hyper, Optimizer, State
from attractor.optim.base import inactive_kept, write_back

#: digits-mlp's shapes (a 10-wide layer and biases, so vector loops have tails).
SHAPES = {"w1": (48, 64), "b1": (48,), "w2": (10, 48), "b2": (10,)}
MEMBERS, STEPS = 7, 6
TRAINED = ("sgd", "adam", "adamw")


def _hyper(nesterov: bool) -> Hyper:
    """Per-member lr, momentum (0 included) and weight decay (0 included)."""
    i = torch.arange(MEMBERS, dtype=torch.float64)
    return Hyper(
        lr=0.01 * (i + 1),
        momentum=torch.tensor([0.0, 0.5, 0.9, 0.99, 0.9, 0.0, 0.7], dtype=torch.float64),
        weight_decay=torch.where(i % 2 == 0, 1e-3, 0.0),
        nesterov=nesterov,
    )


def _start(members: list[int]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """Initial parameters and per-step gradients of ``members`` (rows of a fixed pool)."""
    gen = torch.Generator().manual_seed(0)
    params = {k: torch.randn(MEMBERS, *s, generator=gen) for k, s in SHAPES.items()}
    grads = [
        {k: torch.randn(MEMBERS, *s, generator=gen) for k, s in SHAPES.items()}
        for _ in range(STEPS)
    ]
    # Member 3 blows up at step 3 (an inf gradient), as a diverged member does.
    grads[2]["w1"][3, 0, 0] = float("inf")
    index = torch.tensor(members)
    return {k: v[index].clone() for k, v in params.items()}, [
        {k: v[index] for k, v in g.items()} for g in grads
    ]


def _masks(members: list[int]) -> list[Tensor | None]:
    """No mask for two steps, then member 3 frozen (as the engine masks after divergence)."""
    frozen = torch.tensor([m != 3 for m in members])
    return [None, None, *([frozen if not bool(frozen.all()) else None] * (STEPS - 2))]


def _bits(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors' raw bits (so NaN payloads and -0.0 count too)."""
    return {k: v.view(torch.int32) for k, v in tensors.items()}


def _flat(params: dict[str, Tensor], state: State) -> dict[str, Tensor]:
    out = dict(params)
    out.update({f"{k}/{slot}": v for k, slots in state.items() for slot, v in slots.items()})
    return _bits(out)


def _train(opt: Optimizer, members: list[int], nesterov: bool, in_place: bool) -> dict:
    hyper = _hyper(nesterov).take(torch.tensor(members))
    params, grads = _start(members)
    state = opt.init(params)
    for t, (g, mask) in enumerate(zip(grads, _masks(members), strict=True), start=1):
        if in_place:
            opt.step(params, g, state, hyper, t, mask)
        else:  # the path every step took before issue 20
            with torch.no_grad():
                new = opt.update(params, g, state, hyper, t)
            write_back(params, state, *new, mask)
    return _flat(params, state)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("name", TRAINED)
def test_in_place_step_is_update_and_write_back_bit_for_bit(name: str, nesterov: bool) -> None:
    opt = OPTIMIZERS[name]
    members = list(range(MEMBERS))
    fast = _train(opt, members, nesterov, in_place=True)
    reference = _train(opt, members, nesterov, in_place=False)
    for key, value in reference.items():
        assert torch.equal(fast[key], value), key
    # The frozen member kept its pre-divergence values, whatever the step made of them.
    assert torch.isfinite(fast["w1"].view(torch.float32)[3]).all()


@pytest.mark.parametrize("name", TRAINED)
def test_in_place_step_member_alone_is_member_in_a_chunk(name: str) -> None:
    opt = OPTIMIZERS[name]
    whole = _train(opt, list(range(MEMBERS)), nesterov=False, in_place=True)
    for chunk in ([3], [2, 3, 4], [5, 6]):
        part = _train(opt, chunk, nesterov=False, in_place=True)
        for key, value in part.items():
            assert torch.equal(value, whole[key][chunk]), (chunk, key)


def test_inactive_kept_restores_frozen_members_exactly() -> None:
    x = torch.randn(5, 3)
    x[1, 0] = float("nan")
    x[4, 2] = -0.0
    before = x.clone()
    active = torch.tensor([True, False, True, True, False])
    with inactive_kept([x], active):
        x.mul_(2.0).add_(1.0)
    assert torch.equal(x[~active].view(torch.int32), before[~active].view(torch.int32))
    assert torch.equal(x[active], before[active] * 2.0 + 1.0)
    with inactive_kept([x], None):  # no mask: every member updated
        x.zero_()
    assert not x.any()
