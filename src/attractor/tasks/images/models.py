"""The convolutional models image tasks offer by name, and the checks of their options."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from torch import nn

from attractor.tasks.conv_models import VGG, LeNet, ResNet

ModelKind = Literal["resnet", "vgg", "lenet"]
#: The CIFAR ResNets' stages: depth 6k + 2.
STAGES = 3
#: LeNet's last pooling needs a feature map of at least 1 pixel: ((s // 2) - 4) // 2 >= 1.
LENET_MIN_SIZE = 12


def check_resnet_depth(depth: int) -> int:
    """``depth`` if a 3-stage CIFAR ResNet has it (6k + 2, k >= 1); else ``ValueError`` (a
    pydantic validator turns it into the option's one-line error).
    """
    if depth < 2 + 2 * STAGES or (depth - 2) % (2 * STAGES):
        raise ValueError("the depth of a 3-stage ResNet is 6k + 2 (8, 14, 20, 32, 56, ...)")
    return depth


def model_factory(
    kind: ModelKind,
    in_channels: int,
    num_classes: int,
    image_size: int,
    depth: int = 20,
    width: int = 16,
) -> Callable[[], nn.Module]:
    """A factory of fresh models for ``[b, in_channels, image_size, image_size]`` images:
    ``ResNet(depth, width)``, VGG-16 with BatchNorm (open_lth's CIFAR VGG) or LeNet-5.
    """
    if kind == "resnet":
        return partial(
            ResNet, depth=depth, width=width, in_channels=in_channels, num_classes=num_classes
        )
    if kind == "vgg":
        return partial(VGG, in_channels=in_channels, num_classes=num_classes)
    return partial(LeNet, in_channels=in_channels, num_classes=num_classes, size=image_size)
