"""``digits-cnn``: a small CIFAR-style ResNet on scikit-learn's 8x8 digits as images.

The bundled data (offline, seconds to train): :mod:`digits_mlp`'s fixed standardized split
(per pixel, with the training split's mean and std) reshaped to ``float32 [n, 1, 8, 8]``;
targets ``int64 [n]`` in ``[0, 10)``; 1437 training / 360 test examples. The default model
is ``ResNet(depth=8, width=8, in_channels=1, stages=3)``: one :class:`BasicBlock` per stage
at widths 8, 16, 32 on 8x8, 4x4, 2x2 maps (the convolutional analogue of ``digits-mlp``
that tests of BatchNorm, permutation alignment, CKA and certified bounds on conv nets
share). No augmentation: mirrored digits are other glyphs, and a crop of an 8x8 image loses
much of the digit.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from attractor.tasks.base import Task
from attractor.tasks.conv_models import ResNet
from attractor.tasks.digits_mlp import NUM_CLASSES, split_tensors
from attractor.tasks.images.models import STAGES, check_resnet_depth

NAME = "digits-cnn"
SUMMARY = "ResNet-8 (width 8) on scikit-learn's 8x8 digits as [1, 8, 8] images (1437 / 360)"
SIDE = 8


class DigitsCNNOptions(BaseModel):
    """Options of ``digits-cnn`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    depth: Annotated[int, AfterValidator(check_resnet_depth)] = Field(
        8, description="ResNet depth, 6k + 2 (8, 14, 20, ...): k basic blocks per stage."
    )
    width: int = Field(8, ge=1, description="Channels of the first stage (doubled per stage).")


def make(options: DigitsCNNOptions) -> Task:
    """Build ``digits-cnn``: ``x [n, 1, 8, 8]``; class ids double as the groups."""
    x_train, y_train, x_test, y_test = split_tensors()
    return Task(
        name=NAME,
        x_train=x_train.view(-1, 1, SIDE, SIDE),
        y_train=y_train,
        x_test=x_test.view(-1, 1, SIDE, SIDE),
        y_test=y_test,
        make_model=partial(
            ResNet,
            depth=options.depth,
            width=options.width,
            in_channels=1,
            num_classes=NUM_CLASSES,
            stages=STAGES,
        ),
        num_classes=NUM_CLASSES,
        description=SUMMARY,
    )
