"""Reading modules into certify's layer chain: folding, supported modules, clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attractor.certify import bound_difference, to_network
from attractor.errors import UserError


def test_folds_batchnorm_dropout_flatten_and_nested_sequentials_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.BatchNorm1d(5),
        nn.Dropout(0.3),
        nn.ReLU(),
        nn.Sequential(nn.Linear(5, 4), nn.Identity(), nn.LeakyReLU(0.2), nn.BatchNorm1d(4)),
        nn.Linear(4, 2),
    ).double()
    model.train()
    model(
        torch.randn(64, 6, dtype=torch.float64)
    )  # running statistics that differ from the defaults
    model.eval()
    net = to_network(model)
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(5, 6), (4, 5), (2, 4)]
    x = torch.randn(32, 6, dtype=torch.float64)
    assert torch.allclose(net(x), model(x), atol=1e-12)


def test_activation_at_the_end_and_back_to_back_activations() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LeakyReLU(0.5), nn.ReLU()).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    assert torch.allclose(to_network(model)(x), model(x))
    assert to_network(nn.Linear(3, 2)).out_dim == 2


@pytest.mark.parametrize(
    "module, words",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), "Tanh"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(2.0), nn.Linear(4, 2)), "slope"),
        (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), "start with a Linear"),
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), "eval mode"),
        (nn.Sequential(nn.Flatten()), "no Linear"),
    ],
)
def test_unsupported_modules_get_one_clear_line(module: nn.Module, words: str) -> None:
    with pytest.raises(UserError, match=words) as info:
        to_network(module)
    assert "\n" not in str(info.value)


def test_mismatched_architectures_are_refused_or_handled() -> None:
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    lower, upper = -torch.ones(1, 3), torch.ones(1, 3)
    with pytest.raises(UserError, match="method='linear'"):
        bound_difference(a, b, lower, upper, "differential")
    low, high = bound_difference(a, b, lower, upper)  # auto falls back to linear
    assert (low <= high).all()
    with pytest.raises(UserError, match="input/output"):
        bound_difference(a, nn.Linear(3, 3), lower, upper)
    with pytest.raises(UserError, match="unknown certify method"):
        bound_difference(a, a, lower, upper, "magic")  # type: ignore[arg-type]
