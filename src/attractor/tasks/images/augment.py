"""The standard CIFAR augmentation as a :attr:`Task.augment`: random crop and flip.

Each example of a minibatch is zero-padded by ``padding`` on every side, cropped back to
its size at a random offset, and mirrored left-right with probability 1/2 (He et al. 2016;
open_lth's CIFAR pipeline). All random draws come from the CPU generator the engine hands
over (seeded per member and step), in a fixed order (row offsets, column offsets, flips),
so a member's augmentation depends only on that generator's state and the batch's shape,
on any device. The crop is one gather on ``x``'s device; nothing loops over examples.

References:
    He, Zhang, Ren & Sun (2016), "Deep Residual Learning for Image Recognition", sec. 4.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_and_flip(
    x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> Tensor:
    """Random crops with zero padding and horizontal flips, per example.

    Args:
        x: a minibatch ``[B, C, H, W]`` (any device, any float dtype).
        generator: the CPU generator every draw comes from.
        padding: zero pixels added on each side before cropping; 0 crops nothing.
        flip: mirror each example left-right with probability 1/2.

    Returns:
        ``[B, C, H, W]``, same dtype and device as ``x``; example ``b`` is
        ``pad(x[b])[:, i_b : i_b + H, j_b : j_b + W]``, reversed along W where flipped.
    """
    b, _, h, w = x.shape
    rows = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    cols = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flips = (
        torch.randint(0, 2, (b,), generator=generator, dtype=torch.bool)
        if flip
        else torch.zeros(b, dtype=torch.bool)
    )
    # Column j of the output reads padded column cols + j, or cols + (W - 1 - j) if flipped.
    steps_w = torch.arange(w)
    across = torch.where(flips[:, None], steps_w.flip(0), steps_w)
    row_index = (rows[:, None] + torch.arange(h)).to(x.device)  # [B, H]
    col_index = (cols[:, None] + across).to(x.device)  # [B, W]
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is [B, H, W, C].
    cropped = padded[batch, :, row_index[:, :, None], col_index[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class CropFlip:
    """:func:`crop_and_flip` with fixed settings, a picklable :attr:`Task.augment`.

    ``x [B, C, H, W]``, generator -> ``[B, C, H, W]``.
    """

    padding: int = 4
    flip: bool = True

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return crop_and_flip(x, generator, self.padding, self.flip)
