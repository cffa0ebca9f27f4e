"""Permutation specs and weight matching for conv and residual nets: a randomly permuted
copy is recovered exactly and computes the same function in eval and train mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from attractor.errors import UserError
from attractor.measure.alignment import align
from attractor.measure.permutation_spec import Axis, permutation_spec, permute_state
from attractor.tasks.conv_models import VGG, LeNet, ResNet
from attractor.tasks.digits_mlp import build_mlp
from attractor.tasks.modular_addition import ModularMLP


def _randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Distinct BatchNorm parameters and statistics per channel, so a wrong permutation of
    them shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen, dtype=module.weight.dtype)
            module.bias.data = torch.randn(n, generator=gen, dtype=module.bias.dtype) * 0.1
            module.running_mean = torch.randn(n, generator=gen, dtype=module.weight.dtype) * 0.1
            module.running_var = 0.5 + torch.rand(n, generator=gen, dtype=module.weight.dtype)


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    resnet = ResNet(depth=8, width=4, in_channels=1, num_classes=5, stages=3).double()
    vgg = VGG((4, "M", 8, 8), in_channels=1, num_classes=5).double()
    for model in (resnet, vgg):
        _randomize_batchnorm(model, 1)
    gen = torch.Generator().manual_seed(2)
    return {
        "mlp": (build_mlp(10, [6, 5], 3, "tanh").double(), torch.randn(9, 10, generator=gen)),
        "lenet": (LeNet(1, 4, 28).double(), torch.randn(6, 1, 28, 28, generator=gen)),
        "vgg": (vgg, torch.randn(6, 1, 8, 8, generator=gen)),
        "resnet": (resnet, torch.randn(6, 1, 8, 8, generator=gen)),
    }


MODELS = _models()


def _outputs(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, train: bool):
    # Train mode updates running statistics in place: work on copies of the state.
    state = {k: v.clone() for k, v in state.items()}
    model = copy.deepcopy(model).train(train)
    return functional_call(model, state, (x.double(),))


@pytest.mark.parametrize("name", list(MODELS))
def test_random_permutation_is_recovered_and_keeps_the_function(name: str) -> None:
    model, x = MODELS[name]
    spec = permutation_spec(model)
    gen = torch.Generator().manual_seed(3)
    known = {p: torch.randperm(n, generator=gen) for p, n in spec.perms.items()}
    state_a = model.state_dict()
    state_b = permute_state(spec, state_a, known)
    assert any(not torch.equal(state_a[k], state_b[k]) for k in state_a)
    for train in (False, True):
        torch.testing.assert_close(
            _outputs(model, state_b, x, train),
            _outputs(model, state_a, x, train),
            rtol=0,
            atol=1e-10,
        )
    aligned, perms = align(state_a, state_b, model)
    assert list(perms) == list(spec.perms)
    for tensor in state_a:
        assert torch.equal(aligned[tensor], state_a[tensor]), tensor
    for p, index in perms.items():
        assert torch.equal(known[p][index], torch.arange(len(index))), p  # the inverse of known


def test_specs_by_structure() -> None:
    lenet = permutation_spec(MODELS["lenet"][0])
    assert lenet.perms == {"0": 6, "3": 16, "7": 120, "9": 84}
    # Flatten of [16, 5, 5]: channel c owns inputs 25c .. 25c + 24 of the first Linear.
    assert lenet.axes["7.weight"] == (Axis("7"), Axis("3", 25))
    assert lenet.axes["3.weight"] == (Axis("3"), Axis("0"), None, None)
    assert lenet.axes["11.weight"] == (None, Axis("9")) and lenet.axes["11.bias"] == (None,)

    resnet = permutation_spec(MODELS["resnet"][0])
    assert list(resnet.perms) == [
        "stem.0",
        "stages.0.conv1",
        "stages.1.conv1",
        "stages.1.shortcut.0",
        "stages.2.conv1",
        "stages.2.shortcut.0",
    ]
    # The residual stream: stem and the identity block's output share a permutation.
    assert resnet.axes["stages.0.conv2.weight"][0] == Axis("stem.0")
    assert resnet.axes["stages.0.bn2.running_var"] == (Axis("stem.0"),)
    assert resnet.axes["stages.1.conv1.weight"][:2] == (Axis("stages.1.conv1"), Axis("stem.0"))
    assert resnet.axes["stages.1.bn2.weight"] == (Axis("stages.1.shortcut.0"),)
    assert resnet.axes["head.2.weight"] == (None, Axis("stages.2.shortcut.0"))
    assert "stem.1.num_batches_tracked" not in resnet.axes
    assert "stem.1.running_mean" not in resnet.parameters

    mlp = permutation_spec(MODELS["mlp"][0])
    assert mlp.perms == {"0": 6, "2": 5}


def test_models_without_a_spec_are_refused() -> None:
    with pytest.raises(UserError, match="attractor's ResNet; the task's model is a ModularMLP"):
        permutation_spec(ModularMLP(7, 4, 8))
    with pytest.raises(UserError, match="layer '1' is a LayerNorm"):
        permutation_spec(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)))
    with pytest.raises(UserError, match="layer '2' is a Conv2d after a Flatten"):
        permutation_spec(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Conv2d(2, 2, 1)))
    with pytest.raises(UserError, match="needs a hidden layer"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
        align(model.state_dict(), model.state_dict(), model)
