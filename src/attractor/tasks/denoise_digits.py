"""``denoise-digits``: a DDPM noise predictor on the 8x8 digits, as an ordinary supervised task.

The generator case of the world level (:mod:`attractor.world.denoise_digits` samples with
it). Images are scikit-learn's digits with pixels scaled from ``[0, 16]`` to ``[-1, 1]``,
split like ``digits-mlp`` (stratified, ``random_state=0``). The diffusion objective is
turned into a fixed, seeded dataset so the engine trains it like any other task (and as a
vectorized ensemble): every image gets ``draws`` pairs

    t ~ U{0, ..., T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    input = concat(x_t [64], timestep_features(t) [2 F]),  target = eps [64]

and the loss is the squared error per pixel (its mean is the DDPM "simple" loss, Ho et al.
2020). The test split is the held-out images' pairs. The noise schedule
(:func:`alphas_bar`) and the timestep embedding (:func:`timestep_features`) are module
functions, so a sampler uses exactly what the model was trained on.

References:
    Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
    Nichol and Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021
    (the cosine schedule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from attractor.tasks.base import Task
from attractor.tasks.digits_mlp import SPLIT_SEED, TEST_SIZE, build_mlp

NAME = "denoise-digits"
SUMMARY = "DDPM noise predictor (MLP) on the 8x8 digits in [-1, 1]: (x_t, t features) -> noise, MSE"
PIXELS = 64
#: The DDPM paper's linear schedule is 1e-4 .. 0.02 over 1000 steps; over T steps the same
#: total noise needs betas 1000/T times larger (else x_T keeps a visible image at T=100).
_BETA_START_X_T = 0.1
_BETA_END_X_T = 20.0
_MAX_BETA = 0.999

Schedule = Literal["linear", "cosine"]
Activation = Literal["relu", "tanh", "gelu", "silu"]


class DenoiseDigitsOptions(BaseModel):
    """Options of ``denoise-digits`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [256, 256],
        description="Widths of the hidden layers of the noise-predicting MLP.",
    )
    activation: Activation = Field(
        "silu", description="Nonlinearity after each hidden layer: relu | tanh | gelu | silu."
    )
    timesteps: int = Field(100, ge=2, le=10_000, description="Diffusion steps T.")
    schedule: Schedule = Field("linear", description="Noise schedule: linear | cosine.")
    beta_start: float | None = Field(
        None, gt=0, lt=1, description="Linear schedule's first beta (default 0.1 / T)."
    )
    beta_end: float | None = Field(
        None, gt=0, lt=1, description="Linear schedule's last beta (default min(20 / T, 0.999))."
    )
    cosine_offset: float = Field(
        0.008, gt=0, lt=1, description="Cosine schedule's offset s (Nichol and Dhariwal)."
    )
    frequencies: int = Field(
        4, ge=1, le=12, description="Timestep embedding: sin/cos of pi 2^k t/T, k < frequencies."
    )
    draws: int = Field(16, ge=1, le=1000, description="Noise draws (pairs) per image.")
    seed: int = Field(0, ge=0, description="Seed of the timesteps and noises of the pairs.")

    @model_validator(mode="after")
    def _betas_increase(self) -> DenoiseDigitsOptions:
        start, end = linear_betas_range(self)
        if not start < end:
            raise ValueError(f"beta_start ({start}) must be below beta_end ({end})")
        return self

    def constants(self) -> dict[str, float]:
        """The schedule's own constants by name (what a sampler may perturb)."""
        if self.schedule == "cosine":
            return {"cosine_offset": self.cosine_offset}
        start, end = linear_betas_range(self)
        return {"beta_start": start, "beta_end": end}


def linear_betas_range(options: DenoiseDigitsOptions) -> tuple[float, float]:
    """``(beta_start, beta_end)`` of the linear schedule, defaults scaled to ``T``."""
    t = options.timesteps
    start = options.beta_start if options.beta_start is not None else _BETA_START_X_T / t
    end = options.beta_end if options.beta_end is not None else min(_BETA_END_X_T / t, _MAX_BETA)
    return start, end


def alphas_bar(timesteps: int, schedule: str, constants: Mapping[str, float]) -> Tensor:
    """``abar [T]`` float64: ``abar_t = prod_{s <= t} (1 - beta_s)``, ``t = 0 .. T-1``.

    Args:
        schedule: ``linear`` (``beta_t`` from ``beta_start`` to ``beta_end``) or ``cosine``
            (``abar(t) = f(t+1) / f(0)``, ``f(u) = cos^2((u/T + s) / (1 + s) pi/2)``); each
            ``beta`` clipped to 0.999 as in Nichol and Dhariwal.
        constants: ``beta_start``, ``beta_end`` (linear) or ``cosine_offset`` (cosine).
    """
    if schedule == "linear":
        # Clipped like the cosine betas: a sampler whose constants are perturbed past 1
        # (structural stability) gets a very noisy schedule, not a negative abar.
        betas = torch.linspace(
            constants["beta_start"], constants["beta_end"], timesteps, dtype=torch.float64
        ).clamp(max=_MAX_BETA)
    elif schedule == "cosine":
        s = constants["cosine_offset"]
        u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=_MAX_BETA)
    else:
        raise ValueError(f"unknown noise schedule {schedule!r}")
    return torch.cumprod(1 - betas, dim=0)


def timestep_features(t: Tensor, timesteps: int, frequencies: int) -> Tensor:
    """The model's timestep embedding: ``t [...]`` (ints in ``[0, T)``) -> ``[..., 2 F]``
    float32, ``[sin(pi 2^k t/T) for k < F] + [cos(pi 2^k t/T) for k < F]``.

    ``k = 0`` alone already names ``t`` uniquely (``pi t/T`` stays within half a turn);
    the higher frequencies let a small MLP tell neighbouring steps apart.
    """
    scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float64)
    angles = (t.to(torch.float64) / timesteps).unsqueeze(-1) * scales
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(torch.float32)


@lru_cache(maxsize=1)
def load_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed split with pixels in ``[-1, 1]``: ``x_train [1437, 64]`` float32,
    ``y_train [1437]`` int64, ``x_test [360, 64]``, ``y_test [360]`` (read-only, cached).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    arrays = (
        (x_train / 8.0 - 1.0).astype(np.float32),
        y_train.astype(np.int64),
        (x_test / 8.0 - 1.0).astype(np.float32),
        y_test.astype(np.int64),
    )
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return arrays


def noisy_pairs(
    images: Tensor, abar: Tensor, draws: int, frequencies: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``draws`` pairs per image: ``images [n, 64]`` -> inputs ``[n draws, 64 + 2F]``,
    targets (the noise) ``[n draws, 64]``, image-major (image ``i``'s pairs are rows
    ``i draws .. (i+1) draws - 1``).
    """
    x0 = images.repeat_interleave(draws, dim=0)
    t = torch.randint(0, abar.shape[0], (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    a = abar[t].to(torch.float32).unsqueeze(-1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    features = timestep_features(t, abar.shape[0], frequencies)
    return torch.cat([x_t, features], dim=-1), eps


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-pixel squared error: ``[..., 64]`` x ``[..., 64]`` -> ``[..., 64]`` (its mean is
    the MSE; per pixel, so it has the targets' shape like every task's per-example loss).
    """
    return (prediction - target).pow(2)


def build_model(in_features: int, hidden: Sequence[int], activation: str) -> nn.Sequential:
    """The noise predictor: ``[batch, 64 + 2F]`` -> ``[batch, 64]``, a flat MLP (the shape the
    vectorized engine trains with batched matmuls).
    """
    return build_mlp(in_features, hidden, PIXELS, activation)


def make(options: DenoiseDigitsOptions) -> Task:
    """Build ``denoise-digits``: train pairs from the training images, test pairs from the
    held-out ones, both from one generator seeded by ``options.seed``.
    """
    x_train, _, x_test, _ = (torch.tensor(a) for a in load_images())
    abar = alphas_bar(options.timesteps, options.schedule, options.constants())
    generator = torch.Generator().manual_seed(options.seed)
    train_in, train_eps = noisy_pairs(x_train, abar, options.draws, options.frequencies, generator)
    test_in, test_eps = noisy_pairs(x_test, abar, options.draws, options.frequencies, generator)
    return Task(
        name=NAME,
        x_train=train_in,
        y_train=train_eps,
        x_test=test_in,
        y_test=test_eps,
        make_model=partial(
            build_model, PIXELS + 2 * options.frequencies, tuple(options.hidden), options.activation
        ),
        loss=squared_error,
        num_classes=None,
        description=SUMMARY,
    )
