"""Conformance suite for functional optimizers: every entry of ``OPTIMIZERS`` gets every check.

A new optimizer is covered by adding it to the registry (and, if torch has the same
algorithm, one line to ``REFERENCES`` for the oracle test). Same seed -> same result; zero
lr -> identity; shapes, dtypes and storage kept; chunking and ensemble size change no bit;
the pure ``update`` is the in-place ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.optim import OPTIMIZERS, Hyper, Optimizer, get_optimizer

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=sorted(OPTIMIZERS), scope="module")
def name(request: pytest.FixtureRequest) -> str:
    """One registered optimizer name per test instance (module scope: hypothesis-safe)."""
    return request.param


@pytest.fixture(scope="module")
def opt(name: str) -> Optimizer:
    return OPTIMIZERS[name]


def _member_kwargs(hyper: Hyper, i: int) -> dict:
    return {
        "lr": float(hyper.lr[i]),
        "momentum": float(hyper.momentum[i]),
        "weight_decay": float(hyper.weight_decay[i]),
        "nesterov": hyper.nesterov,
        "beta2": hyper.beta2,
        "eps": hyper.eps,
    }


def _torch_sgd(params: list[nn.Parameter], h: dict) -> torch.optim.Optimizer:
    # torch refuses nesterov without momentum; with momentum 0 it is plain SGD anyway.
    nesterov = h["nesterov"] and h["momentum"] > 0
    return torch.optim.SGD(
        params,
        lr=h["lr"],
        momentum=h["momentum"],
        weight_decay=h["weight_decay"],
        nesterov=nesterov,
    )


def _torch_adam(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    def make(params: list[nn.Parameter], h: dict) -> torch.optim.Optimizer:
        betas = (h["momentum"], h["beta2"])
        return cls(params, lr=h["lr"], betas=betas, eps=h["eps"], weight_decay=h["weight_decay"])

    return make


REFERENCES: dict[str, Callable[[list[nn.Parameter], dict], torch.optim.Optimizer]] = {
    "sgd": _torch_sgd,
    "adam": _torch_adam(torch.optim.Adam),
    "adamw": _torch_adam(torch.optim.AdamW),
}
"""Optimizer name -> the ``torch.optim`` optimizer it must match, for one member."""

# --------------------------------------------------------------------------- oracle


def _regression(
    seed: int, members: int
) -> tuple[dict[str, Tensor], Callable[[int, Tensor, Tensor], tuple]]:
    """Initial params and a per-member least-squares gradient ``(i, w_i, b_i) -> (gw, gb)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(members, 16, 5, generator=gen)
    y = torch.randn(members, 16, 3, generator=gen)
    params = {
        "w": torch.randn(members, 3, 5, generator=gen),
        "b": torch.randn(members, 3, generator=gen),
    }

    def grad(i: int, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        residual = x[i] @ w.T + b - y[i]
        return residual.T @ x[i] * (2 / 16), residual.sum(0) * (2 / 16)

    return params, grad


@st.composite
def hypers(draw: st.DrawFn) -> Hyper:
    members = draw(st.integers(1, 4))

    def each(values: st.SearchStrategy[float]) -> Tensor:
        return torch.tensor(draw(st.lists(values, min_size=members, max_size=members)))

    return Hyper(
        lr=each(st.floats(1e-3, 0.1)),
        momentum=each(st.just(0.0) | st.floats(0.0, 0.99)),
        weight_decay=each(st.just(0.0) | st.floats(0.0, 0.1)),
        nesterov=draw(st.booleans()),
        beta2=draw(st.floats(0.9, 0.9999)),
        eps=draw(st.sampled_from([1e-8, 1e-6, 1e-3])),
    )


# --------------------------------------------------------------------------- chunk invariance

POOL = 67
STEPS = 6
# 67 * 37 * 29 elements is past torch's parallel grain size (32768), and 67 is odd, so the
# threads of one elementwise op split a member's row at an offset that depends on the count.
SHAPES = {"w": (37, 29), "b": (29,), "s": ()}


def _pool(
    nesterov: bool, lr_scale: float = 1.0
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]], Hyper]:
    """Params, per-step gradient noise and random per-member hyperparameters for the pool."""
    gen = torch.Generator().manual_seed(1234)
    params = {k: torch.randn(POOL, *shape, generator=gen) for k, shape in SHAPES.items()}
    noise = [
        {k: torch.randn(POOL, *s, generator=gen) for k, s in SHAPES.items()} for _ in range(STEPS)
    ]
    momentum = torch.rand(POOL, generator=gen) * 0.99
    momentum[::5] = 0.0
    hyper = Hyper(
        lr=lr_scale
        * torch.exp(torch.empty(POOL).uniform_(math.log(1e-3), math.log(0.3), generator=gen)),
        momentum=momentum,
        weight_decay=torch.rand(POOL, generator=gen) * 0.1,
        nesterov=nesterov,
        beta2=0.99,
        eps=1e-8,
        # Cone descent then steps on the cone's rim (random gradients never point back to init).
        cone_angle=0.5,
    )
    return params, noise, hyper


