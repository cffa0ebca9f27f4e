"""What every image loader returns, and how it becomes a task's tensors.

A loader gives raw ``uint8`` pixels (:class:`ImageSplit`); :func:`image_tensors` picks the
requested subsets and standardizes them per channel with the *training* examples' mean and
std, giving ``float32 [n, C, H, W]`` inputs and ``int64 [n]`` labels. Loaders cache the raw
``uint8`` arrays (a quarter of the float size), so building a task once per chunk or worker
parses the files once and makes one float copy per build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.tasks.base import Task

#: Seed of the fixed subsets (``train_examples`` / ``test_examples``) and of the ImageFolder
#: split: part of the task's definition, never a perturbation (those are the plan's job).
SUBSET_SEED = 0


@dataclass(frozen=True)
class ImageSplit:
    """A dataset's raw pixels and labels, as read from its files.

    Attributes:
        x_train: ``uint8 [n_train, C, H, W]`` (read-only when cached).
        y_train: ``int64 [n_train]`` class ids in ``[0, len(classes))``.
        x_test: ``uint8 [n_test, C, H, W]``.
        y_test: ``int64 [n_test]``.
        classes: class names, indexed by class id.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


class ImageDataOptions(BaseModel):
    """The options every image task shares: where the files are and how many to use.

    A task's subclass redefines ``root`` with its own default folder (``data/cifar10``, ...),
    a conventional place that gives a one-line error naming it where nothing is there.
    """

    model_config = ConfigDict(extra="forbid")

    root: str = Field(
        "data",
        description="Folder with the dataset's files (relative paths start at the current "
        "directory); attractor never downloads.",
    )
    train_examples: int | None = Field(
        None,
        ge=1,
        description="Use this many training examples, a fixed (seed 0) class-stratified "
        "subset, for a quick try; None uses all.",
    )
    test_examples: int | None = Field(
        None,
        ge=1,
        description="Use this many test examples, a fixed (seed 0) class-stratified subset; "
        "None uses all.",
    )


def resolve_root(root: str) -> Path:
    """``root`` with ``~`` expanded, made absolute (the cache key), or a one-line error."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"image data root {str(path)!r} is not a folder; set [task] root")
    return path


def stratified_subset(labels: np.ndarray, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Indices of ``n`` of ``labels [m]``, each class in proportion to its share (largest
    remainders), drawn with ``seed``; ascending, so the subset keeps the files' order.
    ``n >= m`` gives every index.
    """
    m = len(labels)
    if n >= m:
        return np.arange(m)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / m
    take = np.floor(exact).astype(np.int64)
    # Hand the examples the floors left over to the classes with the largest remainders.
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of ``uint8 [n, C, H, W]`` pixels, each ``float64 [C]``.

    From a 256-bin histogram per channel, so no float copy of the images is made (CIFAR-10's
    training set as float64 would be 1.2 GB).
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = np.bincount(x[:, channel].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = (counts @ values) / total
        means.append(mean)
        stds.append(np.sqrt(max((counts @ (values - mean) ** 2) / total, 0.0)))
    return np.array(means), np.array(stds)


def standardized(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Tensor:
    """``float32 [n, C, H, W]`` copy of ``uint8`` pixels ``x``, minus ``mean [C]``, over
    ``std [C]`` (a constant channel is only centred). One float allocation, then in place.
    """
    out = torch.empty(x.shape, dtype=torch.float32)
    out.numpy()[...] = x  # the cast happens while copying: no intermediate array
    scale = np.where(std > 0, std, 1.0)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    out.div_(torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))
    return out


def image_tensors(
    split: ImageSplit, train_examples: int | None, test_examples: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x_train [n, C, H, W]``, ``y_train [n]``, ``x_test [m, C, H, W]``, ``y_test [m]``:
    the chosen subsets (:func:`stratified_subset`), standardized with the mean and std of the
    training examples used.
    """
    x_train, y_train = _subset(split.x_train, split.y_train, train_examples)
    x_test, y_test = _subset(split.x_test, split.y_test, test_examples)
    mean, std = channel_stats(x_train)
    return (
        standardized(x_train, mean, std),
        torch.from_numpy(np.array(y_train, dtype=np.int64)),
        standardized(x_test, mean, std),
        torch.from_numpy(np.array(y_test, dtype=np.int64)),
    )


def image_task(
    name: str,
    description: str,
    split: ImageSplit,
    make_model: Callable[[], nn.Module],
    train_examples: int | None = None,
    test_examples: int | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> Task:
    """The :class:`Task` of an image split: the chosen subsets standardized
    (:func:`image_tensors`), class ids doubling as the groups for ``holdout_group``.
    """
    x_train, y_train, x_test, y_test = image_tensors(split, train_examples, test_examples)
    return Task(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        make_model=make_model,
        num_classes=split.num_classes,
        description=description,
        augment=augment,
    )


def _subset(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    index = stratified_subset(y, n)
    return x[index], y[index]
