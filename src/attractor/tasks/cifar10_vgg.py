"""``cifar10-vgg``: VGG-16 with BatchNorm (open_lth's CIFAR VGG) on CIFAR-10's binary files.

Data as in :mod:`cifar10_resnet`: ``root`` is ``cifar-10-batches-bin`` or its parent,
``float32 [n, 3, 32, 32]`` standardized per channel, ``int64 [n]`` targets, random crop
(4 px) and flip of the training batches unless ``augment = false``.

References:
    Simonyan & Zisserman (2015), "Very Deep Convolutional Networks for Large-Scale Image
    Recognition"; Frankle et al. (2020) train this VGG-16 on CIFAR-10.
"""

from __future__ import annotations

from pydantic import Field

from attractor.tasks.base import Task
from attractor.tasks.images import CropFlip, ImageDataOptions, image_task, load_cifar10
from attractor.tasks.images.models import model_factory

NAME = "cifar10-vgg"
SUMMARY = "VGG-16 with BatchNorm on CIFAR-10's binary files in root, crop+flip (50000 / 10000)"
PADDING = 4


class CifarVGGOptions(ImageDataOptions):
    """Options of ``cifar10-vgg`` (the ``[task]`` keys besides ``name``)."""

    root: str = Field(
        "data/cifar10",
        description="cifar-10-batches-bin or its parent folder; relative to the current directory.",
    )

    augment: bool = Field(
        True, description="Random crop (4 px zero padding) and horizontal flip of training batches."
    )


def make(options: CifarVGGOptions) -> Task:
    """Build ``cifar10-vgg``; class ids double as the groups for ``holdout_group``."""
    split = load_cifar10(options.root)
    channels, size, _ = split.shape
    model = model_factory("vgg", channels, split.num_classes, size)
    augment = CropFlip(PADDING) if options.augment else None
    return image_task(
        NAME, SUMMARY, split, model, options.train_examples, options.test_examples, augment
    )
