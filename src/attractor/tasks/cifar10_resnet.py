"""``cifar10-resnet20``: a CIFAR ResNet (ResNet-20 by default) on CIFAR-10's binary files.

``root`` is the extracted ``cifar-10-batches-bin`` folder or its parent (the pickled
"python version" is refused). Inputs ``float32 [n, 3, 32, 32]`` standardized per channel
with the training examples' mean and std; targets ``int64 [n]`` in ``[0, 10)``; 50000
training / 10000 test examples unless ``train_examples`` / ``test_examples`` pick fewer.
Training minibatches get He et al.'s augmentation (random crop with 4 pixels of zero
padding, horizontal flip), drawn per member and step; evaluation never augments.

References:
    He, Zhang, Ren & Sun (2016), "Deep Residual Learning for Image Recognition".
    Frankle, Dziugaite, Roy & Carbin (2020), "Linear Mode Connectivity and the Lottery
    Ticket Hypothesis" (ResNet-20 on CIFAR-10, the instability experiments).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from attractor.tasks.base import Task
from attractor.tasks.images import CropFlip, ImageDataOptions, image_task, load_cifar10
from attractor.tasks.images.models import check_resnet_depth, model_factory

NAME = "cifar10-resnet20"
SUMMARY = "CIFAR ResNet (ResNet-20) on CIFAR-10's binary files in root, crop+flip (50000 / 10000)"
#: He et al.'s CIFAR crop: 4 pixels of zero padding around a 32x32 image.
PADDING = 4


class CifarResNetOptions(ImageDataOptions):
    """Options of ``cifar10-resnet20`` (the ``[task]`` keys besides ``name``)."""

    root: str = Field(
        "data/cifar10",
        description="cifar-10-batches-bin or its parent folder; relative to the current directory.",
    )

    depth: Annotated[int, AfterValidator(check_resnet_depth)] = Field(
        20, description="ResNet depth, 6k + 2 (20, 32, 44, 56, ...): k basic blocks per stage."
    )
    width: int = Field(16, ge=1, description="Channels of the first stage (doubled per stage).")
    augment: bool = Field(
        True, description="Random crop (4 px zero padding) and horizontal flip of training batches."
    )


def make(options: CifarResNetOptions) -> Task:
    """Build ``cifar10-resnet20``; class ids double as the groups for ``holdout_group``."""
    split = load_cifar10(options.root)
    channels, size, _ = split.shape
    model = model_factory("resnet", channels, split.num_classes, size, options.depth, options.width)
    augment = CropFlip(PADDING) if options.augment else None
    return image_task(
        NAME, SUMMARY, split, model, options.train_examples, options.test_examples, augment
    )
