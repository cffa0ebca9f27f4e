"""`attractor world --device`: the rollouts run on the device the settings name.

What a CPU-only machine can check: ``device = "cpu"`` gives, bit for bit, what the world
experiment gives without the option and what the library gives without any placement (the
oracle); the device is placement, never the directory's identity; a GPU this machine lacks
is one line, exit 2, nothing written, with or without ``[world] model``. On the ``meta``
device (shapes, no data) every built-in differentiable world's step keeps its states where
they are, so no step makes a CPU tensor that a GPU rollout would trip over.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.experiments import default_out, run_experiment
from attractor.experiments.world import WorldSettings
from attractor.runs.ensemble import Ensemble
from attractor.runs.identity import experiment_identity
from attractor.runs.launch import train
from attractor.seeds import torch_generator
from attractor.world import EnsemblePolicy, get_world
from attractor.world.basins import basin_vs_scale
from attractor.world.growth import lyapunov
from attractor.world.rollout import initial_batch
from tests.conftest import assert_user_error

pytestmark = pytest.mark.usefixtures("one_thread")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
META = torch.device("meta")

#: A denoise-digits task small enough to train in a second (T = 10, 6 embedding features).
DENOISE_TASK = {"timesteps": 10, "frequencies": 3, "hidden": [16]}


def _train(root: Path, task: dict[str, Any], steps: int) -> Path:
    config = {
        "task": task,
        "trainer": {"optimizer": "adam", "lr": 0.01, "steps": steps, "batch_size": 64},
        "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
    }
    train(parse_config(config), root)
    return root


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cartpole") / "run"
    return _train(root, {"name": "cartpole-lqr", "hidden": [16], "samples": 512}, 150)


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("denoise") / "run"
    return _train(root, {"name": "denoise-digits", **DENOISE_TASK}, 30)


def _settings(world: str, model: Path | None, **given: Any) -> dict[str, Any]:
    """Small settings that still take every measure (map, growth, trajectories, structure)."""
    common: dict[str, Any] = {"states": 12, "scales": [1, 4], "draws": 50, "trajectories": 2}
    per_world: dict[str, dict[str, Any]] = {
        "double-well": {"growth_states": 2, "map": {"factors": ["x"], "points": 5}},
        "cartpole": {
            "steps": 60,
            "growth_states": 2,
            "map": {"factors": ["theta", "theta_dot"], "points": 3},
            "structural": {"model": {"weight-noise": [0.5]}, "constants": {"length": [2.0]}},
        },
        "denoise-digits": {
            "options": {"steps": 5, "task": DENOISE_TASK},
            "growth_states": 2,
            "map": {"factors": ["noise"], "points": 3},
            "structural": {"model": {"dropconnect": [0.2]}},
        },
    }
    model_key = {} if model is None else {"model": str(model)}
    return {"name": world, **common, **per_world[world], **model_key, **given}


@pytest.mark.parametrize("world", ["double-well", "cartpole", "denoise-digits"])
def test_device_cpu_is_bitwise_the_experiment_without_the_option(
    world: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every table and headline number of ``device = "cpu"`` equals, bit for bit, those of
    the settings without a device (``auto``: the CPU on a machine without CUDA); and the
    basin shares and Lyapunov exponents equal those of the library's own rollouts on the
    unplaced world with a policy built without a device (the oracle).
    """
    run = {"cartpole": "cartpole_run", "denoise-digits": "denoise_run"}.get(world)
    model = None if run is None else request.getfixturevalue(run)
    settings = WorldSettings(**_settings(world, model, device="cpu"))
    cpu = run_experiment("world", settings, tmp_path / "cpu")[1][0]
    assert cpu.settings["device"] == "cpu"
    expected = {"scales", "map", "growth", "trajectories"}
    expected |= set() if model is None else {"sources", "structural", "perturbed_sources"}
    assert expected <= set(cpu.tables)
    if not torch.cuda.is_available():  # there auto is the GPU: equal to tolerance only
        plain_settings = WorldSettings(**_settings(world, model))
        plain = run_experiment("world", plain_settings, tmp_path / "plain")[1][0]
        assert plain.settings["device"] == "auto"
        assert cpu.summary == plain.summary
        assert set(cpu.tables) == set(plain.tables)
        for name, table in plain.tables.items():
            pd.testing.assert_frame_equal(cpu.tables[name], table, check_exact=True, obj=name)
    oracle_world = get_world(world, settings.options)
    if model is None:
        policy, m = None, 1
    else:
        ensemble = Ensemble.load(model)
        params, buffers = ensemble.stacked()
        policy, m = EnsemblePolicy(ensemble.task.make_model(), params, buffers), 2
    scales = basin_vs_scale(
        oracle_world,
        policy,
        m,
        settings.scales,
        settings.states,
        settings.steps,
        settings.seed,
        draws=settings.draws,
    )
    columns = ["scale", "share", "low", "high", "basin"]
    pd.testing.assert_frame_equal(
        cpu.tables["scales"][columns], scales[columns], check_exact=True, check_dtype=False
    )
    # The experiment's Lyapunov states: stream "world", seed, 3 (experiments.world._growth).
    x0 = oracle_world.initial(settings.growth_states, 1.0, torch_generator("world", 0, 3))
    found = lyapunov(oracle_world, policy, initial_batch(x0, m), settings.steps, seed=0)
    values = found.exponents.double().reshape(-1).numpy()
    assert cpu.tables["growth"]["value"].to_numpy().tolist() == values.tolist()


