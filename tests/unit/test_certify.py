"""Soundness of the certify bounds: no sampled or searched input exceeds them (invariant 3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attractor.certify import ball, bound_difference, box, to_network
from attractor.certify.intervals import interval_bounds, interval_difference, interval_layers
from attractor.certify.linear import backward, concretize, crown_bounds, stack
from attractor.certify.methods import METHODS
from attractor.certify.network import Network

pytestmark = pytest.mark.usefixtures("one_thread")


def random_mlp(gen: torch.Generator, widths: list[int], slopes: list[float]) -> nn.Sequential:
    """``Linear, act, ..., Linear`` with seeded normal weights (scale 1/sqrt(fan_in))."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out).double()
        with torch.no_grad():
            linear.weight.copy_(
                torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / fan_in**0.5
            )
            linear.bias.copy_(0.5 * torch.randn(fan_out, generator=gen, dtype=torch.float64))
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(nn.ReLU() if slopes[i] == 0 else nn.LeakyReLU(slopes[i]))
    return nn.Sequential(*layers)


def perturbed(model: nn.Sequential, gen: torch.Generator, kind: str, scale: float) -> nn.Sequential:
    """A copy with relative weight noise, float16 rounding, or fresh weights (same shapes)."""
    copy = (
        nn.Sequential(*[m for m in model])
        .__class__(*[type(m)(**_kwargs(m)) for m in model])
        .double()
    )
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in copy.parameters():
            if kind == "noise":
                p.add_(
                    scale
                    * p.pow(2).mean().sqrt()
                    * torch.randn(p.shape, generator=gen, dtype=torch.float64)
                )
            elif kind == "float16":
                p.copy_(p.half().double())
            elif kind == "fresh":
                p.copy_(
                    torch.randn(p.shape, generator=gen, dtype=torch.float64) / p.shape[-1] ** 0.5
                )
    return copy


