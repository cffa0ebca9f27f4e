"""``cartpole``: gymnasium's CartPole-v1 closed by a trained policy — the control case.

The model is the ``cartpole-lqr`` task's ensemble (MLPs cloning an LQR controller): at every
step each member reads the state ``[m, s, 4]`` and outputs a force ``[m, s, 1]``, clipped to
``+-force_mag``, and the cart-pole moves one Euler step (:func:`attractor.tasks.cartpole.step`,
gymnasium's equations with a continuous force). Unlike gymnasium there is no episode cap
and no termination: the closed loop runs on for ``steps`` steps, so a pole that falls keeps
falling (and swinging) and the outcome says so.

Factors are the four state variables with gymnasium's initial half-width 0.05; scale 1 is
gymnasium's ``reset``. Outcomes:

* ``upright`` (the basin feature): 1 if the final state is within gymnasium's thresholds
  (``|theta| < 12 deg`` and ``|x| < 2.4``), else 0 — a final state gymnasium would not
  terminate on (whether the trajectory left the bounds on the way is not recorded).
* the goal: upright *and centred*, ``|theta| < 0.05 rad`` (about 3 deg) and ``|x| < 0.5``.
  A stabilizing controller drives the state to the origin, so after 500 steps (10 s) it is
  well inside both bounds; a policy that merely balances while drifting, or oscillates with
  a large amplitude, is upright but misses the goal. The bounds are loose enough that a
  cloned controller's small bias does not count as failure: a constant force offset
  ``delta`` moves the closed loop's resting point to ``x = delta / |K_x|`` (about 1 m per
  0.9 N with the default gain), so a few tens of millinewtons cost a few centimetres.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from attractor.errors import UserError
from attractor.tasks import cartpole as dynamics
from attractor.world.base import Constants, Policy, World, check_factors

SUMMARY = (
    "gymnasium CartPole-v1 (continuous force, no termination) closed by an MLP cloning LQR; "
    "goal: upright and centred"
)
#: Goal bounds on the final state (see the module docstring for the choice).
GOAL_THETA = 0.05
GOAL_X = 0.5
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _initial(n: int, scale: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``[n, 4]`` uniform in ``+-0.05 * scale`` per variable (gymnasium's reset at scale 1)."""
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1
    return (scale * dynamics.INIT_HALF_WIDTH * u).to(dtype)


def _at(values: Mapping[str, Tensor], dtype: torch.dtype) -> Tensor:
    """``[n, 4]`` with the named variables set to ``values [n]`` and the others 0 (upright)."""
    check_factors("cartpole", dynamics.STATE_NAMES, values)
    n = {int(torch.as_tensor(v).numel()) for v in values.values()}
    if len(n) != 1:
        raise UserError(f"cartpole factor values differ in length: {sorted(n)}")
    state = torch.zeros(n.pop(), 4, dtype=dtype)
    for name, value in values.items():
        state[:, dynamics.STATE_NAMES.index(name)] = torch.as_tensor(value).reshape(-1).to(dtype)
    return state


def _step(x: Tensor, policy: Policy | None, t: int, constants: Constants) -> Tensor:
    """``[m, s, 4] -> [m, s, 4]``: the policy's force (clipped), then one dynamics step.

    Without a policy the cart is left alone (zero force): the pole falls from any tilt.
    """
    if policy is None:
        force = torch.zeros_like(x[..., 0])
    else:
        # Cast: a float32 model drives a float64 world (and the reverse) without upcasting it.
        force = policy(x.to(_policy_dtype(policy, x)))[..., 0].to(x.dtype)
    return dynamics.step(x, dynamics.clip_force(force, constants), constants)


def _policy_dtype(policy: Policy, x: Tensor) -> torch.dtype:
    """The dtype the policy's parameters hold (the state's own for a plain function)."""
    params = getattr(policy, "params", None)
    if isinstance(params, dict) and params:
        return next(iter(params.values())).dtype
    return x.dtype


def _features(x: Tensor, constants: Constants) -> dict[str, Tensor]:
    """Final ``x``, ``theta``, ``|theta|`` ``[m, s]`` and ``upright`` (int64 0/1)."""
    return {
        "x": x[..., 0],
        "theta": x[..., 2],
        "abs_theta": x[..., 2].abs(),
        "upright": dynamics.upright(x).long(),
    }


def _goal(x: Tensor, constants: Constants) -> Tensor:
    """``bool [m, s]``: upright and centred (``|theta| < 0.05``, ``|x| < 0.5``)."""
    return (x[..., 2].abs() < GOAL_THETA) & (x[..., 0].abs() < GOAL_X)


def _project(x: Tensor) -> Tensor:
    """``[..., 4] -> [..., 2]``: the pole's phase plane (theta, theta_dot)."""
    return x[..., 2:4]


def make(dtype: str = "float32", steps: int = 500, task: Mapping[str, Any] | None = None) -> World:
    """The cartpole world.

    Args:
        dtype: ``float32`` (default, fast) or ``float64`` states; the policy's outputs are
            cast to it.
        steps: default rollout length (500 = gymnasium's episode cap, 10 s).
        task: ``cartpole-lqr`` options overriding the defaults of the trained ensemble.
    """
    if dtype not in DTYPES:
        raise UserError(f"world 'cartpole' dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if steps < 1:
        raise UserError(f"world 'cartpole' steps must be >= 1, got {steps}")
    try:
        options = dynamics.CartPoleOptions.model_validate(dict(task or {})).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "options"
        raise UserError(f"world 'cartpole' task.{where}: {error['msg']}") from None
    torch_dtype = DTYPES[dtype]
    return World(
        name="cartpole",
        description=SUMMARY,
        factors=dict.fromkeys(dynamics.STATE_NAMES, dynamics.INIT_HALF_WIDTH),
        constants=dict(dynamics.CONSTANTS),
        steps=steps,
        task={"name": dynamics.NAME, **options},
        initial=partial(_initial, dtype=torch_dtype),
        step=_step,
        features=_features,
        basin_feature="upright",
        project=_project,
        goal=_goal,
        at=partial(_at, dtype=torch_dtype),
        # What trains a good clone in seconds (8 members reach the goal from 8x the range).
        axes=("theta (rad)", "theta_dot (rad/s)"),
        trainer={"optimizer": "adam", "lr": 0.01, "steps": 600, "batch_size": 64},
        options={"dtype": dtype, "steps": steps, "task": dict(task or {})},
    )
