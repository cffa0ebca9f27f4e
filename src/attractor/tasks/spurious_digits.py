"""``spurious-digits``: the digits task plus a shortcut feature that is only reliable in training.

Each example gets ``num_classes`` (10) extra input features, a one-hot class times
``strength``, so inputs are ``float32 [n, 74]``:

* training split: the one-hot of the *true* label for a ``shortcut_fraction`` share of the
  examples (chosen by a fixed seed), and of a *wrong* label drawn uniformly from the other
  nine classes for the rest, so exactly that share carries a correct shortcut;
* test split: the one-hot of a uniformly random label (fixed seed), independent of the
  true label, so it agrees with it on about 10% of examples.

A model that leans on the shortcut fits the training split and falls towards chance on
the test split; one that reads the pixels does not. Test accuracy therefore measures
shortcut reliance directly; to measure it per example, compare a model's predictions
with the test shortcut class ``x_test[:, 64:].argmax(1)`` (:func:`shortcut_labels`).
The task's probes hold the test pixels twice: ``shortcut_agree`` with the shortcut set to
the true label, ``shortcut_random`` with the test split's random one; the accuracy gap
between them is the shortcut reliance.
With ``shortcut_fraction < 1`` the training examples are grouped by whether their
shortcut is correct (group 1) or not (group 0), so ``holdout_group`` can remove either.

Targets are ``int64 [n]`` class ids; the pixels, split and model are digits-mlp's.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from attractor.tasks.base import Task
from attractor.tasks.digits_mlp import (
    NUM_CLASSES,
    NUM_FEATURES,
    DigitsOptions,
    build_mlp,
    split_tensors,
)

NAME = "spurious-digits"
SUMMARY = "digits with a one-hot label shortcut that is correct in training and random at test"
# Fixed so the shortcut assignment is the same in every run; plan seeds never touch it.
SHORTCUT_SEED = 0


class SpuriousDigitsOptions(DigitsOptions):
    """Options of ``spurious-digits``: digits-mlp's plus the shortcut's strength and reliability."""

    strength: float = Field(
        1.0, ge=0, description="Value of the shortcut one-hot feature (0 turns the shortcut off)."
    )
    shortcut_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "Share of training examples whose shortcut is the true label; the rest get a wrong one."
        ),
    )


def shortcut_labels(x: Tensor) -> Tensor:
    """The class each example's shortcut points to (needs ``strength > 0``): ``x [n, 74]`` ->
    ``int64 [n]``.
    """
    return x[..., NUM_FEATURES:].argmax(-1)


def _shortcut_classes(
    y_train: np.ndarray, n_test: int, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shortcut class per example: ``(train [n_train], correct [n_train] bool, test [n_test])``."""
    rng = np.random.default_rng(SHORTCUT_SEED)
    n_train = len(y_train)
    correct = np.zeros(n_train, dtype=bool)
    correct[rng.permutation(n_train)[: round(fraction * n_train)]] = True
    # A shift in [1, C) makes the label wrong, so `correct` is exact rather than "mostly".
    wrong = (y_train + rng.integers(1, NUM_CLASSES, size=n_train)) % NUM_CLASSES
    train = np.where(correct, y_train, wrong)
    test = rng.integers(0, NUM_CLASSES, size=n_test)
    return train, correct, test


def _with_shortcut(x: Tensor, classes: np.ndarray, strength: float) -> Tensor:
    """Append ``strength * one_hot(classes)``: ``x [n, 64]`` -> ``[n, 74]``."""
    onehot = torch.nn.functional.one_hot(torch.from_numpy(classes).long(), NUM_CLASSES).to(x.dtype)
    return torch.cat([x, strength * onehot], dim=1)


def make(options: SpuriousDigitsOptions) -> Task:
    """Build ``spurious-digits``; groups are shortcut correctness when ``shortcut_fraction < 1``."""
    x_train, y_train, x_test, y_test = split_tensors()
    train_classes, correct, test_classes = _shortcut_classes(
        y_train.numpy(), len(y_test), options.shortcut_fraction
    )
    groups = torch.from_numpy(correct.astype(np.int64)) if options.shortcut_fraction < 1 else None
    test = _with_shortcut(x_test, test_classes, options.strength)
    agree = _with_shortcut(x_test, y_test.numpy(), options.strength)
    return Task(
        name=NAME,
        x_train=_with_shortcut(x_train, train_classes, options.strength),
        y_train=y_train,
        x_test=test,
        y_test=y_test,
        probes={"shortcut_agree": (agree, y_test), "shortcut_random": (test, y_test)},
        make_model=partial(
            build_mlp,
            NUM_FEATURES + NUM_CLASSES,
            tuple(options.hidden),
            NUM_CLASSES,
            options.activation,
        ),
        num_classes=NUM_CLASSES,
        groups=groups,
        description=SUMMARY,
    )