def _kwargs(m: nn.Module) -> dict[str, object]:
    if isinstance(m, nn.Linear):
        return {"in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, nn.LeakyReLU):
        return {"negative_slope": m.negative_slope}
    return {}


def attained(
    a: Network, b: Network, lower: torch.Tensor, upper: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Differences ``[s, n, out]`` at uniform samples, the box corners (d <= 4) and a small PGD's
    ends.
    """
    n, d = lower.shape
    high = torch.rand(2000, n, d, generator=gen, dtype=torch.float64)
    points = [lower + high * (upper - lower)]
    if d <= 4:
        corners = torch.cartesian_prod(
            *[torch.tensor([0.0, 1.0], dtype=torch.float64)] * d
        ).reshape(-1, 1, d)
        points.append(lower + corners * (upper - lower))
    for out in range(a.out_dim):
        for sign in (1.0, -1.0):
            x = (
                lower + torch.rand(8, n, d, generator=gen, dtype=torch.float64) * (upper - lower)
            ).requires_grad_(True)
            step = (upper - lower) / 10
            for _ in range(30):
                value = sign * (b(x.reshape(-1, d)) - a(x.reshape(-1, d)))[:, out].sum()
                (grad,) = torch.autograd.grad(value, x)
                x = (
                    torch.minimum(torch.maximum(x + step * grad.sign(), lower), upper)
                    .detach()
                    .requires_grad_(True)
                )
                step = step * 0.9
            points.append(x.detach())
    x = torch.cat(points)
    with torch.no_grad():
        return (b(x.reshape(-1, d)) - a(x.reshape(-1, d))).reshape(x.shape[0], n, -1)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, object]:
    depth = draw(st.integers(2, 3))
    widths = (
        [draw(st.integers(1, 4))]
        + [draw(st.integers(2, 8)) for _ in range(depth - 1)]
        + [draw(st.integers(1, 3))]
    )
    slopes = [draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0])) for _ in range(depth)]
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "widths": widths,
        "slopes": slopes,
        "kind": draw(st.sampled_from(["noise", "noise", "float16", "fresh", "same"])),
        "scale": draw(st.sampled_from([1e-4, 1e-2, 0.3])),
        "eps": draw(st.sampled_from([1e-3, 0.05, 0.5, 2.0])),
        "clip": draw(st.booleans()),
    }


def check_sound(case: dict) -> None:
    """Every method's bounds contain every sampled and searched difference."""
    gen = torch.Generator().manual_seed(case["seed"])
    model_a = random_mlp(gen, case["widths"], case["slopes"])
    model_b = (
        model_a if case["kind"] == "same" else perturbed(model_a, gen, case["kind"], case["scale"])
    )
    a, b = to_network(model_a), to_network(model_b)
    centre = 2 * torch.rand(3, case["widths"][0], generator=gen, dtype=torch.float64) - 1
    lower, upper = ball(centre, case["eps"], clip=(-1.0, 1.0) if case["clip"] else None)
    diffs = attained(a, b, lower, upper, gen)
    tol = 1e-9 * (1 + diffs.abs().max())
    for method in METHODS:
        low, high = bound_difference(a, b, lower, upper, method)
        assert (diffs <= high + tol).all(), method
        assert (diffs >= low - tol).all(), method


@settings(max_examples=30, deadline=None)
@given(cases())
def test_no_sampled_or_searched_input_exceeds_any_bound(case: dict) -> None:
    check_sound(case)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(cases())
def test_no_sampled_or_searched_input_exceeds_any_bound_many(case: dict) -> None:
    check_sound(case)


@settings(max_examples=15, deadline=None)
@given(cases(), st.integers(2, 8))
def test_linear_and_interval_sound_for_different_widths(case: dict, other_width: int) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    a = to_network(random_mlp(gen, case["widths"], case["slopes"]))
    widths = case["widths"][:1] + [other_width] * 2 + case["widths"][-1:]
    b = to_network(random_mlp(gen, widths, [0.0, 0.1, 1.0]))
    lower, upper = ball(torch.randn(2, widths[0], generator=gen, dtype=torch.float64), case["eps"])
    diffs = attained(a, b, lower, upper, gen)
    tol = 1e-9 * (1 + diffs.abs().max())
    for method in ("interval", "linear", "optimized", "auto"):
        low, high = bound_difference(a, b, lower, upper, method)
        assert (diffs <= high + tol).all() and (diffs >= low - tol).all(), method


@settings(max_examples=30, deadline=None)
@given(cases())
def test_crown_with_interval_intermediates_and_zero_slopes_never_looser_than_ibp(
    case: dict,
) -> None:
    """Guaranteed: the lines ``s z <= sigma(z) <= chord`` stay inside IBP's ``[sigma(low),
    sigma(high)]``.
    """
    gen = torch.Generator().manual_seed(case["seed"])
    a = to_network(random_mlp(gen, case["widths"], case["slopes"]))
    b = to_network(perturbed(random_mlp(gen, case["widths"], case["slopes"]), gen, "noise", 0.1))
    lower, upper = ball(
        torch.randn(3, case["widths"][0], generator=gen, dtype=torch.float64), case["eps"]
    )
    for net, (ibp_l, ibp_u) in (
        (a, interval_bounds(a, lower, upper)),
        (stack(a, b), interval_difference(a, b, lower, upper)),
    ):
        eye = torch.eye(net.out_dim, dtype=torch.float64)
        lam, const = backward(
            net.layers,
            interval_layers(net, lower, upper)[:-1],
            torch.cat([eye, -eye]),
            slopes="zero",
        )
        up = concretize(lam, const, lower, upper)
        tol = 1e-9 * (1 + ibp_u.abs().max() + ibp_l.abs().max())
        assert (up[:, : net.out_dim] <= ibp_u + tol).all()
        assert (-up[:, net.out_dim :] >= ibp_l - tol).all()


@settings(max_examples=20, deadline=None)
@given(cases())
def test_optimized_slopes_never_looser_than_adaptive(case: dict) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    net = to_network(random_mlp(gen, case["widths"], case["slopes"]))
    lower, upper = ball(
        torch.randn(3, case["widths"][0], generator=gen, dtype=torch.float64), case["eps"]
    )
    l0, u0 = crown_bounds(net, lower, upper)
    l1, u1 = crown_bounds(net, lower, upper, slopes="optimized", steps=10)
    assert (u1 <= u0).all() and (l1 >= l0).all()


@settings(max_examples=30, deadline=None)
@given(cases())
def test_identical_networks_differ_by_exactly_zero(case: dict) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    net = random_mlp(gen, case["widths"], case["slopes"])
    lower, upper = ball(
        torch.randn(4, case["widths"][0], generator=gen, dtype=torch.float64), case["eps"]
    )
    low, high = bound_difference(net, net, lower, upper, "differential")
    assert (low == 0).all() and (high == 0).all()


@pytest.mark.parametrize("kind", ["noise", "float16", "fresh"])
def test_tiny_radius_bound_equals_the_attained_difference(kind: str) -> None:
    """All neurons stable: the bound is exact, ``diff(c) +- |grad diff(c)| . eps``, and
    ~``diff(c)``.
    """
    gen = torch.Generator().manual_seed(3)
    model_a = random_mlp(gen, [6, 8, 8, 3], [0.0, 0.1])
    a, b = to_network(model_a), to_network(perturbed(model_a, gen, kind, 1e-2))
    centre = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    exact = b(centre) - a(centre)
    jac = (
        torch.autograd.functional.jacobian(lambda x: (b(x) - a(x)).sum(0), centre).abs().sum(-1).T
    )  # [16, 3]
    low, high = bound_difference(a, b, *ball(centre, 1e-7), "differential")
    assert torch.allclose(high, exact + 1e-7 * jac, rtol=1e-9, atol=1e-15)
    assert torch.allclose(low, exact - 1e-7 * jac, rtol=1e-9, atol=1e-15)
    low, high = bound_difference(a, b, *ball(centre, 1e-10), "differential")
    assert torch.allclose(high, exact, rtol=1e-6) and torch.allclose(low, exact, rtol=1e-6)


def test_differential_much_tighter_than_interval_for_a_small_change() -> None:
    gen = torch.Generator().manual_seed(0)
    model_a = random_mlp(gen, [4, 8, 8, 2], [0.0, 0.0])
    a, b = to_network(model_a), to_network(perturbed(model_a, gen, "noise", 1e-3))
    region = ball(torch.randn(8, 4, generator=gen, dtype=torch.float64), 0.1)
    width = {
        m: (lambda lu: (lu[1] - lu[0]).mean())(bound_difference(a, b, *region, m)) for m in METHODS
    }
    assert width["differential"] < width["linear"] / 10 < width["interval"] / 10


def test_box_region_and_clip() -> None:
    lower, upper = box(torch.zeros(2, 3), torch.ones(2, 3), clip=(0.25, 0.5))
    assert lower.dtype == torch.float64 and (lower == 0.25).all() and (upper == 0.5).all()


@settings(max_examples=30, deadline=None)
@given(cases(), st.integers(0, 2**31 - 1))
def test_relu_split_bounds_hold_on_their_subdomain_and_empty_means_empty(
    case: dict, split_seed: int
) -> None:
    """Branch and bound's splits: sound for every input whose neurons have the fixed signs."""
    from attractor.certify.differential import split_bounds

    gen = torch.Generator().manual_seed(case["seed"])
    model_a = random_mlp(gen, case["widths"], case["slopes"])
    a, b = (
        to_network(model_a),
        to_network(
            perturbed(
                model_a, gen, case["kind"] if case["kind"] != "same" else "noise", case["scale"]
            )
        ),
    )
    lower, upper = ball(
        torch.randn(1, case["widths"][0], generator=gen, dtype=torch.float64), case["eps"]
    )
    hidden = sum(case["widths"][1:-1])
    fix = torch.randint(
        -1, 2, (6, 2, hidden), generator=torch.Generator().manual_seed(split_seed)
    ).double()
    fix[0] = 0
    lows, highs, _, _ = split_bounds(a, b, lower.expand(6, -1), upper.expand(6, -1), fix)
    x = lower + torch.rand(3000, lower.shape[1], generator=gen, dtype=torch.float64) * (
        upper - lower
    )
    signs = []
    for net in (a, b):
        h, pre = x, []
        for layer in net.layers[:-1]:
            z = h @ layer.weight.T + layer.bias
            pre.append(z)
            h = torch.maximum(z, layer.slope * z)
        signs.append(torch.cat(pre, -1))
    diff = b(x) - a(x)
    for row in range(6):
        inside = torch.ones(x.shape[0], dtype=torch.bool)
        for net in (0, 1):
            inside &= ((fix[row, net] == 0) | (fix[row, net] * signs[net] >= 0)).all(-1)
        if not inside.any():
            continue
        assert torch.isfinite(lows[row]).all(), "a domain with inputs was declared empty"
        tol = 1e-9 * (1 + diff.abs().max())
        assert (diff[inside] <= highs[row] + tol).all() and (diff[inside] >= lows[row] - tol).all()
