"""``digits-mlp``: an MLP on scikit-learn's 8x8 handwritten digits (bundled, so offline).

The split is fixed (stratified, ``random_state=0``) so every run, machine and backend sees
the same training and test examples; perturbations of the data are the plan's job
(bootstrap, held-out groups, label noise), never the task's.

Inputs are ``float32 [n, 64]``, standardized with the *training* split's mean and std;
targets are ``int64 [n]`` class ids in ``[0, 10)``. 1437 training / 360 test examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from attractor.tasks.base import Task

NAME = "digits-mlp"
SUMMARY = "MLP on scikit-learn's 8x8 digits (1437 train / 360 test, 10 classes)"
NUM_CLASSES = 10
NUM_FEATURES = 64
TEST_SIZE = 0.2
SPLIT_SEED = 0
# A few border pixels are (almost) always 0 on the training split; dividing by their tiny
# std would turn a rare nonzero test pixel into a feature in the thousands.
MIN_STD = 1.0

Activation = Literal["relu", "tanh", "gelu"]
#: Every nonlinearity :func:`build_mlp` takes (tasks offer the ones their options list).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class DigitsOptions(BaseModel):
    """Options of ``digits-mlp`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 128],
        description="Widths of the hidden layers, input to output; [] gives a linear model.",
    )
    activation: Activation = Field(
        "relu", description="Nonlinearity after each hidden layer: relu | tanh | gelu."
    )


@lru_cache(maxsize=1)
def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed standardized split: ``x_train [1437, 64]``, ``y_train [1437]``,
    ``x_test [360, 64]``, ``y_test [360]``.

    Cached, so building the task for every chunk or worker costs one copy. The arrays
    are read-only; callers copy them into tensors (see :func:`split_tensors`).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    mean = x_train.mean(axis=0)
    std = np.maximum(x_train.std(axis=0), MIN_STD)
    arrays = (
        ((x_train - mean) / std).astype(np.float32),
        y_train.astype(np.int64),
        ((x_test - mean) / std).astype(np.float32),
        y_test.astype(np.int64),
    )
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return arrays


def split_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh tensor copies of :func:`load_split` (mutating a task leaves the cache alone)."""
    return tuple(torch.tensor(array) for array in load_split())  # type: ignore[return-value]


def build_mlp(
    in_features: int, hidden: Sequence[int], out_features: int, activation: str
) -> nn.Sequential:
    """``nn.Sequential(Linear, act, ..., Linear)``: ``[batch, in_features]`` ->
    ``[batch, out_features]``.

    Kept a flat sequence of ``nn.Linear`` and activation modules: the vectorized engine
    trains exactly that shape with batched matmuls instead of ``vmap``.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), _ACTIVATIONS[activation]()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def make(options: DigitsOptions) -> Task:
    """Build ``digits-mlp``; class ids double as the groups for ``holdout_group``."""
    x_train, y_train, x_test, y_test = split_tensors()
    return Task(
        name=NAME,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        make_model=partial(
            build_mlp, NUM_FEATURES, tuple(options.hidden), NUM_CLASSES, options.activation
        ),
        num_classes=NUM_CLASSES,
        groups=None,
        description=SUMMARY,
    )
