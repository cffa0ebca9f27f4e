"""Cone descent as a ``torch.optim.Optimizer``, for models trained outside the engine.

The same ops and roundings as :class:`attractor.optim.cone.ConeDescent`, so the two agree
bitwise for one member (tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from attractor.optim.cone import cone_coefficients, random_angle


class ConeDescentOptim(torch.optim.Optimizer):
    """Cone descent as a ``torch.optim.Optimizer``, one cone over all its parameters jointly.

    Every group's parameters share one cone (norms and the angle are over all of them
    flattened together) unless ``per_tensor``; ``lr``, ``momentum`` and ``weight_decay``
    may differ per group, ``angle`` is one value for the whole optimizer. Its steps are
    bitwise those of :class:`ConeDescent` for one member with the same settings and seed.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        angle: cone half-angle alpha in radians, ``0 <= alpha < pi/2``; with ``random``
            the largest angle.
        momentum: heavy-ball momentum on the gradient (as ``torch.optim.SGD``).
        weight_decay: L2 coefficient added to the gradient.
        per_tensor: one cone per parameter tensor instead of one over all parameters.
        random: draw each step's angle uniformly from ``[0, angle]`` (:func:`random_angle`).
        seed: seed of the random angles.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        angle: float = 0.3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        per_tensor: bool = False,
        random: bool = False,
        seed: int = 0,
    ) -> None:
        if not 0 <= angle < math.pi / 2:
            raise ValueError(f"angle must be in [0, pi/2); got {angle}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.angle, self.per_tensor, self.random, self.seed = angle, per_tensor, random, seed
        self.steps_taken = 0

    @torch.no_grad()
    # type: ignore[override]
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step over all parameters with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps_taken += 1
        entries = []  # (param, effective g [1, ...], w [1, ...], lr)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                    st["x0"] = p.detach().clone()
                # The same ops and roundings as ConeDescent.step, so the two agree bitwise.
                decay, mom = (
                    torch.tensor(group[k], dtype=p.dtype) for k in ("weight_decay", "momentum")
                )
                g = torch.addcmul(p.grad, p, decay) if group["weight_decay"] else p.grad
                st["momentum_buffer"].mul_(mom).add_(g)
                entries.append((p, st["momentum_buffer"][None], (p - st["x0"])[None], group["lr"]))
        if not entries:
            return loss
        angle = random_angle(self.seed, self.steps_taken, self.angle) if self.random else self.angle
        angle_t = torch.tensor([angle], dtype=torch.float64) if self.random else angle
        if self.per_tensor:
            coefficients = [cone_coefficients([g], [w], angle_t) for _, g, w, _ in entries]
        else:
            coefficients = [
                cone_coefficients([e[1] for e in entries], [e[2] for e in entries], angle_t)
            ] * len(entries)
        for (p, g, w, lr), (a, b) in zip(entries, coefficients, strict=True):
            p.addcmul_(g[0], (lr * a[0]).to(p.dtype))
            if bool(b[0] != 0):
                p.addcmul_(w[0], (lr * b[0]).to(p.dtype))
        return loss
