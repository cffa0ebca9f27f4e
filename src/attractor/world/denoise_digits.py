"""``denoise-digits``: the generator case, a deterministic DDIM sampler driven by the model.

The model is a ``denoise-digits`` task member (:mod:`attractor.tasks.denoise_digits`): a
noise predictor ``eps_hat(x_t, t)``. The world is the DDIM sampler with ``eta = 0`` (Song
et al. 2021), a deterministic map from initial noise to image, so a final image is a
function ``f(x_0)`` of the initial noise alone and its basins are well defined.

State ``[m, s, 64]``: the current ``x_t`` (pixels in ``[-1, 1]`` scale). With ``steps = S``
the sampler visits ``S`` of the training timesteps, ``tau_0 = T-1 > tau_1 > ... >
tau_{S-1} = 0`` (evenly spaced, rounded), and world step ``i`` is one DDIM update from
``tau_i`` to ``tau_{i+1}`` (``abar_{tau_S} = 1``: the last update lands on the clean
image)::

    eps = policy(concat(x, timestep_features(tau_i)))
    x0  = (x - sqrt(1 - abar_i) eps) / sqrt(abar_i)
    x'  = sqrt(abar_{i+1}) x0 + sqrt(1 - abar_{i+1}) eps

the Euler step of the probability-flow ODE in DDIM's variables, smooth in ``x``
(Lyapunov exponents go through it). ``clip=True`` clips ``x0`` to ``[-1, 1]`` and re-derives
``eps`` from it (guided-diffusion's DDIM); it is off by default because, with the small
noise predictors this world is for, it lowers the share of confidently read images (0.63
-> 0.43 for the default ensemble below: blurry "8"-like blobs). The schedule and the
embedding are the task's own functions, so the sampler uses exactly what the model was
trained on. ``steps`` defaults to 20 of the task's ``T = 100``: the confident share hardly
moves with the number of updates (0.62 / 0.63 / 0.62 / 0.61 at 10 / 20 / 50 / 100 for two
``[256, 256]`` members trained with :data:`TRAINER`) while the cost is linear in it.

Initial states (factor ``noise``): ``x_0 = sqrt(1 - a^2) ref + a fresh`` with a fixed
reference noise ``ref`` (``reference_seed``), fresh standard normal noise and
``a = min(1, 0.1 scale)``. Every mix is again exactly N(0, I), the distribution the sampler
was built for, so a perturbation probes the map ``f`` and never feeds it noise it was not
trained on; ``a`` is how far (``asin a``, an angle) the starts lie from the reference. Scale
0 is one fixed noise (one image), scale 1 a neighbourhood whose correlation with ``ref`` is
0.995, scale 10 and above independent draws (the basin shares are then the generator's own
class distribution). ``at({"noise": a})`` walks the great circle from ``ref`` towards a
second fixed noise (``a`` in ``[-1, 1]``).

Outcomes: ``class`` (the basin), the label a fixed reference classifier gives the final
image; ``confidence``, its largest softmax probability; ``distance``, the Euclidean
distance (pixels in ``[-1, 1]``) to the nearest training image (small: a copy of the
training set). The goal is ``confidence >= 0.9``: the image reads as one digit. The
classifier is a small MLP trained once per process on the digits' training split with
outlier exposure (Hendrycks et al. 2019: clipped Gaussian noise is pushed to the uniform
distribution), so noise and smudges are *not* confident: it reads 98% of the held-out
digits correctly and 93% of them with confidence >= 0.9, but no clipped noise image (the
same MLP without outlier exposure reads 27% of noise images that confidently, which would
make the goal meaningless).

References:
    Song, Meng and Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    Hendrycks, Mazeika and Dietterich, "Deep Anomaly Detection with Outlier Exposure",
    ICLR 2019.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.tasks.denoise_digits import (
    NAME as TASK_NAME,
)
from attractor.tasks.denoise_digits import (
    PIXELS,
    DenoiseDigitsOptions,
    alphas_bar,
    load_images,
    timestep_features,
)
from attractor.world.base import Constants, Policy, World, check_factors

SUMMARY = (
    "DDIM sampler (eta = 0) of a denoise-digits model: initial noise -> 8x8 digit; basins = "
    "the class a fixed classifier reads"
)
#: Half-width of the ``noise`` factor: the mixing weight ``a`` of fresh noise at scale 1.
NOISE_WIDTH = 0.1
GOAL_CONFIDENCE = 0.9
#: DDIM updates by default (fewer if the task has fewer timesteps).
DEFAULT_STEPS = 20
#: Training defaults for a world experiment that trains its own ensemble: about 10 s of one
#: CPU thread per member for the default ``[256, 256]`` task, whose samples are then read
#: confidently ~0.6 of the time (3x the steps or 4x the width add little).
TRAINER = {"optimizer": "adam", "lr": 5e-3, "steps": 1000, "batch_size": 256, "schedule": "cosine"}
CLASSES = 10

# The reference classifier: fixed architecture, seed and budget, so every process that
# builds the world reads images the same way.
_CLASSIFIER_SEED = 0
_CLASSIFIER_HIDDEN = 128
_CLASSIFIER_STEPS = 300
_CLASSIFIER_LR = 1e-2
_OUTLIER_WEIGHT = 0.2
_DISTANCE_CHUNK = 4096


@dataclass(frozen=True)
class ReferenceClassifier:
    """The fixed digit reader of the outcome features.

    Attributes:
        net: ``[..., 64]`` pixels in ``[-1, 1]`` -> ``[..., 10]`` logits (eval mode, frozen).
        test_accuracy: its accuracy on the 360 held-out digits.
        test_confident: share of held-out digits it reads with confidence >= 0.9.
        noise_confident: share of clipped N(0, I) noise images it reads that confidently.
    """

    net: nn.Sequential
    test_accuracy: float
    test_confident: float
    noise_confident: float

    def probabilities(self, x: Tensor) -> Tensor:
        """``x [..., 64]`` -> class probabilities ``[..., 10]`` of the clipped images, read on
        the CPU (where the classifier is) wherever ``x`` is.
        """
        return self.net(x.clamp(-1, 1).to("cpu", torch.float32)).softmax(-1)


@lru_cache(maxsize=1)
def reference_classifier() -> ReferenceClassifier:
    """The reference classifier, trained once per process (:func:`_train_classifier`)."""
    # Autograd on whatever the caller's mode: a first call may come from inside
    # torch.no_grad() or torch.inference_mode() (a rollout's features).
    with torch.inference_mode(False), torch.enable_grad():
        return _train_classifier()


def _train_classifier() -> ReferenceClassifier:
    """An MLP ``64 -> 128 -> 10``, full batch Adam, cross-entropy on the training digits plus
    outlier exposure on as many clipped Gaussian noise images (their predicted distribution
    pushed to uniform); scored on the held-out digits and on fresh noise.
    """
    x_train, y_train, x_test, y_test = (torch.tensor(a) for a in load_images())
    generator = torch.Generator().manual_seed(_CLASSIFIER_SEED)
    outliers = torch.randn(x_train.shape, generator=generator).clamp(-1, 1)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(_CLASSIFIER_SEED)
        net = nn.Sequential(
            nn.Linear(PIXELS, _CLASSIFIER_HIDDEN), nn.SiLU(), nn.Linear(_CLASSIFIER_HIDDEN, CLASSES)
        )
    optimizer = torch.optim.Adam(net.parameters(), lr=_CLASSIFIER_LR, weight_decay=1e-4)
    for _ in range(_CLASSIFIER_STEPS):
        optimizer.zero_grad()
        uniform = -net(outliers).log_softmax(-1).mean(-1).mean()
        loss = F.cross_entropy(net(x_train), y_train) + _OUTLIER_WEIGHT * uniform
        loss.backward()
        optimizer.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        probs = net(x_test).softmax(-1)
        noise = torch.randn(1000, PIXELS, generator=generator).clamp(-1, 1)
        noise_conf = net(noise).softmax(-1).amax(-1)
    return ReferenceClassifier(
        net=net,
        test_accuracy=float((probs.argmax(-1) == y_test).float().mean()),
        test_confident=float((probs.amax(-1) >= GOAL_CONFIDENCE).float().mean()),
        noise_confident=float((noise_conf >= GOAL_CONFIDENCE).float().mean()),
    )


@lru_cache(maxsize=1)
def _pca() -> tuple[Tensor, Tensor]:
    """Mean ``[64]`` and the first two principal directions ``[64, 2]`` of the training
    images (signs fixed so each direction's largest entry is positive).
    """
    x = torch.tensor(load_images()[0], dtype=torch.float64)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    directions = v[:2].T
    signs = directions.gather(0, directions.abs().argmax(0, keepdim=True)).sign()
    return mean.float(), (directions * signs).float()


@lru_cache(maxsize=1)
def _training_images() -> Tensor:
    return torch.tensor(load_images()[0])


def sampler_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` training timesteps from ``T-1`` down to 0, evenly spaced (rounded)."""
    if not 1 <= steps <= timesteps:
        raise UserError(f"world 'denoise-digits': steps must be in [1, {timesteps}], got {steps}")
    if steps == 1:
        return [timesteps - 1]
    return [round((timesteps - 1) * (1 - i / (steps - 1))) for i in range(steps)]


def ddim_step(
    x: Tensor, eps: Tensor, abar_now: float, abar_next: float, clip: bool = False
) -> Tensor:
    """One deterministic DDIM update (``eta = 0``) from noise level ``abar_now`` to
    ``abar_next``: ``x [..., 64]``, predicted noise ``eps [..., 64]`` -> ``[..., 64]``.
    """
    x0 = (x - math.sqrt(1 - abar_now) * eps) / math.sqrt(abar_now)
    if clip:
        x0 = x0.clamp(-1, 1)
        # The noise consistent with the clipped image (as guided-diffusion's DDIM does):
        # mixing a clipped x0 with the raw eps leaves the trajectory and wrecks the images.
        eps = (x - math.sqrt(abar_now) * x0) / math.sqrt(1 - abar_now)
    return math.sqrt(abar_next) * x0 + math.sqrt(1 - abar_next) * eps


def _task_options(task: Mapping[str, Any] | None) -> DenoiseDigitsOptions:
    try:
        return DenoiseDigitsOptions.model_validate(dict(task or {}))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "options"
        raise UserError(f"world 'denoise-digits' task.{where}: {error['msg']}") from None


@dataclass(frozen=True)
class Sampler:
    """The DDIM updates of one world: which training timesteps it visits and how.

    Attributes:
        timesteps: the task's ``T``.
        schedule: the task's noise schedule (its constants come with every step).
        taus: the visited timesteps, ``T-1`` down to 0 (:func:`sampler_timesteps`).
        embedding: ``[S, 2F]`` the model's timestep features of each visited timestep.
        clip: clip the predicted clean image (:func:`ddim_step`).
    """

    timesteps: int
    schedule: str
    taus: tuple[int, ...]
    embedding: Tensor
    clip: bool

    def step(self, x: Tensor, policy: Policy | None, t: int, constants: Constants) -> Tensor:
        """World step ``t``: ``x [m, s, 64]`` at ``taus[t]`` -> ``[m, s, 64]`` at the next."""
        if policy is None:
            raise ValueError("world 'denoise-digits' needs a policy (the noise predictor)")
        if not 0 <= t < len(self.taus):
            raise ValueError(
                f"world 'denoise-digits' has {len(self.taus)} sampler steps, got step {t}"
            )
        # From the constants of this call, so a structural perturbation of the schedule
        # changes the sampler while the model keeps what it was trained on.
        abar = alphas_bar(self.timesteps, self.schedule, constants)
        now = float(abar[self.taus[t]])
        after = float(abar[self.taus[t + 1]]) if t + 1 < len(self.taus) else 1.0
        # The timestep features follow the states to their device (a 2F-vector per step).
        embedding = self.embedding[t].to(x.device, x.dtype).expand(*x.shape[:-1], -1)
        eps = policy(torch.cat([x, embedding], dim=-1))
        return ddim_step(x, eps, now, after, self.clip)


@dataclass(frozen=True)
class NoiseStarts:
    """Initial noises around a fixed reference (the ``noise`` factor; see the module notes).

    Attributes:
        reference: ``[64]`` the noise at scale 0.
        direction: ``[64]`` a second fixed noise, the other end of :meth:`at`'s path.
    """

    reference: Tensor
    direction: Tensor

    @classmethod
    def seeded(cls, seed: int) -> NoiseStarts:
        generator = torch.Generator().manual_seed(seed)
        reference = torch.randn(PIXELS, generator=generator)
        return cls(reference, torch.randn(PIXELS, generator=generator))

    def initial(self, n: int, scale: float, generator: torch.Generator) -> Tensor:
        """``[n, 64]``: ``sqrt(1 - a^2) ref + a fresh``, ``a = min(1, 0.1 |scale|)``."""
        a = min(1.0, NOISE_WIDTH * abs(scale))
        fresh = torch.randn(n, PIXELS, generator=generator)
        return math.sqrt(1 - a * a) * self.reference + a * fresh

    def at(self, values: Mapping[str, Tensor]) -> Tensor:
        """``[n, 64]``: ``sqrt(1 - a^2) ref + a dir`` for ``a = values["noise"]`` in [-1, 1]."""
        check_factors("denoise-digits", ["noise"], values)
        a = values["noise"].to(torch.float32).clamp(-1, 1).reshape(-1, 1)
        return (1 - a * a).sqrt() * self.reference + a * self.direction


def features(x: Tensor, constants: Constants) -> dict[str, Tensor]:
    """Outcomes of final images ``x [..., 64]``: ``class`` (int64), ``confidence`` and
    ``distance`` to the nearest training image, each ``[...]`` on the CPU.
    """
    probs = reference_classifier().probabilities(x)
    flat = x.detach().reshape(-1, PIXELS).clamp(-1, 1).to("cpu", torch.float32)
    # In chunks: the distance matrix to the 1437 training images grows with the states.
    nearest = torch.cat(
        [torch.cdist(chunk, _training_images()).amin(-1) for chunk in flat.split(_DISTANCE_CHUNK)]
    )
    return {
        "class": probs.argmax(-1),
        "confidence": probs.amax(-1),
        "distance": nearest.reshape(x.shape[:-1]),
    }


def project(x: Tensor) -> Tensor:
    """``[..., 64] -> [..., 2]``: coordinates along the training images' first two
    principal directions.
    """
    mean, directions = _pca()
    return (x.to("cpu", torch.float32) - mean) @ directions


def describe(x: Tensor) -> Tensor:
    """``x_T [k, 64]`` -> ``[k, 8, 8]`` images in ``[0, 1]`` (1 = ink)."""
    return ((x.clamp(-1, 1) + 1) / 2).reshape(*x.shape[:-1], 8, 8)


def make(
    steps: int | None = None,
    reference_seed: int = 0,
    clip: bool = False,
    goal_confidence: float = GOAL_CONFIDENCE,
    task: Mapping[str, Any] | None = None,
) -> World:
    """The DDIM sampler world.

    Args:
        steps: DDIM updates (sampler timesteps out of the task's ``T``); default
            ``min(20, T)`` (see the module notes).
        reference_seed: seed of the reference noise (and of ``at``'s second direction).
        clip: clip each predicted clean image to ``[-1, 1]`` (off by default, see above).
        goal_confidence: the classifier confidence a final image needs to reach the goal.
        task: ``denoise-digits`` options overriding the task defaults; they must be the
            options the sampled ensemble was trained with (``timesteps``, ``schedule``,
            betas, ``frequencies``): the sampler uses the same schedule and embedding.
    """
    options = _task_options(task)
    steps = min(DEFAULT_STEPS, options.timesteps) if steps is None else steps
    taus = sampler_timesteps(options.timesteps, steps)
    sampler = Sampler(
        timesteps=options.timesteps,
        schedule=options.schedule,
        taus=tuple(taus),
        embedding=timestep_features(torch.tensor(taus), options.timesteps, options.frequencies),
        clip=clip,
    )
    starts = NoiseStarts.seeded(reference_seed)

    def goal(x: Tensor, constants: Constants) -> Tensor:
        return reference_classifier().probabilities(x).amax(-1) >= goal_confidence

    return World(
        name="denoise-digits",
        description=SUMMARY,
        factors={"noise": NOISE_WIDTH},
        constants=options.constants(),
        steps=len(taus),
        task={"name": TASK_NAME, **options.model_dump(exclude_none=True)},
        initial=starts.initial,
        step=sampler.step,
        features=features,
        basin_feature="class",
        project=project,
        goal=goal,
        at=starts.at,
        describe=describe,
        differentiable=True,
        trainer=dict(TRAINER),
        options={
            "steps": steps,
            "reference_seed": reference_seed,
            "clip": clip,
            "goal_confidence": goal_confidence,
            "task": dict(task or {}),
        },
    )
