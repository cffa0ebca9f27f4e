"""``cartpole-lqr``: behaviour cloning of an LQR controller for gymnasium's CartPole-v1.

Three things live here, all below the world layer so that a task can use them:

* :func:`step` — CartPole-v1's dynamics in torch, operation for operation as gymnasium's
  ``CartPoleEnv.step`` (Euler integrator), but with a *continuous* force (gymnasium's two
  discrete actions are ``force = +-force_mag``), batched over any leading dimensions,
  differentiable, in the state's dtype, with its constants passed in a mapping so that a
  study can perturb them (pole length, gravity, masses, force limit).
* :func:`linearization` and :func:`lqr_gain` — the Euler-discretized linearization
  ``x' = A x + B u`` at the upright equilibrium and the discrete LQR gain ``K`` from the
  Riccati equation (``scipy.linalg.solve_discrete_are``); the controller is
  ``u = clip(-K x, +-force_mag)`` (:func:`lqr_force`). With a linear policy the closed loop
  at upright is ``A - B K``, whose eigenvalues give the Lyapunov exponents exactly.
* the task: states drawn (seeded) uniformly from a box around upright, wider than
  gymnasium's ``+-0.05`` initial range, labelled with the LQR force; an MLP
  ``state [.., 4] -> force [.., 1]`` learns it by mean squared error (regression:
  ``num_classes`` is ``None``). The ``cartpole`` world (:mod:`attractor.world.cartpole`)
  closes the loop with the trained ensemble as the policy.

State layout everywhere: ``[..., 4] = (x, x_dot, theta, theta_dot)``; ``theta = 0`` is
upright, positive to the right (gymnasium's convention). Forces are in newtons.

References:
    Barto, Sutton and Anderson, "Neuronlike adaptive elements that can solve difficult
    learning control problems", IEEE SMC 1983 (the cart-pole equations gymnasium uses);
    gymnasium ``gymnasium/envs/classic_control/cartpole.py`` (CartPole-v1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Literal

import numpy as np
import scipy.linalg
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from attractor.seeds import torch_generator
from attractor.tasks.base import Task
from attractor.tasks.digits_mlp import build_mlp

NAME = "cartpole-lqr"
SUMMARY = "MLP cloning an LQR controller of gymnasium's CartPole-v1: state(4) -> force (MSE)"

#: gymnasium CartPole-v1's constants (``length`` is half the pole's length, as there).
CONSTANTS: dict[str, float] = {
    "gravity": 9.8,
    "masscart": 1.0,
    "masspole": 0.1,
    "length": 0.5,
    "force_mag": 10.0,
    "tau": 0.02,
}
#: gymnasium's termination thresholds: the pole past 12 degrees or the cart past 2.4.
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
#: gymnasium's initial states: every variable uniform in +-0.05.
INIT_HALF_WIDTH = 0.05
STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")

#: A constant is a float, or a tensor broadcasting against ``state[..., 0]`` (per-member
#: constants ``[m, 1]`` for a structural study of a batch ``[m, s, 4]``).
Constant = float | Tensor


# --- dynamics ---------------------------------------------------------------------------


def step(state: Tensor, force: Tensor, constants: Mapping[str, Constant] = CONSTANTS) -> Tensor:
    """One Euler step of CartPole-v1 under a continuous ``force``: ``[..., 4] -> [..., 4]``.

    Args:
        state: ``[..., 4]`` (x, x_dot, theta, theta_dot), float32 or float64.
        force: ``[...]`` newtons, broadcasting against ``state[..., 0]``; not clipped here
            (see :func:`clip_force`), so that ``+-force_mag`` reproduces gymnasium exactly.
        constants: gravity, masscart, masspole, length (half the pole), tau.

    The expressions and their evaluation order are gymnasium's, so that float64 results
    agree with ``CartPoleEnv.step`` to rounding (the oracle test holds them to 1e-9).
    """
    gravity, masscart, masspole = constants["gravity"], constants["masscart"], constants["masspole"]
    length, tau = constants["length"], constants["tau"]
    total_mass = masspole + masscart
    polemass_length = masspole * length
    x, x_dot, theta, theta_dot = state.unbind(-1)
    costheta, sintheta = torch.cos(theta), torch.sin(theta)
    temp = (force + polemass_length * theta_dot.square() * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - masspole * costheta.square() / total_mass)
    )
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    # Explicit Euler, every update from the old state (gymnasium's "euler" integrator).
    return torch.stack(
        (
            x + tau * x_dot,
            x_dot + tau * xacc,
            theta + tau * theta_dot,
            theta_dot + tau * thetaacc,
        ),
        dim=-1,
    )


def clip_force(force: Tensor, constants: Mapping[str, Constant] = CONSTANTS) -> Tensor:
    """``force`` clipped to ``+-force_mag`` (the actuator's limit); same shape."""
    limit = constants["force_mag"]
    if isinstance(limit, Tensor):
        return torch.maximum(torch.minimum(force, limit), -limit)
    return force.clamp(-limit, limit)


def upright(state: Tensor) -> Tensor:
    """``bool [...]``: within gymnasium's thresholds (``|theta| < 12 deg``, ``|x| < 2.4``).

    gymnasium terminates an episode when either bound is crossed; here it is only a label.
    """
    return (state[..., 2].abs() < THETA_THRESHOLD) & (state[..., 0].abs() < X_THRESHOLD)


# --- linearization and LQR --------------------------------------------------------------


def linearization(constants: Mapping[str, float] = CONSTANTS) -> tuple[np.ndarray, np.ndarray]:
    """``(A [4, 4], B [4, 1])`` float64: :func:`step` linearized at upright, zero force.

    Derived by hand from gymnasium's equations at ``theta = theta_dot = 0``
    (``sin theta ~ theta``, ``cos theta ~ 1``, ``theta_dot^2 ~ 0``):
    ``thetaacc = (g theta - u / M) / D`` with ``M`` the total mass and
    ``D = l (4/3 - m_p / M)``, ``xacc = u / M - m_p l thetaacc / M``; Euler makes it
    ``A = I + tau A_c``, ``B = tau B_c`` exactly (the test checks it against the
    Jacobian of :func:`step`). With ``u = -K x`` the closed loop at upright is
    ``A - B K``.
    """
    g, mc, mp = constants["gravity"], constants["masscart"], constants["masspole"]
    length, tau = constants["length"], constants["tau"]
    total = mp + mc
    pl = mp * length
    d = length * (4.0 / 3.0 - mp / total)
    # d(thetaacc)/d(theta), d(thetaacc)/du; xacc follows from thetaacc.
    a_th, b_th = g / d, -1.0 / (total * d)
    a_x, b_x = -pl * a_th / total, 1.0 / total - pl * b_th / total
    a_c = np.array([[0, 1, 0, 0], [0, 0, a_x, 0], [0, 0, 0, 1], [0, 0, a_th, 0]], dtype=np.float64)
    b_c = np.array([[0], [b_x], [0], [b_th]], dtype=np.float64)
    return np.eye(4) + tau * a_c, tau * b_c


#: Default LQR weights: the pole angle matters most. R = 1 keeps the gain moderate
#: (K ~ [-0.9, -2.1, -30.9, -7.9]), so the force saturates only near the corners of the
#: task's default box and the clipped loop recovers from all of it.
Q_DEFAULT = (1.0, 1.0, 10.0, 1.0)
R_DEFAULT = 1.0


def lqr_gain(
    constants: Mapping[str, float] = CONSTANTS,
    q: tuple[float, ...] | list[float] = Q_DEFAULT,
    r: float = R_DEFAULT,
) -> np.ndarray:
    """``K [1, 4]`` float64: the discrete LQR gain for cost ``sum x'Qx + u'Ru``, ``Q = diag(q)``.

    ``P`` solves the discrete algebraic Riccati equation of :func:`linearization`, and
    ``K = (R + B'PB)^-1 B'PA``, so that ``u = -K x`` minimizes the cost of the linear
    system; ``A - B K`` is then stable (spectral radius < 1).
    """
    a, b = linearization(constants)
    q_mat, r_mat = np.diag(np.asarray(q, dtype=np.float64)), np.array([[float(r)]])
    p = scipy.linalg.solve_discrete_are(a, b, q_mat, r_mat)
    return np.linalg.solve(r_mat + b.T @ p @ b, b.T @ p @ a)


def lqr_force(
    state: Tensor, gain: np.ndarray | Tensor, constants: Mapping[str, Constant] = CONSTANTS
) -> Tensor:
    """``clip(-K x, +-force_mag)``: ``state [..., 4] -> force [...]`` in the state's dtype."""
    k = torch.as_tensor(gain, dtype=state.dtype, device=state.device).reshape(4)
    return clip_force(-(state * k).sum(-1), constants)


# --- the task ---------------------------------------------------------------------------

Activation = Literal["relu", "tanh", "gelu"]


class CartPoleOptions(BaseModel):
    """Options of ``cartpole-lqr`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [32, 32],
        description="Widths of the hidden layers, input to output; [] gives a linear policy.",
    )
    activation: Activation = Field(
        "tanh",
        description="Nonlinearity after each hidden layer: relu | tanh | gelu (tanh: a smooth "
        "closed loop).",
    )
    samples: int = Field(4096, ge=1, description="Training states (test: a quarter as many).")
    seed: int = Field(0, ge=0, description="Seed of the sampled training and test states.")
    state_range: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0, 1.0, 0.2, 1.0],
        min_length=4,
        max_length=4,
        description="Half-widths of the box around upright the states are drawn from "
        "(x, x_dot, theta, theta_dot); gymnasium starts within 0.05.",
    )
    q: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: list(Q_DEFAULT),
        min_length=4,
        max_length=4,
        description="LQR state weights diag(Q) for (x, x_dot, theta, theta_dot).",
    )
    r: float = Field(R_DEFAULT, gt=0, description="LQR force weight R.")


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """``(f - y)^2`` per example: ``prediction [..., 1]``, ``target [...]`` -> ``[...]``."""
    return (prediction[..., 0] - target).square()


def sample_states(n: int, state_range: list[float], seed: int, split: str) -> Tensor:
    """``float32 [n, 4]`` uniform in ``+-state_range``; ``split`` keeps train and test apart."""
    gen = torch_generator(f"cartpole-lqr/{split}", seed)
    half = torch.tensor(state_range, dtype=torch.float64)
    u = torch.rand(n, 4, generator=gen, dtype=torch.float64) * 2 - 1
    return (u * half).to(torch.float32)


def make(options: CartPoleOptions) -> Task:
    """Build ``cartpole-lqr``: LQR forces (float64, stored float32) of sampled states."""
    gain = lqr_gain(CONSTANTS, options.q, options.r)
    splits = {}
    for split, n in (("train", options.samples), ("test", max(1, options.samples // 4))):
        x = sample_states(n, options.state_range, options.seed, split)
        splits[split] = (x, lqr_force(x.double(), gain).to(torch.float32))
    return Task(
        name=NAME,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        make_model=partial(build_mlp, 4, tuple(options.hidden), 1, options.activation),
        loss=squared_error,
        num_classes=None,
        description=SUMMARY,
    )