def _train(
    opt: Optimizer,
    members: Sequence[int],
    nesterov: bool = False,
    lr_scale: float = 1.0,
    active: Tensor | None = None,
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Train pool ``members`` (duplicates allowed) in one tensor; grads are elementwise in p."""
    params, noise, hyper = _pool(nesterov, lr_scale)
    idx = torch.tensor(list(members))
    params = {k: v[idx].clone() for k, v in params.items()}
    hyper = hyper.take(idx)
    state = opt.init(params)
    for t in range(1, STEPS + 1):
        grads = {k: torch.sin(p) + noise[t - 1][k][idx] for k, p in params.items()}
        opt.step(params, grads, state, hyper, t, active)
    return params, state


def _flat(result: tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]) -> dict[str, Tensor]:
    params, state = result
    out = {f"param/{k}": v for k, v in params.items()}
    out.update({f"state/{k}/{s}": v for k, slots in state.items() for s, v in slots.items()})
    return out


def _assert_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# --------------------------------------------------------------------------- active mask

MASK = torch.tensor([True, False, True, True, False, True, False])


class TestOptimizer:
    """Every registered optimizer (the ``name`` and ``opt`` fixtures) against the contract."""

    @settings(max_examples=6, deadline=None)
    @given(hyper=hypers(), seed=st.integers(0, 2**16))
    def test_matches_torch_optim_per_member(
        self, name: str, opt: Optimizer, hyper: Hyper, seed: int
    ) -> None:
        if name not in REFERENCES:
            pytest.skip(f"no torch.optim reference for {name!r}")
        members, steps = hyper.members, 20
        params, grad = _regression(seed, members)
        state = opt.init(params)
        for t in range(1, steps + 1):
            per_member = [grad(i, params["w"][i], params["b"][i]) for i in range(members)]
            grads = {
                "w": torch.stack([g[0] for g in per_member]),
                "b": torch.stack([g[1] for g in per_member]),
            }
            opt.step(params, grads, state, hyper, t)

        reference, _ = _regression(seed, members)
        for i in range(members):
            w, b = nn.Parameter(reference["w"][i].clone()), nn.Parameter(reference["b"][i].clone())
            torch_opt = REFERENCES[name]([w, b], _member_kwargs(hyper, i))
            for _ in range(steps):
                w.grad, b.grad = grad(i, w.detach(), b.detach())
                torch_opt.step()
            torch.testing.assert_close(params["w"][i], w.detach(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(params["b"][i], b.detach(), rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize("nesterov", [False, True])
    def test_chunking_is_bitwise_invariant(self, opt: Optimizer, nesterov: bool) -> None:
        whole = _flat(_train(opt, range(7), nesterov))
        chunks = [_flat(_train(opt, c, nesterov)) for c in ([0, 1], [2, 3, 4], [5, 6])]
        _assert_equal(whole, {k: torch.cat([c[k] for c in chunks]) for k in whole})
        padded = _flat(_train(opt, [3, 3], nesterov))
        alone = _flat(_train(opt, [3], nesterov))
        _assert_equal({k: v[3:4] for k, v in whole.items()}, {k: v[:1] for k, v in padded.items()})
        _assert_equal({k: v[3:4] for k, v in whole.items()}, alone)

    @pytest.mark.parametrize("nesterov", [False, True])
    def test_pure_update_is_the_in_place_step(self, opt: Optimizer, nesterov: bool) -> None:
        """``update`` returns bit for bit what ``step`` writes in place, inputs left alone."""
        pool, noise, hyper = _pool(nesterov)
        params = {k: v[:7].clone() for k, v in pool.items()}
        hyper, state = hyper.take(slice(0, 7)), opt.init(params)
        for t in range(1, STEPS + 1):
            grads = {k: torch.sin(p) + noise[t - 1][k][:7] for k, p in params.items()}
            inputs = _flat((params, state)) | {f"grad/{k}": g for k, g in grads.items()}
            before = {k: v.clone() for k, v in inputs.items()}
            params, state = opt.update(params, grads, state, hyper, t)
            _assert_equal(inputs, before)
        _assert_equal(_flat((params, state)), _flat(_train(opt, range(7), nesterov)))

    def test_ensemble_size_is_bitwise_invariant(self, opt: Optimizer) -> None:
        four = _flat(_train(opt, range(4)))
        eight = _flat(_train(opt, range(8)))
        many = _flat(_train(opt, range(64)))
        everyone = _flat(_train(opt, range(POOL)))
        _assert_equal(four, {k: v[:4] for k, v in eight.items()})
        _assert_equal(four, {k: v[:4] for k, v in many.items()})
        _assert_equal(many, {k: v[:64] for k, v in everyone.items()})
        _assert_equal(_flat(_train(opt, range(30, 40))), {k: v[30:40] for k, v in everyone.items()})

    def test_zero_lr_leaves_params_unchanged(self, opt: Optimizer) -> None:
        initial, _, _ = _pool(nesterov=False)
        params, _ = _train(opt, range(8), lr_scale=0.0)
        _assert_equal(params, {k: v[:8] for k, v in initial.items()})

    def test_same_seed_same_result(self, opt: Optimizer) -> None:
        _assert_equal(_flat(_train(opt, range(5))), _flat(_train(opt, range(5))))

    def test_updates_in_place_and_keeps_shapes_and_dtypes(self, opt: Optimizer) -> None:
        params = {k: torch.randn(3, *shape) for k, shape in SHAPES.items()}
        tensors = dict(params)
        pointers = {k: v.data_ptr() for k, v in params.items()}
        state = opt.init(params)
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        grads_before = {k: v.clone() for k, v in grads.items()}
        opt.step(params, grads, state, Hyper.uniform(3, lr=0.1, momentum=0.9, weight_decay=0.01), 1)
        for k, p in params.items():
            assert p is tensors[k] and p.data_ptr() == pointers[k]
            assert p.shape == (3, *SHAPES[k]) and p.dtype == torch.float32
            for slot in state[k].values():
                assert slot.shape == p.shape and slot.dtype == p.dtype
        _assert_equal(grads, grads_before)

    def test_inactive_members_are_frozen_and_active_ones_untouched(self, opt: Optimizer) -> None:
        masked = _flat(_train(opt, range(7), active=MASK))
        unmasked = _flat(_train(opt, range(7)))
        params, _, _ = _pool(nesterov=False)
        params = {k: v[:7] for k, v in params.items()}
        initial = _flat((params, opt.init(params)))
        for key, value in masked.items():
            assert torch.equal(value[MASK], unmasked[key][MASK]), f"{key}: active members changed"
            assert torch.equal(value[~MASK], initial[key][~MASK]), f"{key}: inactive members moved"

    def test_all_true_mask_is_no_mask(self, opt: Optimizer) -> None:
        everyone = torch.ones(7, dtype=torch.bool)
        _assert_equal(_flat(_train(opt, range(7), active=everyone)), _flat(_train(opt, range(7))))

    def test_registry_lookup(self, name: str) -> None:
        assert get_optimizer(name) is OPTIMIZERS[name]
        with pytest.raises(UserError, match="sgd"):
            get_optimizer("no-such-optimizer")

    def test_bad_member_dimension_is_refused(self, opt: Optimizer) -> None:
        params = {"w": torch.zeros(3, 2)}
        with pytest.raises(ValueError, match="expected"):
            opt.step(params, params, opt.init(params), Hyper.uniform(4, lr=0.1), 1)
