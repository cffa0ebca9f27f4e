"""Image datasets from local files, and their augmentation.

Loaders read files the user already has (attractor never downloads) and never run code
from them (no pickle): MNIST / Fashion-MNIST IDX files (:mod:`.idx`), the binary versions
of CIFAR-10 / CIFAR-100 (:mod:`.cifar`), and class folders of images (:mod:`.folder`). Each
returns raw ``uint8`` pixels as an :class:`ImageSplit`; :func:`image_tensors` turns one into
standardized ``float32 [n, C, H, W]`` tensors and ``int64 [n]`` labels.
"""

from __future__ import annotations

from attractor.tasks.images.augment import CropFlip, crop_and_flip
from attractor.tasks.images.cifar import load_cifar10, load_cifar100
from attractor.tasks.images.dataset import (
    ImageDataOptions,
    ImageSplit,
    image_task,
    image_tensors,
    stratified_subset,
)
from attractor.tasks.images.folder import load_image_folder
from attractor.tasks.images.idx import load_mnist, read_idx

__all__ = [
    "CropFlip",
    "ImageDataOptions",
    "image_task",
    "ImageSplit",
    "crop_and_flip",
    "image_tensors",
    "load_cifar10",
    "load_cifar100",
    "load_image_folder",
    "load_mnist",
    "read_idx",
    "stratified_subset",
]
