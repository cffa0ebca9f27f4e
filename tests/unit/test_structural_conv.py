"""Structural perturbations of convolutional and residual nets: dropout of input channels
checked against zeroed feature maps, DropConnect of kernel entries, BatchNorm's statistics
left alone, zero perturbation = identity, and ``attractor structural`` on a conv run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from attractor.config import parse_config
from attractor.measure.perturbations import (
    KINDS,
    dropconnect,
    dropout,
    hidden_inputs,
    quantize,
    weight_noise,
)
from attractor.measure.structural import StructuralResult, perturbation_curves
from attractor.runs.launch import train
from tests.unit.test_representation_conv import Members, digits_images, resnet

pytestmark = pytest.mark.usefixtures("one_thread")

Params = dict[str, Tensor]


def _copies(model: nn.Module, k: int) -> tuple[Params, Params]:
    """``k`` stacked copies of ``model``'s parameters, and its buffers (one copy)."""
    params = {n: p.detach().expand(k, *p.shape) for n, p in model.named_parameters()}
    return params, dict(model.named_buffers())


def _run(model: nn.Module, params: Params, buffers: Params, k: int, x: Tensor) -> Tensor:
    return functional_call(model, ({n: v[k] for n, v in params.items()}, buffers), (x,))


def _scaled_input(net: nn.Module, layer: str, scale: Tensor, x: Tensor) -> Tensor:
    """The oracle: ``net(x)`` with the input channels of ``layer`` multiplied by ``scale [C]``
    (0 for a dropped feature map, 1/(1-p) for a kept one), by a forward pre-hook."""

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor]:
        return (args[0] * scale.view(1, -1, 1, 1),)

    handle = net.get_submodule(layer).register_forward_pre_hook(hook)
    try:
        return net(x)
    finally:
        handle.remove()


def test_hidden_inputs_of_conv_nets_and_of_an_mlp() -> None:
    net = resnet(0)
    hidden = hidden_inputs(net)
    assert "stem.0.weight" not in hidden  # the first layer reads the images
    assert list(hidden) == [
        "stages.0.conv1.weight",
        "stages.0.conv2.weight",
        "stages.1.conv1.weight",
        "stages.1.conv2.weight",
        "stages.1.shortcut.0.weight",
        "stages.2.conv1.weight",
        "stages.2.conv2.weight",
        "stages.2.shortcut.0.weight",
        "head.2.weight",
    ]
    assert set(hidden.values()) == {1}
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    assert hidden_inputs(mlp) == {"2.weight": 1, "4.weight": 1}  # as before conv layers
    grouped = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2))
    assert hidden_inputs(grouped) == {"2.weight": 2}


@pytest.mark.parametrize("p", [0.5, 0.999])
def test_dropping_input_channels_is_zeroing_those_feature_maps(p: float) -> None:
    """Hand oracle: a pre-hook that zeroes the dropped feature maps at the conv's input and
    scales the kept ones by 1/(1-p), on a block whose input also feeds its shortcut conv."""
    net, (x, _) = resnet(0), digits_images(32)
    layer = "stages.1.conv1"
    params, buffers = _copies(net, 6)
    out = dropout(params, p, torch.Generator().manual_seed(3), {f"{layer}.weight": 1})
    assert all(torch.equal(out[n], params[n]) for n in params if n != f"{layer}.weight")
    w = out[f"{layer}.weight"]  # [K, out, in, 3, 3]
    dropped = (w == 0).flatten(3).all(-1).all(1)  # [K, in]: every kernel slice reading c
    kept = torch.isclose(w, params[f"{layer}.weight"] / (1 - p)).flatten(3).all(-1).all(1)
    assert bool((dropped ^ kept).all())  # whole channels, never single entries
    if p == 0.999:
        assert bool(dropped.all())  # every channel dropped: the conv sees a zero input
    else:
        assert 0 < int(dropped.sum()) < dropped.numel()
    for k in range(6):
        oracle = _scaled_input(net, layer, (~dropped[k]).to(x.dtype) / (1 - p), x)
        assert torch.allclose(_run(net, out, buffers, k, x), oracle, atol=1e-5, rtol=1e-5)


def test_grouped_conv_drops_each_input_channel_in_its_own_group() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2)).eval()
    x, _ = digits_images(16)
    params, buffers = _copies(net, 200)
    out = dropout(params, 0.5, torch.Generator().manual_seed(0), hidden_inputs(net))
    w = out["2.weight"].view(200, 2, 3, 2, 9)  # [K, group, out in group, in in group, 3 * 3]
    zero = (w == 0).all(-1)  # [K, group, out in group, in in group]
    assert bool((zero == zero[:, :, :1]).all())  # one mask per input channel of the group
    dropped = zero[:, :, 0].reshape(200, 4)  # [K, input channel]
    assert abs(float(dropped.double().mean()) - 0.5) < 0.06
    # Independent across groups: channel 0 and channel 2 (same slot, other group) differ.
    assert bool((dropped[:, 0] != dropped[:, 2]).any())
    for k in range(3):
        oracle = _scaled_input(net, "2", (~dropped[k]).to(x.dtype) * 2, x)
        assert torch.allclose(_run(net, out, buffers, k, x), oracle, atol=1e-5)


