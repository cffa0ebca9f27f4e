"""Certified bounds through convolutions, pooling, eval-mode BatchNorm, flatten and residual blocks.

The conversion is checked against the modules' own float64 forward; the bounds (each method,
dense and structured weights alike, branch and bound) against sampled inputs and a PGD
attack inside each box, on small random CNNs (hypothesis).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from attractor.certify import ball, bound_difference, certify_difference, to_network
from attractor.certify.operators import Conv
from attractor.errors import UserError
from attractor.tasks.conv_models import VGG, BasicBlock, LeNet, ResNet

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("interval", "linear", "optimized", "differential")


def settled(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``model`` in float64 and eval mode, its BatchNorms given random affine parameters and
    running statistics (so folding them is not the identity).
    """
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen, dtype=torch.float64))
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen, dtype=torch.float64))
    del shape
    return model.eval()


def agree(converted: Tensor, module: Tensor) -> bool:
    """The converted network's float64 outputs equal the module's to 1e-9 (relative to 1 +
    the outputs' size).
    """
    return bool((converted - module).abs().max() <= 1e-9 * (1 + module.abs().max()))


def changed(model: nn.Module, kind: str, seed: int) -> nn.Module:
    """A copy with relative weight noise, float16-rounded weights, or the same weights."""
    copy_ = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copy_.parameters():
            if kind == "noise":
                p.add_(1e-2 * p.abs().mean() * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif kind == "float16":
                p.copy_(p.half().double())
    return copy_


def zoo() -> list[tuple[str, nn.Module, tuple[int, int, int]]]:
    """Small models covering every supported module (and the issue's three architectures)."""
    torch.manual_seed(0)
    odd = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=1, dilation=1),  # overlapping windows of 9: a 4-level tree
        nn.Conv2d(4, 3, 3, padding="same", dilation=1, bias=True),
        nn.ReLU(),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),  # exact dense matrix
        nn.AdaptiveAvgPool2d(3),  # from 4x4: uneven windows, exact dense matrix
        nn.Flatten(),
        nn.Linear(27, 4),
    )
    return [
        ("lenet", LeNet(1, 5, 16), (1, 16, 16)),
        ("vgg", VGG((4, "M", 6, "M", 6), 1, 5), (1, 8, 8)),
        ("resnet", ResNet(8, 4, 1, 5, 3), (1, 8, 8)),
        ("odd", odd, (2, 9, 9)),
    ]


@pytest.mark.parametrize("name, model, shape", zoo(), ids=[z[0] for z in zoo()])
@pytest.mark.parametrize("dense_bytes", [0, 2**30])
def test_conversion_matches_the_modules_float64_forward(
    name: str, model: nn.Module, shape: tuple[int, int, int], dense_bytes: int
) -> None:
    model = settled(model, shape)
    net = to_network(model, shape, dense_bytes=dense_bytes)
    x = torch.randn(7, *shape, dtype=torch.float64)
    assert agree(net(x), model(x))
    kinds = {type(layer.weight).__name__ for layer in net.layers}
    assert (kinds == {"Tensor"}) if dense_bytes else (len(kinds) > 1)


def test_dense_and_structured_weights_give_the_same_bounds() -> None:
    for _, model, shape in zoo()[1:]:
        a = settled(model, shape)
        b = changed(a, "noise", 1)
        region = ball(torch.randn(2, *shape, dtype=torch.float64), 0.05)
        for method in METHODS:
            dense = bound_difference(
                to_network(a, shape, 2**30), to_network(b, shape, 2**30), *region, method
            )
            structured = bound_difference(
                to_network(a, shape, 0), to_network(b, shape, 0), *region, method
            )
            for d, s in zip(dense, structured, strict=True):
                assert torch.allclose(d, s, rtol=1e-9, atol=1e-12)


