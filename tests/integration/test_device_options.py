"""`--device` on every command that computes: a GPU this machine lacks is one line and writes
nothing; `auto` on a CPU-only machine runs there; the device is placement, never identity.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from attractor.experiments import default_out
from attractor.experiments.diff import DiffSettings
from attractor.runs.identity import experiment_identity
from attractor.runs.launch import train
from attractor.search.models import Placed, placed
from tests.conftest import assert_user_error, tiny_config, write_toml

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands without --out land in ./runs/...: here, not in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device") / "run"
    train(tiny_config(task={"hidden": [8]}, trainer={"steps": 6}, plan={"members": 2}), root)
    return root


def _commands(run: Path, config: Path, out: Path) -> dict[str, list[str | Path]]:
    """Each command that takes --device, with arguments that would otherwise run."""
    return {
        "diff": ["diff", f"{run}:0", f"{run}:1", "--points", "2", "--out", out],
        "lm-compare": ["lm-compare", f"{run}:0", f"{run}:1"],
        "lm-search": ["lm-search", f"{run}:0", f"{run}:1"],
        "instability": ["instability", config, "--spawn-steps", "0", "--out", out],
        "hparam-map": ["hparam-map", config, "--out", out],
        "shortcuts": ["shortcuts", config, "--out", out],
        "tangent": ["tangent", config, "--out", out],
        "trainer2": ["trainer2", EXAMPLES / "trainer2.toml", "--out", out],
        "stabilize": ["stabilize", EXAMPLES / "stabilize-digits.toml", "--out", out],
        "world": ["world", EXAMPLES / "world-cartpole.toml", "--out", out],
        "demo": ["demo", "--members", "2", "--out", out],
    }


@no_cuda
@pytest.mark.parametrize(
    "command",
    [
        "diff",
        "lm-compare",
        "lm-search",
        "instability",
        "hparam-map",
        "shortcuts",
        "tangent",
        "trainer2",
        "stabilize",
        "world",
        "demo",
    ],
)
def test_a_missing_gpu_is_one_line_and_writes_nothing(
    command: str, run: Path, cli: Callable, tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_config())
    out = tmp_path / "out"
    args = _commands(run, config, out)[command]
    assert_user_error(cli(*args, "--device", "cuda"), "no CUDA device")
    assert not out.exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["diff", "instability", "world"])
def test_a_bad_device_name_is_one_line(
    command: str, run: Path, cli: Callable, tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_config())
    out = tmp_path / "out"
    assert_user_error(
        cli(*_commands(run, config, out)[command], "--device", "gpu"), "device must be auto"
    )
    assert not out.exists()


@no_cuda
def test_the_device_is_placement_so_the_same_diff_reopens_its_directory(
    run: Path, cli: Callable, tmp_path: Path
) -> None:
    out = tmp_path / "diff"
    args = ["diff", f"{run}:0", f"{run}:1", "--points", "2", "--budget", "0", "--out", out]
    assert cli(*args, "--device", "cpu").code == 0
    assert cli(*args, "--device", "auto").code == 0  # the CPU here: reopened, not refused
    first = DiffSettings(a="x", b="y", device="cpu")
    other = DiffSettings(a="x", b="y", device="cuda:1")
    assert default_out("diff", first) == default_out("diff", other)


def test_experiment_identity_drops_placement_only() -> None:
    settings = {
        "device": "cuda",
        "config": {"task": {}, "trainer": {"lr": 0.1}, "plan": {}, "run": {"device": "cuda"}},
        "train": {"run": {"device": "cuda", "snapshots": 3}, "track": {"uri": "x"}},
    }
    kept = experiment_identity(settings)
    assert kept == {
        "config": {"task": {}, "trainer": {"lr": 0.1}, "plan": {}, "run": {}},
        "train": {"run": {"snapshots": 3}},
    }


def test_a_placed_model_computes_the_same_values_and_input_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert placed(model, "cpu") is model
    moved = Placed(model, torch.device("cpu"))
    x = torch.randn(5, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).square().sum(), x)
    (moved_grad,) = torch.autograd.grad(moved(x).square().sum(), x)
    assert torch.equal(model(x), moved(x))
    assert torch.equal(grad, moved_grad)
