"""Level 3 of the learned evaluator, images: evaluators fine-tune ``denoise-digits`` generators.

The generator is a ``denoise-digits`` noise predictor (:mod:`attractor.tasks.denoise_digits`)
sampled by the denoise-digits world's DDIM sampler (:mod:`attractor.world.denoise_digits`,
``eta = 0``). Member ``i`` starts from ``params[i]`` (usually a copy of one base model) and
is pulled toward higher reward under *its own* evaluator ``reward(...)[i]``: RLHF in
miniature, with rejection sampling (best-of-n) or reward-weighted regression in place of
a policy gradient. The loop below is the specification; :func:`finetune` runs it for all
``m`` members at once (one batched forward and backward per step, the Adam state stacked)::

    for r in 1 .. rounds:
        x0    = sample(theta, fresh noises [samples, 64])       # no grad, DDIM eta = 0
        score = reward(x0)                                      # [samples]
        w     = 1/keep on the top keep scores, 0 elsewhere      # best-of-n
              | softmax(score / temperature)                    # reward-weighted
        for s in 1 .. steps:
            j ~ Multinomial(w) (batch draws, with replacement); t ~ U{0..T-1}; eps ~ N(0, I)
            x_t  = sqrt(abar_t) x0[j] + sqrt(1 - abar_t) eps
            e    = eps_theta(x_t, t)
            loss = mean |e - eps|^2 + kl mean |e - eps_base(x_t, t)|^2
            theta = Adam(theta, grad loss)
        proxy[r], true[r] = mean reward, mean true preference of sample(theta, eval noises)

Weighting the ordinary denoising loss by the selected samples fits the generator to the
reward-tilted distribution (best-of-n: the top ``keep / samples`` quantile; reward-weighted:
``p(x) exp(r(x) / beta)``, the optimum of KL-regularised reward maximisation, Peters and
Schaal 2007). The ``kl`` term is a KL penalty to the frozen base model: a reverse step
``p(x_{t-1} | x_t) = N(mu(x_t, t), sigma_t^2 I)`` with ``mu = (x_t - beta_t / sqrt(1 -
abar_t) eps(x_t, t)) / sqrt(alpha_t)`` and a fixed variance has, between the fine-tuned and
the base model, ``KL = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) |eps_theta -
eps_base|^2`` (Ho et al. 2020, eq. 8-12); dropping the timestep-dependent constant, as
DDPM's "simple" loss does for the data term, leaves the squared difference of the noise
predictions summed over uniform timesteps (the penalty DPOK uses, Fan et al. 2023).

Randomness: member ``i``'s sampling noises and fine-tuning batches of round ``r`` come from
generators seeded by ``(seeds[i], r)`` (:func:`attractor.seeds.torch_generator`), and no
step mixes members, so a member's numbers do not depend on who else is in the batch.

Devices (``finetune(..., device)``): sampling, the reward and the Adam steps run there; the
noises and batches are drawn on the CPU from the same generators and then moved, so a
member's random numbers are the same on every device. The true preference (the reference
classifier, a fixed yardstick) reads the images on the CPU, and everything returned is on
the CPU.

References:
    Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
    Song, Meng and Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    Peters and Schaal, "Reinforcement Learning by Reward-Weighted Regression for
    Operational Space Control", ICML 2007.
    Fan et al., "DPOK: Reinforcement Learning for Fine-tuning Text-to-Image Diffusion
    Models", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.seeds import torch_generator
from attractor.stack.learned.rounds import Loss, climb, selection_weights
from attractor.tasks.denoise_digits import PIXELS, DenoiseDigitsOptions, alphas_bar, noisy_pairs
from attractor.training.device import host
from attractor.training.forward import Params, batched_forward
from attractor.world import denoise_digits
from attractor.world.rollout import EnsemblePolicy, initial_batch, rollout

Reward = Callable[[Tensor], Tensor]
"""Images ``[m, b, 64]`` -> ``[m, b]``: member ``i``'s evaluator scores row ``i`` (higher is
better)."""
Method = Literal["best-of-n", "reward-weighted"]


@dataclass(frozen=True)
class FinetuneDesign:
    """How each member's trainer fine-tunes its generator toward its evaluator.

    Attributes:
        method: ``best-of-n`` (keep the top ``keep`` of ``samples``, equal weights) or
            ``reward-weighted`` (weights ``softmax(reward / temperature)`` over all samples).
        rounds: rounds of sample -> select/weight -> fine-tune.
        samples: images sampled per member per round, from fresh noises.
        keep: images kept per member per round (best-of-n).
        temperature: ``beta`` of reward-weighted (in reward units; small = greedy).
        steps: Adam steps per round.
        lr: Adam learning rate.
        batch: noisy ``(x_t, t, eps)`` pairs per step per member.
        kl: weight of the KL penalty to the member's starting model (module notes).
        sampler_steps: DDIM updates per sample.
    """

    method: Method = "best-of-n"
    rounds: int = 4
    samples: int = 256
    keep: int = 32
    temperature: float = 1.0
    steps: int = 50
    lr: float = 5e-4
    batch: int = 64
    kl: float = 1.0
    sampler_steps: int = 20


@dataclass(frozen=True)
class Finetuned:
    """What :func:`finetune` produced.

    Attributes:
        params: ``[m, ...]`` the fine-tuned noise predictors' parameters.
        buffers: ``[m, ...]`` their buffers (unchanged).
        proxy: float64 ``[m, rounds + 1]`` mean reward (the member's own evaluator) of the
            member's images from the evaluation noises; column 0 is the starting model.
        true: float64 ``[m, rounds + 1]`` mean true preference of the same images.
        images: float32 ``[m, e, 64]`` the final models' images from the evaluation noises.
    """

    params: Params
    buffers: Params
    proxy: Tensor
    true: Tensor
    images: Tensor


def check_design(design: FinetuneDesign) -> None:
    """Raise a one-line :class:`~attractor.errors.UserError` for a design that cannot run."""
    methods = get_args(Method)
    if design.method not in methods:
        raise UserError(f"finetune: unknown method {design.method!r}; known: {', '.join(methods)}")
    for name in ("rounds", "samples", "keep", "steps", "batch", "sampler_steps"):
        value = getattr(design, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"finetune: {name} must be an integer >= 1, got {value!r}")
    if design.keep > design.samples:
        raise UserError(
            f"finetune: keep ({design.keep}) must not exceed samples ({design.samples})"
        )
    if not design.temperature > 0:
        raise UserError(f"finetune: temperature must be > 0, got {design.temperature}")
    if not design.lr > 0:
        raise UserError(f"finetune: lr must be > 0, got {design.lr}")
    if not design.kl >= 0:
        raise UserError(f"finetune: kl must be >= 0, got {design.kl}")


def true_preference_of(preferred: Sequence[int]) -> Reward:
    """The known rule: the reference classifier's probability mass on ``preferred`` classes,
    images ``[..., 64]`` (any device) -> ``[...]`` in ``[0, 1]`` on the CPU.
    """
    classes = sorted({int(c) for c in preferred})
    if not classes or not all(0 <= c < denoise_digits.CLASSES for c in classes):
        raise UserError(f"finetune: preferred classes must be digits 0..9, got {list(preferred)}")
    index = torch.tensor(classes)

    def preference(images: Tensor) -> Tensor:
        # The yardstick reads on the CPU: the same images are judged the same everywhere.
        probabilities = denoise_digits.reference_classifier().probabilities(images.cpu())
        return probabilities[..., index].sum(-1)

    return preference


def _options(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task's options without its ``name`` (a run config's ``[task]`` table has one)."""
    return {k: v for k, v in task.items() if k != "name"}


def sample_images(
    template: nn.Module,
    params: Params,
    buffers: Params,
    task: Mapping[str, Any],
    noise: Tensor,
    sampler_steps: int,
) -> Tensor:
    """The members' images from ``noise``: the denoise-digits world's own DDIM sampler
    (``eta = 0``, no clipping) rolled out with :class:`~attractor.world.EnsemblePolicy`.

    Args:
        noise: ``[m, b, 64]`` (row ``i`` for member ``i``) or ``[b, 64]`` (given to every
            member), on the device of ``params`` and ``buffers``.

    Returns:
        ``[m, b, 64]`` float32 images on that device, without grad.
    """
    # The world's steps run where the states are (its timestep embedding follows them).
    world = denoise_digits.make(steps=sampler_steps, task=_options(task))
    policy = EnsemblePolicy(template, params, buffers)
    x0 = initial_batch(noise, policy.members) if noise.dim() == 2 else noise
    with torch.no_grad():
        return rollout(world, policy, x0.to(torch.float32)).final


def clipped(images: Tensor) -> Tensor:
    """Images as shown, judged and learned from: pixels clipped to ``[-1, 1]``."""
    return images.clamp(-1.0, 1.0)


def _weights(scores: Tensor, design: FinetuneDesign) -> Tensor:
    """``scores [m, n]`` -> the round's sampling weights ``[m, n]`` (rows sum to 1)."""
    return selection_weights(scores, design.method, design.keep, design.temperature)


def _loss(
    forward: Callable[[Params, Params, Tensor], Tensor],
    live: Params,
    base: Params,
    buffers: Params,
    x: Tensor,
    eps: Tensor,
    kl: float,
) -> Tensor:
    """Per member ``[m]``: the noise-prediction MSE of pairs ``x [m, b, 64 + 2F]`` against
    their noise ``eps [m, b, 64]``, plus ``kl`` x the squared distance to the base's
    prediction (the Gaussian reverse steps' KL, up to a per-timestep constant).
    """
    prediction = forward(live, buffers, x)
    loss = (prediction - eps).pow(2).mean((1, 2))
    if kl > 0:
        with torch.no_grad():
            anchor = forward(base, buffers, x)
        loss = loss + kl * (prediction - anchor).pow(2).mean((1, 2))
    return loss


def _round_batches(
    images: Tensor,
    weights: Tensor,
    abar: Tensor,
    frequencies: int,
    design: FinetuneDesign,
    generators: Sequence[torch.Generator],
) -> tuple[Tensor, Tensor]:
    """Every step's pairs of one round, drawn up front so the steps run loop-free over members.

    Args:
        images: ``[m, n, 64]`` the round's samples; weights: ``[m, n]``.

    Returns:
        inputs ``[steps, m, batch, 64 + 2F]`` and noise targets ``[steps, m, batch, 64]``,
        on ``images``' device.
    """
    draws = design.steps * design.batch
    inputs, targets = [], []
    # One loop over members per round (not per step): each member's own generator draws
    # its image indices, timesteps and noises, so its batches ignore the other members.
    # Drawn on the CPU (the generators are CPU ones) and moved once per round.
    for x0, w, generator in zip(images.cpu(), weights.cpu(), generators, strict=True):
        index = torch.multinomial(w, draws, replacement=True, generator=generator)
        pair_in, pair_eps = noisy_pairs(x0[index], abar, 1, frequencies, generator)
        inputs.append(pair_in.reshape(design.steps, design.batch, -1))
        targets.append(pair_eps.reshape(design.steps, design.batch, -1))
    pairs = torch.stack(inputs, dim=1), torch.stack(targets, dim=1)
    return pairs[0].to(images.device), pairs[1].to(images.device)


def finetune(
    template: nn.Module,
    params: Params,
    buffers: Params,
    task: Mapping[str, Any],
    reward: Reward,
    true_preference: Reward,
    design: FinetuneDesign,
    seeds: Sequence[int],
    eval_noise: Tensor,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | None = None,
) -> Finetuned:
    """Fine-tune ``m`` noise predictors, member ``i`` toward row ``i`` of ``reward`` (module notes).

    Args:
        template: the denoiser module (``task.make_model()`` or ``Ensemble.module(member)``).
        params, buffers: stacked ``[m, ...]``; member ``i`` starts (and its KL anchor is) here.
        task: the ``denoise-digits`` options the models were trained with (a ``name`` key is
            ignored): the schedule, ``timesteps`` and ``frequencies`` of the inputs.
        reward: images ``[m, b, 64]`` -> ``[m, b]``, member ``i``'s evaluator on row ``i``.
        true_preference: images ``[m, b, 64]`` -> ``[m, b]`` in ``[0, 1]``, the known rule
            (:func:`true_preference_of`).
        design: the trainer (:func:`check_design` refuses a bad one).
        seeds: ``[m]`` member ``i``'s sampling and batch generators come from ``seeds[i]``.
        eval_noise: ``[e, 64]`` the fixed noises ``proxy`` and ``true`` are measured on.
        progress: called ``(round, rounds)`` after each round.
        device: where the members sample and train (None: the CPU); ``params``,
            ``buffers`` and ``eval_noise`` are moved there, ``reward`` is given images there.

    Returns:
        the fine-tuned members with their per-round proxy and true preference, on the CPU.
    """
    check_design(design)
    members = next(iter(params.values())).shape[0]
    if len(seeds) != members:
        raise UserError(f"finetune: {len(seeds)} seeds for {members} members")
    if eval_noise.dim() != 2 or eval_noise.shape[1] != PIXELS:
        raise UserError(
            f"finetune: eval_noise must be [e, {PIXELS}], got {tuple(eval_noise.shape)}"
        )
    try:
        options = DenoiseDigitsOptions.model_validate(_options(task))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "options"
        raise UserError(f"finetune: task.{where}: {error['msg']}") from None
    abar = alphas_bar(options.timesteps, options.schedule, options.constants())
    device = torch.device("cpu") if device is None else device
    given = dict(buffers)
    params = {k: v.to(device) for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    eval_noise = eval_noise.to(device)
    forward = batched_forward(template)
    base = {k: v.detach().clone() for k, v in params.items()}

    def measure(current: Params) -> tuple[Tensor, Tensor, Tensor]:
        images = clipped(
            sample_images(template, current, buffers, task, eval_noise, design.sampler_steps)
        )
        with torch.no_grad():
            proxy = reward(images).to(torch.float64).mean(-1)
            true = true_preference(images).to(torch.float64).mean(-1)
        return proxy.cpu(), true.cpu(), images.cpu()

    def round_losses(theta: Params, r: int) -> Iterator[Loss]:
        sampling = [torch_generator("finetune-samples", s, r) for s in seeds]
        noise = torch.stack([torch.randn(design.samples, PIXELS, generator=g) for g in sampling])
        noise = noise.to(device)  # drawn on the CPU: the same numbers on every device
        # Clipped to the pixel range the base was trained on: an unclipped DDIM sample has
        # pixels far outside [-1, 1] (|x| up to ~30 for the default denoiser), and training
        # on those as clean images wrecks the model within a round.
        samples = clipped(
            sample_images(template, theta, buffers, task, noise, design.sampler_steps)
        )
        with torch.no_grad():
            weights = _weights(reward(samples), design)
        batching = [torch_generator("finetune-batches", s, r) for s in seeds]
        inputs, targets = _round_batches(
            samples, weights, abar, options.frequencies, design, batching
        )
        for x, eps in zip(inputs, targets, strict=True):
            yield lambda live, x=x, eps=eps: _loss(forward, live, base, buffers, x, eps, design.kl)

    done = climb(params, design.rounds, design.lr, measure, round_losses, progress)
    return Finetuned(
        params={k: host(v) for k, v in done.params.items()},
        buffers=given,
        proxy=done.proxy,
        true=done.true,
        images=done.samples.to(torch.float32),
    )


__all__ = [
    "Finetuned",
    "FinetuneDesign",
    "Method",
    "Reward",
    "check_design",
    "clipped",
    "finetune",
    "sample_images",
    "true_preference_of",
]
