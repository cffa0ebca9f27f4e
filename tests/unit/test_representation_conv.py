"""CKA on convolutional and residual nets: default layers, flattened feature maps, invariance
to a permutation of channels, and a case computed by hand."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.activations import collect_activations, default_layers, resolve_layers
from attractor.measure.representation import linear_cka, pairwise_cka
from attractor.tasks.conv_models import VGG, LeNet, ResNet
from attractor.tasks.digits_mlp import split_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


class Members:
    """The part of an :class:`~attractor.runs.ensemble.Ensemble` the measures read, over
    modules built in the test: members' modules, their stacked weights, the task's test split,
    the device their forward passes run on.
    """

    device = torch.device("cpu")

    def __init__(self, models: list[nn.Module], x: Tensor, y: Tensor | None = None) -> None:
        self.models = [m.eval() for m in models]
        self.members = list(range(len(models)))
        self.store = SimpleNamespace(root=Path("members-built-in-the-test"))
        self.task = SimpleNamespace(make_model=lambda: copy.deepcopy(models[0]), x_test=x, y_test=y)

    def module(self, member: int, step: int | None = None) -> nn.Module:
        return self.models[member]

    def stacked(
        self, members: list[int], step: int | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        names = {k for k, _ in self.models[0].named_parameters()}
        states = [self.models[m].state_dict() for m in members]
        stack = {k: torch.stack([s[k] for s in states]) for k in states[0]}
        return (
            {k: v for k, v in stack.items() if k in names},
            {k: v for k, v in stack.items() if k not in names},
        )


def digits_images(n: int = 96) -> tuple[Tensor, Tensor]:
    """The first ``n`` test digits as ``[n, 1, 8, 8]`` images and their classes ``[n]``."""
    _, _, x, y = split_tensors()
    return x[:n].view(-1, 1, 8, 8), y[:n]


def resnet(seed: int, width: int = 4) -> ResNet:
    """A ResNet-8 for 8x8 digits with random BatchNorm statistics and affine parameters, so
    that BatchNorm in eval mode is not near the identity."""
    torch.manual_seed(seed)
    model = ResNet(depth=8, width=width, in_channels=1, num_classes=10, stages=3)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.2)
    return model.eval()


def permuted(model: ResNet, seed: int) -> ResNet:
    """A copy of a ResNet-8 computing the same function with the channels of every hidden
    tensor permuted: one permutation per residual stream (shared through identity
    shortcuts), one per block's inner conv."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def out(conv: str, bn: str, perm: Tensor) -> None:
        state[f"{conv}.weight"] = state[f"{conv}.weight"][perm]
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{bn}.{key}"] = state[f"{bn}.{key}"][perm]

    def into(layer: str, perm: Tensor) -> None:
        state[f"{layer}.weight"] = state[f"{layer}.weight"][:, perm]

    stream = torch.randperm(model.stem[0].out_channels, generator=gen)
    out("stem.0", "stem.1", stream)
    for i, block in enumerate(model.stages):
        name, width = f"stages.{i}", block.conv1.out_channels
        inner = torch.randperm(width, generator=gen)
        into(f"{name}.conv1", stream)
        out(f"{name}.conv1", f"{name}.bn1", inner)
        into(f"{name}.conv2", inner)
        if len(block.shortcut):  # a 1x1 conv: the stream gets a new permutation
            new = torch.randperm(width, generator=gen)
            into(f"{name}.shortcut.0", stream)
            out(f"{name}.shortcut.0", f"{name}.shortcut.1", new)
            stream = new
        out(f"{name}.conv2", f"{name}.bn2", stream)
    into("head.2", stream)
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(state)
    return copy_.eval()


def test_default_layers_of_conv_nets() -> None:
    net = ResNet(depth=8, width=4, in_channels=1, num_classes=10, stages=3)
    # The stem's ReLU, each residual block's output, the pooled features the head reads.
    assert default_layers(net) == ["stem.2", "stages.0", "stages.1", "stages.2", "head.0"]
    deeper = ResNet(depth=14, width=4, in_channels=1, num_classes=10, stages=3)
    assert default_layers(deeper)[1:3] == ["stages.0", "stages.1"] and len(
        default_layers(deeper)
    ) == (2 + 6)
    vgg = VGG((4, "M", 8), in_channels=1)  # conv, bn, relu, pool, conv, bn, relu, avgpool, ...
    assert default_layers(vgg) == ["2", "6", "7"]
    assert default_layers(LeNet()) == ["1", "4", "8", "10"]
    # An MLP keeps its activation modules.
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2))
    assert default_layers(mlp) == ["1", "3"]