def test_the_device_is_placement_not_the_directory_identity() -> None:
    settings = WorldSettings(name="double-well")
    assert settings.device == "auto"
    elsewhere = WorldSettings(name="double-well", device="cuda:1")
    assert default_out("world", settings) == default_out("world", elsewhere)
    assert "device" not in experiment_identity(elsewhere.model_dump(mode="json"))
    other = WorldSettings(name="double-well", seed=1, device="cuda:1")
    assert default_out("world", other) != default_out("world", elsewhere)


def _toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _with_model(tmp_path: Path, run: Path) -> Path:
    return _toml(
        tmp_path / "c.toml",
        f"""
        [world]
        name = "cartpole"
        model = "{run}"
        states = 8
        steps = 30
        scales = [1]
        draws = 50
        growth_states = 0
        trajectories = 0
        """,
    )


def test_device_with_a_given_model_places_the_rollouts(
    cli, cartpole_run: Path, tmp_path: Path
) -> None:
    """``--device`` with ``[world] model`` is accepted (it used to be refused): the same
    directory and numbers as without it, the device recorded in the settings.
    """
    config = _with_model(tmp_path, cartpole_run)
    out = tmp_path / "out"
    shown = cli("world", config, "--out", out, "--device", "cpu", "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["settings"]["device"] == "cpu" and "run" not in data["settings"]["train"]
    again = cli("world", config, "--out", out, "--json")  # device auto: reopened, not refused
    assert again.code == 0, again.err
    assert json.loads(again.out)["summary"] == data["summary"]


@no_cuda
@pytest.mark.parametrize("with_model", [True, False])
def test_a_missing_gpu_is_one_line_exit_2_and_nothing_written(
    cli, cartpole_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_model: bool
) -> None:
    monkeypatch.chdir(tmp_path)  # without --out the directory would be ./runs/world-...
    if with_model:
        config = _with_model(tmp_path, cartpole_run)
    else:
        config = _toml(tmp_path / "c.toml", "[world]\nname = 'double-well'\nstates = 8\n")
    assert_user_error(cli("world", config, "--device", "cuda"), "no CUDA device")
    assert not (tmp_path / "runs").exists()
    # The same refusal from [world] device alone, the CLI not involved.
    settings = WorldSettings(name="double-well", device="cuda:0")
    with pytest.raises(UserError, match="no CUDA device"):
        run_experiment("world", settings, tmp_path / "direct")
    assert not (tmp_path / "direct").exists()


# ---- the meta device: where each step leaves its states ----------------------------------


def _stacked(template: nn.Module, members: int) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().unsqueeze(0).expand(members, *v.shape).clone()
        for k, v in template.named_parameters()
    }


def test_a_placed_world_draws_on_the_cpu_and_moves_the_states() -> None:
    """``World.on``: the states come out on the device, drawn from the (CPU) generator as
    the unplaced world draws them (the generator ends in the same state); the CPU: the world
    itself.
    """
    world = get_world("cartpole")
    assert world.on(torch.device("cpu")) is world
    placed = world.on(META)
    a, b = torch_generator("t", 0), torch_generator("t", 0)
    assert placed.initial(5, 2.0, a).device == META
    expected = world.initial(5, 2.0, b)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    assert placed.at is not None and world.at is not None
    cell = {"theta": torch.tensor([0.1, -0.1])}
    assert placed.at(cell).device == META and world.at(cell).shape == placed.at(cell).shape
    assert expected.device.type == "cpu"


def test_an_ensemble_policy_moves_its_weights_and_template() -> None:
    template = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    params = _stacked(template, 3)
    policy = EnsemblePolicy(template, params, {}, device=META)
    assert policy.device == META and policy.members == 3
    assert all(v.device == META for v in policy.params.values())
    assert all(p.device == META for p in policy.template.parameters())
    # Without a device the policy stays where the weights are (the CPU here), unmoved.
    cpu = EnsemblePolicy(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), params, {})
    assert cpu.device.type == "cpu" and all(v.device.type == "cpu" for v in cpu.params.values())


@pytest.mark.parametrize("name", ["double-well", "cartpole", "denoise-digits"])
def test_every_step_keeps_its_states_on_their_device(name: str) -> None:
    """A step on meta states with a meta policy stays on meta (a CPU tensor made inside the
    step would be refused here as it would be on a GPU).
    """
    options = {"steps": 5, "task": DENOISE_TASK} if name == "denoise-digits" else {}
    world = get_world(name, options).on(META)
    x = initial_batch(world.initial(3, 1.0, torch_generator("t", 0)), 2)
    width = x.shape[-1]
    gain = torch.randn(2, 1, 1, device=META)

    def policy(inputs: torch.Tensor) -> torch.Tensor:
        assert inputs.device == META
        return gain * inputs[..., :width]

    for t in range(2):
        x = world.step(x, policy, t, world.constants)
        assert x.device == META and x.shape[:2] == (2, 3)


def test_the_world_device_places_the_model_it_trains_unless_train_run_names_one(
    tmp_path: Path,
) -> None:
    """``[world] device`` alone places the training in OUT/run too; ``[world.train.run]
    device`` wins over it (both placement: the run directory is the same either way).
    """
    small = {"steps": 5, "growth_states": 0, "trajectories": 0, "states": 4, "scales": [1]}
    train_small = {"trainer": {"steps": 3}, "plan": {"members": 2}}
    for given, expected in (({}, "cpu"), ({"run": {"device": "auto"}}, "auto")):
        settings = WorldSettings(
            name="cartpole", device="cpu", draws=50, train={**train_small, **given}, **small
        )
        out = tmp_path / expected
        run_experiment("world", settings, out)
        manifest = json.loads((out / "run" / "manifest.json").read_text())
        assert manifest["config"]["run"]["device"] == expected