def test_conv_operator_is_the_adjoint_pair_of_its_matrix() -> None:
    gen = torch.Generator().manual_seed(0)
    kernel = torch.randn(3, 2, 3, 2, generator=gen, dtype=torch.float64)
    conv = Conv(kernel, (2, 7, 6), stride=(2, 3), padding=(1, 0), dilation=(1, 2))
    matrix = conv.forward(torch.eye(conv.shape[1], dtype=torch.float64)).T
    lam = torch.randn(4, conv.shape[0], generator=gen, dtype=torch.float64)
    assert torch.allclose(conv.backward(lam), lam @ matrix)
    assert torch.allclose(
        conv.absolute().forward(torch.eye(conv.shape[1]).double()).T, matrix.abs()
    )


@st.composite
def cnns(draw: st.DrawFn) -> dict[str, object]:
    """A small random CNN: conv (+BN) blocks, max or average pooling, residual blocks, a head."""
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "channels": draw(st.integers(1, 2)),
        "size": draw(st.sampled_from([6, 8])),
        "width": draw(st.integers(2, 4)),
        "stride": draw(st.sampled_from([1, 2])),
        "slope": draw(st.sampled_from([0.0, 0.0, 0.2])),
        "pool": draw(st.sampled_from(["max", "avg", "none"])),
        "blocks": draw(st.sampled_from([[], [1], [2], [1, 2]])),
        "kind": draw(st.sampled_from(["noise", "float16", "same"])),
        "eps": draw(st.sampled_from([0.01, 0.1, 0.5])),
        "dense_bytes": draw(st.sampled_from([0, 2**30])),  # structured or dense weights
    }


def build(case: dict) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(case["seed"])
    shape = (case["channels"], case["size"], case["size"])
    width = case["width"]
    layers: list[nn.Module] = [
        nn.Conv2d(case["channels"], width, 3, stride=case["stride"], padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU() if case["slope"] == 0 else nn.LeakyReLU(case["slope"]),
    ]
    if case["pool"] == "max":
        layers.append(nn.MaxPool2d(2))
    elif case["pool"] == "avg":
        layers.append(nn.AvgPool2d(2))
    channels = width
    for stride in case["blocks"]:
        layers.append(BasicBlock(channels, channels * stride, stride))
        channels *= stride
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3)]
    return settled(nn.Sequential(*layers), shape, case["seed"]), shape


def attacked(model_a: nn.Module, model_b: nn.Module, lower: Tensor, upper: Tensor) -> Tensor:
    """``b(x) - a(x)`` ``[k, n, out]`` at uniform samples and at the ends of a sign-gradient PGD
    on each output and sign, all inside the boxes (the modules' own float64 forward).
    """
    gen = torch.Generator().manual_seed(0)
    n, out = lower.shape[0], 3
    inputs = [lower + torch.rand(200, *lower.shape, generator=gen).double() * (upper - lower)]
    step = (upper - lower) / 8
    for j in range(out):
        for sign in (1.0, -1.0):
            x = lower + torch.rand(lower.shape, generator=gen).double() * (upper - lower)
            for _ in range(15):
                x.requires_grad_(True)
                value = sign * (model_b(x) - model_a(x))[:, j].sum()
                (grad,) = torch.autograd.grad(value, x)
                x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lower), upper)
            inputs.append(x[None])
    x = torch.cat(inputs)
    with torch.no_grad():
        flat = x.reshape(-1, *lower.shape[1:])
        return (model_b(flat) - model_a(flat)).reshape(x.shape[0], n, -1)


