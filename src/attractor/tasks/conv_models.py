"""The convolutional architectures of the image tasks: LeNet-5, the CIFAR ResNets, VGG.

Inputs are images ``[batch, channels, height, width]``; outputs are logits ``[batch,
classes]``. Each is built from the global torch RNG (the engine seeds it per member) with
PyTorch's default initialization, as open_lth does for Frankle et al.'s experiments.

The names of the submodules are part of the contract: permutation specs
(:mod:`attractor.measure.permutation_spec`) and the certified bounds address tensors by
them. :class:`LeNet` and :class:`VGG` are flat ``nn.Sequential`` s (a chain of layers);
:class:`ResNet` is ``stem`` (conv, BatchNorm, ReLU), ``stages`` (an ``nn.Sequential`` of
:class:`BasicBlock` s) and ``head`` (global average pooling, flatten, linear).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

#: VGG-16's convolution widths, "M" a 2x2 max pooling (Simonyan & Zisserman; open_lth's
#: ``cifar_vgg_16`` drops the last pooling and the two hidden dense layers for CIFAR).
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class LeNet(nn.Sequential):
    """LeNet-5 with ReLU and max pooling for ``[b, 1, 28, 28]`` images (MNIST's size):
    conv 5x5 (6, padded) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28) -> None:
        side = ((size // 2) - 4) // 2  # after pool, the unpadded 5x5 conv, pool
        super().__init__(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )


class VGG(nn.Sequential):
    """VGG with BatchNorm for ``[b, c, s, s]`` images: per width, conv 3x3 (padded, no bias)
    -> BatchNorm -> ReLU; "M" a 2x2 max pooling; then global average pooling, flatten and
    one linear layer (open_lth's CIFAR VGG).
    """

    def __init__(
        self,
        widths: Sequence[int | str] = VGG16,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            assert isinstance(width, int)
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``: two 3x3 convs; the shortcut is
    the identity, or a strided 1x1 conv with BatchNorm where the width or the size changes
    (He et al.'s option B, as open_lth's CIFAR ResNets).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), depth ``6k + 2``: a 3x3 stem, three stages of
    ``k`` :class:`BasicBlock` s at widths ``w, 2w, 4w`` (the 2nd and 3rd halving the size),
    global average pooling and a linear layer. ``ResNet(20, 16)`` is ResNet-20 (0.27 M
    parameters); fewer ``stages`` give a smaller net for small images.
    """

    def __init__(
        self,
        depth: int = 20,
        width: int = 16,
        in_channels: int = 3,
        num_classes: int = 10,
        stages: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % (2 * stages) != 0 or depth < 2 + 2 * stages:
            raise ValueError(f"a ResNet with {stages} stages has depth 2 + {2 * stages}k")
        blocks_per_stage = (depth - 2) // (2 * stages)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(stages):
            out = width * 2**stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))
