"""A world with two known attractors and no model: ``x' = x - h (x^3 - x)``.

The fixed points ``x = -1`` and ``x = +1`` attract, ``x = 0`` repels: the basins split at
0. The oracle for basin measures (a hand-built 1-D world whose answer is known).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attractor.world.base import Constants, Policy, World, check_factors

SUMMARY = (
    "x' = x - h(x^3 - x): attractors at -1 and +1, basins split at 0 (no model; a test oracle)"
)


def _initial(n: int, scale: float, generator: torch.Generator) -> Tensor:
    """``n`` states uniform in ``center +- scale * width`` (center 0.3: mostly the +1 basin)."""
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 - 1
    return 0.3 + scale * 0.5 * u


def _step(x: Tensor, policy: Policy | None, t: int, constants: Constants) -> Tensor:
    return x - constants["h"] * (x**3 - x)


def _features(x: Tensor, constants: Constants) -> dict[str, Tensor]:
    return {"x": x[..., 0], "basin": (x[..., 0] > 0).long()}


def _at(values: Mapping[str, Tensor]) -> Tensor:
    check_factors("double-well", ["x"], values)
    return values["x"].to(torch.float64).reshape(-1, 1)


def make() -> World:
    return World(
        name="double-well",
        description=SUMMARY,
        factors={"x": 0.5},
        constants={"h": 0.1},
        steps=200,
        task=None,
        initial=_initial,
        step=_step,
        features=_features,
        basin_feature="basin",
        project=lambda x: torch.stack([x[..., 0], torch.zeros_like(x[..., 0])], dim=-1),
        goal=lambda x, c: (x[..., 0] - 1).abs() < 1e-3,
        at=_at,
    )
