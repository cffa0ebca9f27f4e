"""Level 3 of the learned evaluator, images: evaluators fine-tune a small trained denoiser.

One base ``denoise-digits`` model is trained per module; every test fine-tunes copies of it.
The preferred class is 0, which the base draws with probability mass 0.089 on the fixed
evaluation noises (0.56 of its samples there are read with confidence >= 0.9).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.runs.launch import train
from attractor.stack.learned.finetune import (
    Finetuned,
    FinetuneDesign,
    check_design,
    finetune,
    sample_images,
    true_preference_of,
)
from attractor.world import EnsemblePolicy, get_world, rollout
from attractor.world.denoise_digits import GOAL_CONFIDENCE, reference_classifier
from attractor.world.rollout import initial_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = {"name": "denoise-digits", "hidden": [256, 256]}
#: ~6 s on one CPU thread; 0.58 of its samples from 500 noises are read confidently (the
#: world's full TRAINER, 1000 steps: 0.64; [64, 64] or [128, 128] widths: 0.03 to 0.37).
BASE = {
    "task": TASK,
    "trainer": {
        "optimizer": "adam",
        "lr": 5e-3,
        "steps": 600,
        "batch_size": 256,
        "schedule": "cosine",
    },
    "plan": {"members": 1},
    "run": {"snapshots": 1},
}
PREFERRED = [0]
SEEDS = [0, 1, 2]
#: Measured on three seed sets ([0, 1, 2], [3, 4, 5], [10, 11, 12]). The KL penalty keeps the
#: rounds from feeding on their own degraded samples: with kl = 0 the mean true preference
#: fell by up to 0.09 from one round to the next (and a random evaluator's drifted to 0.11),
#: with kl = 1 it rose every round. samples 256 / keep 32 keeps the top 12.5%, where class 0
#: (9%) is most of the kept images; keep 16 of 64 gave gains that vanished for one seed set.
DESIGN = FinetuneDesign(lr=5e-4, samples=256, keep=32, kl=1.0)


@dataclasses.dataclass(frozen=True)
class Base:
    template: torch.nn.Module
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    eval_noise: Tensor

    def copies(self, m: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        def stack(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.expand(m, *v.shape[1:]).clone() for k, v in tensors.items()}

        return stack(self.params), stack(self.buffers)

    def run(self, design: FinetuneDesign, seeds: list[int], reward=None, **kw) -> Finetuned:
        params, buffers = self.copies(len(seeds))
        true = true_preference_of(PREFERRED)
        reward = true if reward is None else reward
        return finetune(
            self.template, params, buffers, TASK, reward, true, design, seeds, self.eval_noise, **kw
        )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the module fixture runs outside the one_thread fixture
    try:
        out: Path = tmp_path_factory.mktemp("finetune") / "base"
        ensemble = train(parse_config(BASE), out)
        reference_classifier()
    finally:
        torch.set_num_threads(threads)
    params, buffers = ensemble.stacked()
    noise = torch.randn(256, 64, generator=torch.Generator().manual_seed(7))
    return Base(ensemble.task.make_model(), params, buffers, noise)


@pytest.fixture(scope="module")
def perfect(base: Base) -> tuple[Finetuned, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    result = base.run(DESIGN, SEEDS, progress=lambda r, n: calls.append((r, n)))
    return result, calls


def _random_reward(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda images: torch.rand(images.shape[:-1], generator=generator)


def test_the_base_samples_digits_the_classifier_reads(base: Base) -> None:
    images = sample_images(base.template, base.params, base.buffers, TASK, base.eval_noise, 20)
    confidence = reference_classifier().probabilities(images).amax(-1)
    assert images.shape == (1, 256, 64)
    # Measured: 0.56 (so the true preference is about digits, not smudges).
    assert (confidence >= GOAL_CONFIDENCE).float().mean() >= 0.4


def test_best_of_n_with_a_perfect_evaluator_raises_the_true_preference(perfect) -> None:
    result, calls = perfect
    mean = result.true.mean(0)
    # Measured means per round with clipped samples: 0.089 0.166 0.258 0.328 0.315 (seeds
    # [0, 1, 2]; unclipped: 0.089 0.211 0.306 0.311 0.365, other seed sets ending at 0.338
    # and 0.373, no member below 0.28).
    assert result.true.shape == result.proxy.shape == (3, DESIGN.rounds + 1)
    assert result.true.dtype == torch.float64 and result.images.shape == (3, 256, 64)
    assert torch.allclose(result.true[:, 0], result.true[0, 0])  # all start from the base
    assert mean[-1] > mean[0] + 0.15, mean
    assert (result.true[:, -1] > result.true[:, 0] + 0.1).all(), result.true
    # Monotonic in expectation, so a round may fall by about the noise of one round: the
    # random evaluator's rounds move the mean by up to 0.024. Measured here (and on two
    # other seed sets), the mean never fell: the smallest rise was 0.005.
    assert (mean.diff() > -0.02).all(), mean
    # A perfect evaluator: the proxy is the true preference itself.
    assert torch.allclose(result.proxy, result.true)
    assert calls == [(r, DESIGN.rounds) for r in range(1, DESIGN.rounds + 1)]


def test_a_random_evaluator_does_not_raise_the_true_preference(base: Base) -> None:
    result = base.run(DESIGN, SEEDS, reward=_random_reward(0))
    mean = result.true.mean(0)
    # Measured means per round with clipped samples: 0.089 0.074 0.090 0.095 0.083 (unclipped
    # 0.089 0.076 0.087 0.090 0.084; random seeds 1 and 2: at most 0.095): never above the
    # base + 0.006, so the band is base + 0.02 (the perfect evaluator gains 0.23). Without
    # the KL penalty one seed set drifted to base + 0.025.
    assert (mean[1:] < mean[0] + 0.02).all(), mean


def test_reward_weighted_with_a_perfect_evaluator_raises_it(base: Base) -> None:
    design = dataclasses.replace(DESIGN, method="reward-weighted", temperature=0.1)
    result = base.run(design, SEEDS)
    mean = result.true.mean(0)
    # Measured with clipped samples: 0.089 -> 0.236 after four rounds; it peaks after round 1
    # (0.262) as the sharp weights fit few images (unclipped: 0.313, peak 0.325).
    assert mean[-1] > mean[0] + 0.1, mean


def test_a_member_alone_equals_the_same_member_in_a_batch(base: Base, perfect) -> None:
    together, _ = perfect
    alone = base.run(DESIGN, [SEEDS[1]])
    assert torch.allclose(alone.true[0], together.true[1], atol=1e-5)
    assert torch.allclose(alone.proxy[0], together.proxy[1], atol=1e-5)
    assert torch.allclose(alone.images[0], together.images[1], atol=1e-4)
    for name, value in alone.params.items():
        assert torch.allclose(value[0], together.params[name][1], atol=1e-5), name


def test_the_kl_penalty_keeps_the_model_closer_to_the_base(base: Base, perfect) -> None:
    anchored, _ = perfect
    free = base.run(dataclasses.replace(DESIGN, kl=0.0), [SEEDS[0]])

    def distance(result: Finetuned, member: int) -> float:
        squares = [(v[member] - base.params[k][0]).pow(2).sum() for k, v in result.params.items()]
        return float(torch.stack(squares).sum().sqrt())

    # Measured with clipped samples: 1.44 with kl = 1 against 2.17 without (same seeds, same
    # batches; unclipped 1.85 against 4.48).
    assert distance(anchored, 0) < 0.8 * distance(free, 0)


def test_sample_images_is_the_worlds_own_sampler(base: Base) -> None:
    params, buffers = base.copies(2)
    generator = torch.Generator().manual_seed(0)
    # Member 1 a slightly different model, so a mix-up of member rows would show.
    for v in params.values():
        v[1] += 0.05 * torch.randn(v.shape[1:], generator=generator)
    noise = base.eval_noise[:32]
    images = sample_images(base.template, params, buffers, TASK, noise, 10)
    options = {k: v for k, v in TASK.items() if k != "name"}
    world = get_world("denoise-digits", {"steps": 10, "task": options})
    policy = EnsemblePolicy(base.template, params, buffers)
    with torch.no_grad():
        expected = rollout(world, policy, initial_batch(noise, 2)).final
    assert images.shape == (2, 32, 64)
    assert torch.equal(images, expected)
    # Per-member noises: row i is member i's rollout of its own noises.
    rows = torch.stack([noise, base.eval_noise[32:64]])
    mixed = sample_images(base.template, params, buffers, TASK, rows, 10)
    assert torch.equal(mixed[0], images[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 0}, "rounds"),
        ({"keep": FinetuneDesign().samples + 1}, "keep"),
        ({"temperature": 0.0}, "temperature"),
        ({"method": "ppo"}, "unknown method"),
        ({"lr": -1.0}, "lr"),
        ({"kl": -0.1}, "kl"),
        ({"steps": 1.5}, "steps"),
    ],
)
def test_bad_designs_are_refused_in_one_line(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        check_design(dataclasses.replace(FinetuneDesign(), **change))
    assert "\n" not in str(error.value)


def test_finetune_refuses_mismatched_seeds_and_noise(base: Base) -> None:
    params, buffers = base.copies(2)
    true = true_preference_of(PREFERRED)
    args = (base.template, params, buffers, TASK, true, true, DESIGN)
    with pytest.raises(UserError, match="1 seeds for 2 members"):
        finetune(*args, [0], base.eval_noise)
    with pytest.raises(UserError, match="eval_noise"):
        finetune(*args, [0, 1], base.eval_noise[:, :8])
    with pytest.raises(UserError, match="task.hiden"):
        finetune(
            base.template,
            params,
            buffers,
            {"hiden": [8]},
            true,
            true,
            DESIGN,
            [0, 1],
            base.eval_noise,
        )
    with pytest.raises(UserError, match="digits 0..9"):
        true_preference_of([10])
