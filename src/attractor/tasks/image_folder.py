"""``image-folder``: a convolutional net on the user's images in class folders.

``root`` is ``root/train/<class>/*`` and ``root/test/<class>/*``, or ``root/<class>/*``
split with a fixed seed (``test_fraction`` of each class held out); see
:mod:`attractor.tasks.images.folder`. Images are decoded with Pillow, converted to
``channels`` (3 RGB, 1 grayscale) and resized to ``image_size``; inputs ``float32 [n,
channels, image_size, image_size]`` standardized per channel with the training examples'
mean and std; targets ``int64 [n]``, classes the folder names sorted.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from attractor.tasks.base import Task
from attractor.tasks.images import CropFlip, ImageDataOptions, image_task, load_image_folder
from attractor.tasks.images.models import (
    LENET_MIN_SIZE,
    ModelKind,
    check_resnet_depth,
    model_factory,
)

NAME = "image-folder"
SUMMARY = "ResNet, VGG or LeNet on images in class folders under root (decoded with Pillow)"


class ImageFolderOptions(ImageDataOptions):
    """Options of ``image-folder`` (the ``[task]`` keys besides ``name``)."""

    root: str = Field(
        "data/images",
        description="Folder of class folders, or of train/ and test/ holding class folders; "
        "relative to the current directory.",
    )

    image_size: int = Field(32, ge=4, description="Side every image is resized to, in pixels.")
    channels: Literal[1, 3] = Field(3, description="3 converts images to RGB, 1 to grayscale.")
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of each class held out (fixed seed) when root has no train/ and "
        "test/ folders.",
    )
    model: ModelKind = Field(
        "resnet", description="resnet (CIFAR ResNet) | vgg (VGG-16 with BatchNorm) | lenet."
    )
    depth: Annotated[int, AfterValidator(check_resnet_depth)] = Field(
        20, description="ResNet depth, 6k + 2 (model = resnet only)."
    )
    width: int = Field(16, ge=1, description="ResNet width of the first stage (resnet only).")
    augment: bool = Field(
        False,
        description="Random crop (zero padding image_size / 8) and horizontal flip of training "
        "batches; only for classes a mirror image keeps.",
    )

    @model_validator(mode="after")
    def _fits_the_model(self) -> ImageFolderOptions:
        if self.model == "lenet" and self.image_size < LENET_MIN_SIZE:
            raise ValueError(f"LeNet needs image_size >= {LENET_MIN_SIZE}")
        return self


def make(options: ImageFolderOptions) -> Task:
    """Build ``image-folder``; class ids double as the groups for ``holdout_group``."""
    split = load_image_folder(
        options.root,
        options.image_size,
        options.channels,
        options.test_fraction,
        options.train_examples,
        options.test_examples,
    )
    model = model_factory(
        options.model,
        options.channels,
        split.num_classes,
        options.image_size,
        options.depth,
        options.width,
    )
    padding = max(1, options.image_size // 8)
    augment = CropFlip(padding) if options.augment else None
    # The loader already chose the subsets (before decoding): no second subset here.
    return image_task(NAME, SUMMARY, split, model, augment=augment)