def test_dropconnect_drops_kernel_entries_and_leaves_batchnorm() -> None:
    net = resnet(0)
    params, _ = _copies(net, 50)
    out = dropconnect(params, 0.3, torch.Generator().manual_seed(1), hidden_inputs(net))
    w = out["stages.1.conv2.weight"]  # [K, out, in, 3, 3]
    zero = w == 0
    assert abs(float(zero.double().mean()) - 0.3) < 0.02
    partial = zero.flatten(3).any(-1) & ~zero.flatten(3).all(-1)
    assert bool(partial.any())  # entries of a kernel, not whole kernels
    assert torch.allclose(w[~zero], (params["stages.1.conv2.weight"] / 0.7)[~zero])
    assert bool((out["stem.0.weight"] == 0).any())  # the first conv's kernels too
    for name in ("stem.1.weight", "stem.1.bias", "stages.0.bn2.weight", "head.2.bias"):
        assert torch.equal(out[name], params[name]), name  # vectors are left untouched


def test_noise_and_quantization_act_on_kernels_and_never_on_running_statistics() -> None:
    net = resnet(0)
    params, buffers = _copies(net, 4)
    assert not any("running" in n for n in params)  # statistics are buffers: never perturbed
    noisy = weight_noise(params, 0.1, torch.Generator().manual_seed(2), hidden_inputs(net))
    kernel = params["stages.0.conv1.weight"]
    rms = float(kernel[0].pow(2).mean().sqrt())
    assert float((noisy["stages.0.conv1.weight"] - kernel).std()) == pytest.approx(
        0.1 * rms, rel=0.1
    )
    assert set(noisy) == set(params)
    rounded = quantize(params, 3, torch.Generator(), hidden_inputs(net))
    for k in range(4):
        assert rounded["stages.1.conv2.weight"][k].unique().numel() <= 2**3
    assert set(rounded) == set(params)


def test_zero_perturbation_is_the_identity_on_a_resnet_with_batchnorm() -> None:
    net = resnet(0)
    params, _ = _copies(net, 3)
    hidden = hidden_inputs(net)
    for kind in ("dropout", "dropconnect", "weight_noise"):
        out = KINDS[kind][0](params, 0.0, torch.Generator().manual_seed(0), hidden)
        assert all(torch.equal(out[n], params[n]) for n in params), kind
    x, y = digits_images(64)
    members = Members([net, resnet(1)], x, y)
    for kind in ("dropout", "dropconnect", "weight_noise"):
        table = perturbation_curves(members, kind, [0.0], samples=2, draws=20).table
        assert (table["acc_drop_mean"] == 0).all() and (table["kl_mean"] == 0).all(), kind


def test_curves_are_reproducible_and_do_not_depend_on_the_order_of_layers() -> None:
    x, y = digits_images(64)
    members = Members([resnet(0), resnet(1)], x, y)

    def curve(seed: int) -> StructuralResult:
        return perturbation_curves(members, "dropout", [0.2, 0.5], samples=3, seed=seed, draws=20)

    first, again, other = curve(0).table, curve(0).table, curve(1).table
    assert first.equals(again) and not first.equals(other)
    net = resnet(0)
    params, _ = _copies(net, 3)
    hidden = hidden_inputs(net)
    backwards = dict(reversed(list(hidden.items())))
    a = dropout(params, 0.4, torch.Generator().manual_seed(7), hidden)
    b = dropout(params, 0.4, torch.Generator().manual_seed(7), backwards)
    c = dropout(params, 0.4, torch.Generator().manual_seed(7), set(hidden))
    assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) for n in params)


USER_TASK = """
from functools import partial

from attractor import Task
from attractor.tasks.conv_models import ResNet
from attractor.tasks.digits_mlp import split_tensors


def make_task() -> Task:
    x_train, y_train, x_test, y_test = split_tensors()
    return Task(name="{name}:make_task", x_train=x_train.view(-1, 1, 8, 8), y_train=y_train,
                x_test=x_test.view(-1, 1, 8, 8), y_test=y_test, num_classes=10,
                make_model=partial(ResNet, depth=8, width=4, in_channels=1, stages=3))
"""


def test_structural_command_on_a_trained_resnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable
) -> None:
    """End to end on a conv run (a user task: a ResNet-8 on the 8x8 digits as images)."""
    name = f"convtask_{tmp_path.name}"  # unique: sys.modules caches imports
    (tmp_path / f"{name}.py").write_text(USER_TASK.replace("{name}", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parse_config(
        {
            "task": {"name": f"{name}:make_task"},
            "trainer": {"steps": 40, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
            "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
            "run": {"snapshots": 2},
        }
    )
    run = tmp_path / "run"
    train(config, run)
    args = ("--levels", "0,0.1,0.4", "--samples", "3", "--draws", "50", "--json")
    for kind in ("dropout", "dropconnect", "weight_noise"):
        result = cli("structural", run, "--kind", kind, *args)
        assert result.code == 0, result.err
        curve = json.loads(result.out)["ensemble"]
        assert [row["level"] for row in curve] == [0.0, 0.1, 0.4]
        assert curve[0]["kl"] == 0 and curve[0]["acc_drop"] == 0, kind
        assert curve[0]["kl"] < curve[1]["kl"] < curve[2]["kl"], kind
        assert (run / f"structural-{kind}.parquet").exists()
    result = cli("structural", run, "--kind", "quantize", "--levels", "8,2", "--json")
    assert result.code == 0, result.err
