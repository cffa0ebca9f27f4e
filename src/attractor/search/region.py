"""The regions a search explores: one box per starting point, and a data set's range.

Every region is a box per starting point, ``lower <= x <= upper`` (``[p, *shape]`` each):
an L-infinity ball ``x0 +- eps`` (optionally intersected with the data range) is one box
per centre ``x0``, a box over the input space is a single one. Projection is a clamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attractor.errors import UserError

__all__ = ["Region", "data_range"]


@dataclass(frozen=True, eq=False)
class Region:
    """Boxes to search, one per starting point.

    Attributes:
        lower: ``[p, *shape]`` lower corner of each box.
        upper: ``[p, *shape]`` upper corner (``>= lower``).
        center: ``[p, *shape]`` where restart 0 starts (a ball's data points), or ``None``.
        ids: ``[p]`` keys of each point's random starts (default ``0..p-1``); kept by
            :meth:`select`, so a sub-region searches its points exactly as the whole does.
    """

    lower: Tensor
    upper: Tensor
    center: Tensor | None = None
    ids: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.dim() < 2:
            raise UserError(
                "region corners must both be [points, *input_shape], got "
                f"{tuple(self.lower.shape)} and {tuple(self.upper.shape)}"
            )
        if not bool(torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all()):
            raise UserError(
                "region corners must be finite; give eps and data bounds as finite numbers"
            )
        if bool((self.lower > self.upper).any()):
            raise UserError(
                "region is empty: a lower corner exceeds its upper corner (is the ball outside the "
                "clip range?)"
            )
        if self.ids.numel() == 0:
            object.__setattr__(self, "ids", torch.arange(self.lower.shape[0]))

    @classmethod
    def ball(cls, x: Tensor, eps: float, clip: tuple[Tensor, Tensor] | None = None) -> Region:
        """L-infinity balls of radius ``eps`` around ``x [p, *shape]``, intersected with
        ``clip = (low, high)``.

        With ``clip``, each centre is clamped into it first, so the box is never empty.
        """
        if not (math.isfinite(eps) and eps >= 0):
            raise UserError(f"eps must be a finite number >= 0, got {eps}")
        x = x.detach().float()
        if clip is None:
            return cls(x - eps, x + eps, center=x)
        low, high = (c.detach().float().expand_as(x) for c in clip)
        x = torch.minimum(torch.maximum(x, low), high)
        return cls(torch.maximum(x - eps, low), torch.minimum(x + eps, high), center=x)

    @classmethod
    def box(cls, low: Tensor, high: Tensor) -> Region:
        """One box ``low <= x <= high`` (``[*shape]`` each) over the input space."""
        return cls(low.detach().float().unsqueeze(0), high.detach().float().unsqueeze(0))

    @property
    def points(self) -> int:
        return int(self.lower.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape[1:])

    def select(self, index: Tensor | list[int] | slice) -> Region:
        """The sub-region of the chosen points (same ids, hence the same random starts)."""
        idx = torch.arange(self.points)[index].reshape(-1)
        center = None if self.center is None else self.center[idx]
        return Region(self.lower[idx], self.upper[idx], center, self.ids[idx])

    def contains(self, x: Tensor, point: Tensor, atol: float = 0.0) -> bool:
        """Whether every ``x [k, *shape]`` lies in the box of its ``point [k]``."""
        return bool(((x >= self.lower[point] - atol) & (x <= self.upper[point] + atol)).all())


def data_range(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature ``(min, max)`` of a data set ``x [n, *shape]``: ``([*shape], [*shape])``."""
    return x.amin(0), x.amax(0)