def test_resolve_layers_takes_block_names() -> None:
    net = ResNet(depth=8, width=4, in_channels=1, num_classes=10, stages=3)
    assert resolve_layers(net, "stages.0") == ["stages.0"]
    assert resolve_layers(net, ["stages.2", "stages.0.bn2"]) == ["stages.0.bn2", "stages.2"]
    assert resolve_layers(net, "stages.?") == ["stages.0", "stages.1", "stages.2"]
    with pytest.raises(UserError) as exc:
        resolve_layers(net, "stages.9")
    assert "stages.9" in str(exc.value) and "stages.0" in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


def test_conv_net_with_itself_and_with_a_channel_permuted_copy() -> None:
    x, _ = digits_images()
    net = resnet(0)
    twin = permuted(net, seed=1)
    assert torch.allclose(twin(x), net(x), atol=1e-5)  # the same function
    acts = collect_activations(Members([net, net, twin], x), x)
    assert list(acts) == default_layers(net)
    assert acts["stages.0"].shape == (3, len(x), 4 * 8 * 8)  # [members, n, C * H * W]
    assert acts["head.0"].shape == (3, len(x), 16)
    for name, a in acts.items():
        cka = pairwise_cka(a)
        assert torch.allclose(cka, torch.ones(3, 3, dtype=torch.float64), atol=1e-6), name
        # Not vacuous: the copy's feature maps come in another order.
        assert not torch.allclose(a[2], a[0], atol=1e-3), name
    # Another seed's net is not the same representation.
    other = collect_activations(Members([net, resnet(5)], x), x, "stages.2")
    assert float(pairwise_cka(other["stages.2"])[0, 1]) < 0.99


def test_cka_of_feature_maps_by_hand() -> None:
    """Three 1x2 images [1, 0], [0, 1], [0, 0] through a 1x1 conv with weights 1 and 2.

    The ReLU's maps flatten to rows X = [1, 0, 2, 0], [0, 1, 0, 2], 0; the global average
    pool gives Y = [.5, 1], [.5, 1], 0 (y = [.5, .5, 0] times [1, 2]). Centered, X = [u, v,
    2u, 2v] with u = [2, -1, -1] / 3, v = [-1, 2, -1] / 3 and y = [1, 1, -2] / 6:
    ||X^T y||^2 = 5 * (1/6^2 + 1/6^2) = 5/18, ||X^T X||_F^2 = 25 * (u.u^2 + v.v^2 + 2 u.v^2)
    = 25 * 10/9, (y.y)^2 = 1/36, so CKA = (5/18) / sqrt(250/9 / 36) = 1 / sqrt(10).
    """
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).view(3, 1, 1, 2)
    acts = collect_activations(Members([net], x), x)
    assert list(acts) == ["1", "2"]
    assert torch.equal(acts["1"][0], torch.tensor([[1.0, 0, 2, 0], [0, 1, 0, 2], [0, 0, 0, 0]]))
    assert torch.equal(acts["2"][0], torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]]))
    assert linear_cka(acts["1"][0], acts["2"][0]) == pytest.approx(1 / math.sqrt(10), abs=1e-12)


class _Twice(nn.Module):
    """A block that runs one ``nn.ReLU`` twice (as torchvision's ``BasicBlock`` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Any:
        return self.act(self.conv(self.act(x)))


def test_a_module_run_twice_per_forward_is_refused() -> None:
    net = nn.Sequential(_Twice(), nn.AdaptiveAvgPool2d(1))
    x, _ = digits_images(8)
    assert default_layers(net) == ["0", "1"]  # the block's output, not its reused ReLU
    members = Members([net], x)
    assert collect_activations(members, x)["0"].shape == (1, 8, 2 * 8 * 8)
    with pytest.raises(UserError) as exc:
        collect_activations(members, x, "0.act")
    assert "runs 2 times" in str(exc.value) and len(str(exc.value).splitlines()) == 1
