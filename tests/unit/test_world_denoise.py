"""The ``denoise-digits`` world: schedule and DDIM step by hand, an oracle noise predictor
whose sampler lands on its one image from any noise, the reference classifier, and a small
trained ensemble whose samples the classifier reads.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attractor.config import TaskConfig, parse_config
from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.tasks import build_task
from attractor.tasks.denoise_digits import (
    DenoiseDigitsOptions,
    alphas_bar,
    load_images,
    timestep_features,
)
from attractor.world import EnsemblePolicy, get_world, rollout
from attractor.world.denoise_digits import (
    ddim_step,
    reference_classifier,
    sampler_timesteps,
)
from attractor.world.rollout import initial_batch

pytestmark = pytest.mark.usefixtures("one_thread")

#: A small task: T = 10 training timesteps, 3 embedding frequencies (6 features).
SMALL = {"timesteps": 10, "frequencies": 3}


def test_linear_schedule_is_the_cumulative_product_by_hand() -> None:
    abar = alphas_bar(3, "linear", {"beta_start": 0.1, "beta_end": 0.3})
    # betas 0.1, 0.2, 0.3: abar = 0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7
    assert torch.allclose(abar, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))
    # A beta perturbed past 1 is clipped to 0.999: abar stays positive.
    past = alphas_bar(2, "linear", {"beta_start": 0.5, "beta_end": 2.0})
    assert torch.allclose(past, torch.tensor([0.5, 0.5 * 0.001], dtype=torch.float64))


def test_cosine_schedule_by_hand() -> None:
    s = 0.008
    abar = alphas_bar(4, "cosine", {"cosine_offset": s})

    def f(u: float) -> float:
        return math.cos((u / 4 + s) / (1 + s) * math.pi / 2) ** 2

    expected = [f(t + 1) / f(0) for t in range(3)]
    assert torch.allclose(abar[:3], torch.tensor(expected, dtype=torch.float64))
    # The last beta would be 1 (f(T) = 0): clipped to 0.999.
    assert abar[3].item() == pytest.approx(abar[2].item() * 0.001)


def test_default_linear_betas_scale_with_the_number_of_steps() -> None:
    assert DenoiseDigitsOptions().constants() == {"beta_start": 0.001, "beta_end": 0.2}
    assert DenoiseDigitsOptions(timesteps=1000).constants() == pytest.approx(
        {"beta_start": 1e-4, "beta_end": 0.02}
    )
    with pytest.raises(ValueError, match="below beta_end"):
        DenoiseDigitsOptions(beta_start=0.3, beta_end=0.2)


def test_timestep_features_by_hand() -> None:
    features = timestep_features(torch.tensor([0, 5]), 10, 2)
    # [sin(pi t/T), sin(2 pi t/T), cos(pi t/T), cos(2 pi t/T)]
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, -1.0]])
    assert features.shape == (2, 4) and features.dtype == torch.float32
    assert torch.allclose(features, expected, atol=1e-6)


def test_ddim_step_by_hand() -> None:
    x, eps = torch.tensor([1.0]), torch.tensor([0.5])
    # x0 = (1 - 0.6 * 0.5) / 0.8 = 0.875; x' = 0.9 * 0.875 + sqrt(0.19) * 0.5
    expected = 0.9 * 0.875 + math.sqrt(0.19) * 0.5
    assert ddim_step(x, eps, 0.64, 0.81, clip=False).item() == pytest.approx(expected)
    # Clipped: x0 = 2 / 0.8 = 2.5 -> 1, its noise (2 - 0.8) / 0.6 = 2, x' = 0.9 + sqrt(0.19) 2
    clipped = ddim_step(torch.tensor([2.0]), torch.tensor([0.0]), 0.64, 0.81, clip=True)
    assert clipped.item() == pytest.approx(0.9 + math.sqrt(0.19) * 2.0)


def test_sampler_timesteps_run_from_the_noisiest_to_zero() -> None:
    assert sampler_timesteps(100, 5) == [99, 74, 50, 25, 0]
    assert sampler_timesteps(10, 10) == list(range(9, -1, -1))
    assert sampler_timesteps(10, 1) == [9]
    with pytest.raises(UserError, match="steps"):
        sampler_timesteps(10, 11)


def test_world_step_is_one_ddim_update_with_the_task_schedule() -> None:
    world = get_world("denoise-digits", {"steps": 5, "task": SMALL})
    abar = alphas_bar(10, "linear", world.constants)
    x = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(0))
    seen: list[Tensor] = []

    def policy(inputs: Tensor) -> Tensor:
        seen.append(inputs)
        return torch.full(inputs.shape[:-1] + (64,), 0.25)

    taus = sampler_timesteps(10, 5)
    nxt = world.step(x, policy, 1, world.constants)
    expected = ddim_step(x, torch.full_like(x, 0.25), float(abar[taus[1]]), float(abar[taus[2]]))
    assert torch.allclose(nxt, expected)
    inputs = seen[0]
    assert inputs.shape == (2, 3, 64 + 6) and torch.equal(inputs[..., :64], x)
    assert torch.allclose(inputs[0, 0, 64:], timestep_features(torch.tensor(taus[1]), 10, 3))
    # The last step lands on the clean image (abar = 1): x' = the predicted x0.
    last = world.step(x, policy, 4, world.constants)
    assert torch.allclose(last, ddim_step(x, torch.full_like(x, 0.25), float(abar[0]), 1.0))
    # A perturbed schedule constant changes the sampler (structural stability).
    other = world.step(x, policy, 1, world.with_constants(beta_end=0.5))
    assert not torch.allclose(other, nxt)
    with pytest.raises(ValueError, match="5 sampler steps"):
        world.step(x, policy, 5, world.constants)


def _oracle(target: Tensor, timesteps: int, frequencies: int, constants: dict[str, float]):
    """The exact noise predictor for a data set of one image ``target [64]``: it reads the
    timestep back from the embedding (nearest row of the table of all timesteps).
    """
    abar = alphas_bar(timesteps, "linear", constants)
    table = timestep_features(torch.arange(timesteps), timesteps, frequencies)

    def policy(inputs: Tensor) -> Tensor:
        x, embedding = inputs[..., :64].double(), inputs[..., 64:]
        t = torch.cdist(embedding.reshape(-1, table.shape[1]), table).argmin(-1)
        a = abar[t].reshape(*x.shape[:-1], 1)
        return ((x - a.sqrt() * target.double()) / (1 - a).sqrt()).to(inputs.dtype)

    return policy


@pytest.mark.parametrize("clip", [False, True])
def test_the_sampler_of_an_oracle_lands_on_its_one_image_from_any_noise(clip: bool) -> None:
    x_train, y_train, _, _ = load_images()
    target = torch.tensor(x_train[7])
    world = get_world("denoise-digits", {"steps": 8, "clip": clip, "task": SMALL})
    policy = _oracle(target, 10, 3, dict(world.constants))
    gen = torch.Generator().manual_seed(1)
    x0 = initial_batch(world.initial(16, 100.0, gen), 2)  # independent noises (a = 1)
    final = rollout(world, policy, x0).final
    assert torch.allclose(final, target.expand_as(final), atol=1e-4)
    features = world.features(final, world.constants)
    assert (features["class"] == int(y_train[7])).all()
    assert (features["distance"] < 1e-3).all()  # it is a training image
    assert world.goal(final, world.constants).all()


def test_initial_noise_mixes_a_fixed_reference_with_fresh_noise() -> None:
    world = get_world("denoise-digits", {"reference_seed": 3})
    gen = torch.Generator().manual_seed(0)
    still = world.initial(4, 0.0, gen)
    assert torch.equal(still, still[:1].expand_as(still))  # scale 0: one fixed noise
    assert torch.equal(world.at({"noise": torch.zeros(1)}), still[:1])
    near = world.initial(2000, 1.0, gen)
    correlation = torch.nn.functional.cosine_similarity(near, still[:1], dim=-1).mean()
    assert correlation.item() == pytest.approx(math.sqrt(1 - 0.01), abs=0.02)
    far = world.initial(2000, 10.0, gen)  # a = 1: independent standard normal draws
    assert far.mean().abs() < 0.02 and (far.std() - 1).abs() < 0.02
    ends = world.at({"noise": torch.tensor([-1.0, 1.0])})
    assert torch.allclose(ends[0], -ends[1])  # the second direction, both ways


def test_reference_classifier_reads_clean_digits_and_not_noise() -> None:
    classifier = reference_classifier()
    assert classifier.test_accuracy >= 0.95
    assert classifier.test_confident >= 0.85
    assert classifier.noise_confident <= 0.01
    assert reference_classifier() is classifier  # trained once per process


def test_describe_project_and_options() -> None:
    world = get_world("denoise-digits", {"task": SMALL})
    x = torch.tensor(load_images()[0][:5])
    images = world.describe(x)
    assert images.shape == (5, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert world.project(x.unsqueeze(0)).shape == (1, 5, 2)
    mean = torch.tensor(load_images()[0]).mean(0)
    assert world.project(mean).abs().max() < 1e-4  # centred on the training images
    assert world.task == {
        "name": "denoise-digits",
        **DenoiseDigitsOptions(**SMALL).model_dump(exclude_none=True),
    }
    assert set(world.constants) == {"beta_start", "beta_end"}
    cosine = get_world("denoise-digits", {"task": {"schedule": "cosine"}})
    assert cosine.constants == {"cosine_offset": 0.008}
    assert world.with_constants(beta_end=0.3)["beta_end"] == 0.3
    with pytest.raises(UserError, match="task.hiden"):
        get_world("denoise-digits", {"task": {"hiden": [8]}})
    with pytest.raises(UserError, match="no option 'hidden'"):
        get_world("denoise-digits", {"hidden": [8]})


def test_task_pairs_follow_the_forward_process_the_world_samples() -> None:
    options = {"timesteps": 10, "frequencies": 3, "draws": 2, "hidden": [8]}
    task = build_task(TaskConfig(name="denoise-digits", **options))
    x_train = torch.tensor(load_images()[0])
    n = 2 * len(x_train)
    assert task.x_train.shape == (n, 70) and task.y_train.shape == (n, 64)
    abar = alphas_bar(10, "linear", DenoiseDigitsOptions(**options).constants())
    table = timestep_features(torch.arange(10), 10, 3)
    t = torch.cdist(task.x_train[:, 64:], table).argmin(-1)
    assert torch.allclose(task.x_train[:, 64:], table[t], atol=1e-6)
    a = abar[t].float().unsqueeze(-1)
    x0 = (task.x_train[:, :64] - (1 - a).sqrt() * task.y_train) / a.sqrt()
    assert torch.allclose(x0, x_train.repeat_interleave(2, dim=0), atol=1e-3)
    assert task.num_classes is None and task.loss(task.y_test, task.y_test).abs().max() == 0


#: The trained case: ~15 s on one idle CPU thread.
TRAINED = {
    "task": {"name": "denoise-digits", "hidden": [256, 256]},
    "trainer": {
        "optimizer": "adam",
        "lr": 5e-3,
        "steps": 1000,
        "batch_size": 256,
        "schedule": "cosine",
    },
    "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
    "run": {"snapshots": 2},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    out: Path = tmp_path_factory.mktemp("denoise") / "run"
    train(parse_config(TRAINED), out)
    return Ensemble.load(out)


def _confident_share(ensemble: Ensemble, step: int | None) -> tuple[Tensor, Tensor]:
    """Each member's share of 100 independent noises sampled into an image read with
    confidence >= 0.9 (``[2]``), and the classes read (``[2, 100]``).
    """
    params, buffers = ensemble.stacked(step=step)
    policy = EnsemblePolicy(ensemble.task.make_model(), params, buffers)
    options = {k: v for k, v in TRAINED["task"].items() if k != "name"}
    world = get_world("denoise-digits", {"task": options})
    x0 = initial_batch(world.initial(100, 100.0, torch.Generator().manual_seed(0)), 2)
    with torch.no_grad():
        final = rollout(world, policy, x0).final
    assert torch.isfinite(final).all() and final.shape == (2, 100, 64)
    classes = world.features(final, world.constants)["class"]
    return world.goal(final, world.constants).float().mean(1), classes


def test_a_trained_ensemble_samples_digits_the_classifier_reads(trained: Ensemble) -> None:
    confident, classes = _confident_share(trained, None)
    # Measured with this budget (1000 Adam steps, ~15 s): 0.63 and 0.64 of the samples are
    # read with confidence >= 0.9 (held-out real digits: 0.93; 3x the steps or a
    # [512, 512] model: about the same); the members' initial weights: 0.00 and 0.01.
    assert confident.mean() > 0.5 and (confident > 0.45).all(), confident
    assert len(torch.unique(classes)) == 10  # every digit, not one mode
    untrained, _ = _confident_share(trained, 0)
    assert (untrained < 0.05).all(), untrained  # the digits come from training