@settings(max_examples=25, deadline=None)
@given(cnns())
def test_no_sampled_or_attacked_input_exceeds_any_bound(case: dict) -> None:
    model_a, shape = build(case)
    model_b = changed(model_a, case["kind"], case["seed"] + 1)
    gen = torch.Generator().manual_seed(case["seed"])
    lower, upper = ball(torch.randn(2, *shape, generator=gen, dtype=torch.float64), case["eps"])
    net_a, net_b = (to_network(m, shape, case["dense_bytes"]) for m in (model_a, model_b))
    x = lower + torch.rand(lower.shape, generator=gen, dtype=torch.float64) * (upper - lower)
    assert agree(net_a(x), model_a(x)) and agree(net_b(x), model_b(x))
    diffs = attacked(model_a, model_b, lower, upper)
    tol = 1e-9 * (1 + diffs.abs().max())
    for method in METHODS:
        low, high = bound_difference(net_a, net_b, lower, upper, method)
        assert low.shape == high.shape == (2, 3)
        assert (diffs <= high + tol).all() and (diffs >= low - tol).all(), method
    if case["kind"] == "same":
        low, high = bound_difference(net_a, net_b, lower, upper, "differential")
        assert (low == 0).all() and (high == 0).all()


@pytest.mark.parametrize("split", ["input", "relu"])
def test_branch_and_bound_on_a_resnet_stays_sound_and_closes_in(split: str) -> None:
    model_a = settled(ResNet(8, 2, 1, 3, 3), (1, 6, 6))
    model_b = changed(model_a, "noise", 2)
    gen = torch.Generator().manual_seed(3)
    lower, upper = ball(torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64), 0.05)
    result = certify_difference(
        model_a, model_b, lower, upper, max_boxes=40, budget_s=20, split=split
    )
    assert result.inputs.shape == (2, 1, 6, 6)
    assert ((result.inputs >= lower) & (result.inputs <= upper)).all()
    with torch.no_grad():
        at = (model_b(result.inputs) - model_a(result.inputs)).abs().amax(-1)
    assert torch.allclose(at, result.lower, rtol=1e-9)
    diffs = attacked(model_a, model_b, lower, upper).abs().amax(-1).amax(0)
    assert (diffs <= result.upper + 1e-9).all() and (result.lower <= result.upper).all()
    one_shot = torch.maximum(result.diff_upper, -result.diff_lower).amax(-1)
    assert (result.upper <= one_shot + 1e-12).all()


@pytest.mark.parametrize(
    "module, shape, words",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), (1, 5, 5), "eval mode"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1)), (1, 5, 5), "padding"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(3, 2)), (1, 5, 5), "nn.Flatten"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="circular")), (1, 5, 5), "zero padding"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 2)), None, "input shape"),
    ],
)
def test_unsupported_conv_modules_get_one_clear_line(
    module: nn.Module, shape: tuple[int, ...] | None, words: str
) -> None:
    with pytest.raises(UserError, match=words) as info:
        to_network(module, shape)
    assert "\n" not in str(info.value)


def test_diff_certifies_two_digits_cnn_models(tmp_path: Path) -> None:
    """``attractor diff``'s comparison on the conv task: a certificate, no refusal, and the
    attained per-output range inside the certified one.
    """
    from safetensors.torch import save_file

    from attractor.experiments.compare import compare_models

    torch.manual_seed(0)
    model = settled(ResNet(8, 8, 1, 10, 3), (1, 8, 8)).float()
    for name, m in (("a", model), ("b", changed(model.double(), "float16", 0).float())):
        weights = {k: v.contiguous() for k, v in m.state_dict().items()}
        save_file(weights, str(tmp_path / f"{name}.safetensors"))
    result = compare_models(
        str(tmp_path / "a.safetensors"),
        str(tmp_path / "b.safetensors"),
        task="digits-cnn",
        eps=0.01,
        points=2,
        budget_s=0,
        restarts=1,
        steps=2,
    )
    assert result.certify_note is None and result.certificate.method == "differential"
    assert result.certificate.inputs.shape == (2, 1, 8, 8)
    assert (result.certificate.upper >= result.certificate.lower).all()
    table = result.per_output
    # The attained range is measured with the float32 modules: allow their rounding.
    assert (table["attained_high"] <= table["certified_high"] + 1e-5).all()
    assert (table["attained_low"] >= table["certified_low"] - 1e-5).all()
