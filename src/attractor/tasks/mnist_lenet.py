"""``mnist-lenet``: LeNet-5 on MNIST or Fashion-MNIST, read from the user's IDX files.

``root`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may be ``.gz``; also found
in ``root/raw``, torchvision's layout). Both datasets use those names and that format, so
there is no variant option: the files decide. Inputs ``float32 [n, 1, 28, 28]``
standardized with the training examples' mean and std; targets ``int64 [n]`` in
``[0, 10)``; 60000 training / 10000 test examples unless ``train_examples`` /
``test_examples`` pick fewer. No augmentation (LeNet's setup in Frankle & Carbin 2019).
"""

from __future__ import annotations

from functools import partial

from pydantic import Field

from attractor.tasks.base import Task
from attractor.tasks.conv_models import LeNet
from attractor.tasks.images import ImageDataOptions, image_task, load_mnist

NAME = "mnist-lenet"
SUMMARY = "LeNet-5 on MNIST or Fashion-MNIST from IDX files in root (60000 / 10000, 10 classes)"


class MnistLeNetOptions(ImageDataOptions):
    """Options of ``mnist-lenet``: ``root`` and the subset sizes (see
    :class:`~attractor.tasks.images.ImageDataOptions`).
    """

    root: str = Field(
        "data/mnist",
        description="Folder with the four IDX files (or root/raw); relative to the current "
        "directory.",
    )


def make(options: MnistLeNetOptions) -> Task:
    """Build ``mnist-lenet``; class ids double as the groups for ``holdout_group``."""
    split = load_mnist(options.root)
    channels, size, _ = split.shape
    model = partial(LeNet, in_channels=channels, num_classes=split.num_classes, size=size)
    return image_task(NAME, SUMMARY, split, model, options.train_examples, options.test_examples)
