"""Problems with known tangent dynamics, for tests and demos.

Linear least squares ``f(x) = w . x``, loss ``0.5 (f(x) - y)^2`` per example, trained with
full-batch gradient descent: the mean loss has the constant Hessian ``H = X^T X / n``, so
the training map's Jacobian is ``(I - lr H)`` per step, exactly, wherever the weights are.
Along an eigenvector of ``H`` (eigenvalue ``lam``) the finite-time Lyapunov exponent is
``log|1 - lr lam|``; with heavy-ball momentum ``mu`` the pair (weight, momentum buffer)
along it evolves by the companion matrix ``A = [[1 - lr lam, -lr mu], [lam, mu]]`` (SGD's
``buf = mu buf + g; w -= lr buf``) and the weight tangent after ``T`` steps is
``(A^T)_{00}``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from attractor.tasks.base import Task


def _squared_error(logits: Tensor, targets: Tensor) -> Tensor:
    """``0.5 (f - y)^2`` per example: ``logits [..., 1]``, ``targets [...]`` -> ``[...]``."""
    return 0.5 * (logits[..., 0] - targets).pow(2)


def least_squares_task(n: int = 32, d: int = 6, seed: int = 0) -> Task:
    """A linear regression task without bias: ``x [n, d]`` Gaussian with distinct column scales."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 2.0, d)
    x = torch.randn(n, d, generator=gen) * scales
    y = x @ torch.randn(d, generator=gen) + 0.1 * torch.randn(n, generator=gen)
    return Task(
        name="least-squares",
        x_train=x,
        y_train=y,
        x_test=x[:8],
        y_test=y[:8],
        make_model=lambda: nn.Linear(d, 1, bias=False),
        loss=_squared_error,
        description="linear least squares",
    )


def hessian(task: Task) -> Tensor:
    """``X^T X / n`` in float64, the Hessian of the mean squared-error loss."""
    x = task.x_train.double()
    return x.T @ x / x.shape[0]


def companion_log_growth(lr: float, momentum: float, lam: float, steps: int) -> float:
    """``log|(A^T)_{00}|``: the weight tangent's log growth along an eigenvector, with momentum."""
    a = np.array([[1 - lr * lam, -lr * momentum], [lam, momentum]], dtype=np.float64)
    return float(np.log(abs(np.linalg.matrix_power(a, steps)[0, 0])))
