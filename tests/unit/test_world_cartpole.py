"""The cartpole world and the ``cartpole-lqr`` task against their oracles.

gymnasium's CartPole-v1 itself (the dynamics, bit for bit in float64, past termination), the
LQR controller (stable from gymnasium's initial range), the hand-derived linearization (the
Jacobian of the torch dynamics), the linear closed form of the Lyapunov exponents
(``log |eig(A - B K)|``), and the engine's cloned ensemble closing the loop.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor

from attractor.config import TaskConfig, parse_config
from attractor.errors import UserError
from attractor.tasks import build_task
from attractor.tasks import cartpole as cp
from attractor.training.forward import can_vectorize
from attractor.world import EnsemblePolicy, World, get_world, rollout
from attractor.world.cartpole import DTYPES
from attractor.world.rollout import initial_batch

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def lqr_policy(gain: np.ndarray | None = None) -> object:
    """The clipped LQR controller as a world policy: ``[m, s, 4] -> [m, s, 1]``."""
    k = cp.lqr_gain() if gain is None else gain
    return lambda x: cp.lqr_force(x, k).unsqueeze(-1)


def gym_init(n: int, seed: int = 0, dtype: torch.dtype = F64) -> Tensor:
    """``[n, 4]`` gymnasium-style initial states (uniform +-0.05)."""
    return (
        get_world("cartpole", {"dtype": "float64"})
        .initial(n, 1.0, torch.Generator().manual_seed(seed))
        .to(dtype)
    )


# --- the gymnasium oracle -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dynamics_match_gymnasium_cartpole_v1_past_termination(seed: int) -> None:
    """500 random +-force_mag steps: our float64 states are gymnasium's to 1e-9.

    ``CartPoleEnv`` (not ``gym.make``: no TimeLimit, no checker) keeps integrating after it
    has returned ``terminated`` (it only warns), so the comparison runs on through the fall
    and the swinging that follows, where errors would be amplified fastest.
    """
    gym_cartpole = pytest.importorskip("gymnasium.envs.classic_control.cartpole")
    env = gym_cartpole.CartPoleEnv()
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    ours = torch.tensor(env.unwrapped.state, dtype=F64)
    worst, terminated_at = 0.0, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "step() called after terminated": intended
        for t in range(500):
            action = int(rng.integers(2))
            _, _, terminated, _, _ = env.step(action)
            if terminated and terminated_at is None:
                terminated_at = t
            force = torch.tensor(cp.CONSTANTS["force_mag"] * (1 if action == 1 else -1), dtype=F64)
            ours = cp.step(ours, force)
            worst = max(worst, float(np.abs(ours.numpy() - env.unwrapped.state).max()))
    assert terminated_at is not None and terminated_at < 100  # most steps are past termination
    assert abs(env.unwrapped.state[2]) > 1.0  # the pole fell and swung: a hard regime
    assert worst <= 1e-9, worst


def test_gymnasium_constants_and_thresholds() -> None:
    gym_cartpole = pytest.importorskip("gymnasium.envs.classic_control.cartpole")
    env = gym_cartpole.CartPoleEnv()
    for name, value in cp.CONSTANTS.items():
        assert getattr(env, name) == value, name
    assert env.kinematics_integrator == "euler"
    assert env.theta_threshold_radians == cp.THETA_THRESHOLD
    assert env.x_threshold == cp.X_THRESHOLD


# --- linearization, LQR, the linear closed form --------------------------------------------


@pytest.mark.parametrize(
    "changes", [{}, {"length": 1.0, "gravity": 12.0, "masspole": 0.3, "masscart": 0.7}]
)
def test_jacobian_at_upright_is_the_linearization(changes: dict[str, float]) -> None:
    """``torch.func.jacfwd`` of the dynamics at upright, zero force, is ``(A, B)``."""
    constants = {**cp.CONSTANTS, **changes}
    a, b = cp.linearization(constants)
    jac_x, jac_u = torch.func.jacfwd(lambda x, u: cp.step(x, u, constants), argnums=(0, 1))(
        torch.zeros(4, dtype=F64), torch.zeros((), dtype=F64)
    )
    np.testing.assert_allclose(jac_x.numpy(), a, rtol=0, atol=1e-13)
    np.testing.assert_allclose(jac_u.numpy(), b[:, 0], rtol=0, atol=1e-13)


def test_lqr_gain_solves_the_riccati_equation_and_stabilizes() -> None:
    a, b = cp.linearization()
    k = cp.lqr_gain()
    assert k.shape == (1, 4)
    assert np.abs(np.linalg.eigvals(a - b @ k)).max() < 1
    # K is optimal: the Riccati cost-to-go P makes the one-step Bellman equation hold.
    q, r = np.diag(cp.Q_DEFAULT), np.array([[cp.R_DEFAULT]])
    p = scipy.linalg.solve_discrete_are(a, b, q, r)
    a_cl = a - b @ k
    np.testing.assert_allclose(q + k.T @ r @ k + a_cl.T @ p @ a_cl, p, rtol=1e-9, atol=1e-9)


def test_closed_loop_jacobian_and_lyapunov_exponent_are_the_linear_closed_form() -> None:
    """At upright the LQR loop's Jacobian is ``A - B K``, and a tangent ``v`` pushed through
    ``T`` world steps (forward mode, through the policy) grows by the closed form
    ``log |(A - B K)^T v| / T``, which tends to ``max log |eig(A - B K)|`` as ``T`` grows.
    """
    world = get_world("cartpole", {"dtype": "float64"})
    a, b = cp.linearization()
    k = cp.lqr_gain()
    a_cl = a - b @ k
    policy = lqr_policy(k)
    origin = torch.zeros(1, 1, 4, dtype=F64)

    def one_step(x: Tensor) -> Tensor:
        return world.step(x, policy, 0, world.constants)

    jac = torch.func.jacfwd(one_step)(origin).reshape(4, 4)
    np.testing.assert_allclose(jac.numpy(), a_cl, rtol=0, atol=1e-12)

    steps, v = 400, np.ones(4)
    x, tangent, log_growth = origin, torch.tensor(v, dtype=F64).reshape(1, 1, 4), 0.0
    for _ in range(steps):
        x, tangent = torch.func.jvp(one_step, (x,), (tangent,))
        norm = tangent.norm()
        log_growth += float(norm.log())
        tangent = tangent / norm  # renormalized: the exponent, not an underflow
    log_growth -= float(np.log(np.linalg.norm(v)))

    def closed_form(t: int) -> float:
        grown = np.linalg.matrix_power(a_cl, t) @ v
        return float(np.log(np.linalg.norm(grown) / np.linalg.norm(v)) / t)

    assert abs(log_growth / steps - closed_form(steps)) < 1e-12
    # The limit: the largest log-modulus (a complex pair here); A - B K is far from normal, so
    # the finite-time exponent carries a transient of about log(20) / T.
    top = float(np.log(np.abs(np.linalg.eigvals(a_cl))).max())
    assert top < 0
    assert abs(closed_form(20_000) - top) < 2e-4, (closed_form(20_000), top)


def test_lqr_closed_loop_is_upright_from_gymnasium_initial_states() -> None:
    world = get_world("cartpole", {"dtype": "float64"})
    x0 = initial_batch(gym_init(1000), 1)
    final = rollout(world, lqr_policy(), x0).final
    assert bool(world.features(final, world.constants)["upright"].bool().all())
    assert bool(world.goal(final, world.constants).all())
    assert float(final.abs().max()) < 1e-2  # converged towards the origin, not only upright


def test_float32_world_agrees_with_float64() -> None:
    """Same initial states, same LQR loop: the float32 world stays within rounding of float64
    (the loop contracts, so rounding errors do not grow)."""
    x0 = gym_init(256)
    runs = {}
    for dtype in ("float32", "float64"):
        world = get_world("cartpole", {"dtype": dtype})
        x = initial_batch(x0.to(DTYPES[dtype]), 1)
        runs[dtype] = rollout(world, lqr_policy(), x, record=6)
    assert runs["float32"].final.dtype == torch.float32
    assert runs["float64"].final.dtype == F64
    diff = (runs["float32"].trajectory.double() - runs["float64"].trajectory).abs().max()
    assert float(diff) < 1e-5, float(diff)
    # One step from a tilted, moving state (no contraction yet) agrees to float32 rounding.
    x = torch.tensor([[[0.3, -0.4, 0.15, 0.7]]], dtype=F64)
    one = {
        d: cp.step(x.to(t), torch.tensor(3.0, dtype=t))
        for d, t in (("32", torch.float32), ("64", F64))
    }
    assert float((one["32"].double() - one["64"]).abs().max()) < 1e-6


def test_force_is_clipped_to_force_mag_and_constants_are_honoured() -> None:
    world = get_world("cartpole", {"dtype": "float64"})
    x = torch.zeros(2, 3, 4, dtype=F64)
    huge = world.step(
        x, lambda s: torch.full((*s.shape[:2], 1), 1e6, dtype=s.dtype), 0, world.constants
    )
    limit = world.step(
        x, lambda s: torch.full((*s.shape[:2], 1), 10.0, dtype=s.dtype), 0, world.constants
    )
    torch.testing.assert_close(huge, limit, rtol=0, atol=0)
    weak = world.with_constants(force_mag=2.0)
    assert float(
        world.step(x, lambda s: torch.full((*s.shape[:2], 1), 1e6, dtype=s.dtype), 0, weak)[
            ..., 1
        ].max()
    ) < float(limit[..., 1].max())
    # A longer pole falls more slowly from the same tilt; no policy = zero force.
    tilt = torch.tensor([[[0.0, 0.0, 0.1, 0.0]]], dtype=F64)
    short = rollout(world, None, tilt, steps=20).final
    long = rollout(world, None, tilt, steps=20, constants=world.with_constants(length=1.0)).final
    assert float(short[..., 2]) > float(long[..., 2]) > 0.1


def test_per_member_constants_broadcast() -> None:
    """Tensor constants ``[m, 1]`` give each member row its own cart-pole (structural studies)."""
    x = gym_init(5).expand(2, 5, 4)
    force = torch.full((2, 5), 3.0, dtype=F64)
    lengths = torch.tensor([[0.5], [1.0]], dtype=F64)
    both = cp.step(x, force, {**cp.CONSTANTS, "length": lengths})
    for row, length in enumerate((0.5, 1.0)):
        alone = cp.step(x[row], force[row], {**cp.CONSTANTS, "length": length})
        torch.testing.assert_close(both[row], alone, rtol=0, atol=1e-15)


# --- the world contract ---------------------------------------------------------------------


def test_world_contract() -> None:
    world = get_world("cartpole")
    assert isinstance(world, World) and world.steps == 500 and world.differentiable
    assert world.factors == {"x": 0.05, "x_dot": 0.05, "theta": 0.05, "theta_dot": 0.05}
    assert world.constants == cp.CONSTANTS
    assert world.task == {"name": "cartpole-lqr", **cp.CartPoleOptions().model_dump()}
    assert world.basin_feature == "upright" and world.goal is not None

    x0 = world.initial(500, 2.0, torch.Generator().manual_seed(0))
    assert x0.shape == (500, 4) and x0.dtype == torch.float32
    assert 0.09 < float(x0.abs().max()) <= 0.1  # scale 2: +-0.1

    at = world.at({"theta": torch.tensor([0.1, -0.2]), "x": torch.tensor([1.0, 2.0])})
    expected = torch.tensor([[1.0, 0, 0.1, 0], [2.0, 0, -0.2, 0]])
    torch.testing.assert_close(at, expected)
    with pytest.raises(UserError, match="no factor 'omega'"):
        world.at({"omega": torch.zeros(2)})

    final = torch.tensor(
        [[[0.1, 0, 0.01, 0], [3.0, 0, 0.0, 0]], [[0, 0, 0.3, 0], [0.7, 0, 0.02, 0]]]
    )
    features = world.features(final, world.constants)
    assert set(features) == {"x", "theta", "abs_theta", "upright"}
    assert features["upright"].dtype == torch.int64
    assert features["upright"].tolist() == [[1, 0], [0, 1]]
    assert world.goal(final, world.constants).tolist() == [[True, False], [False, False]]
    assert world.project(final).shape == (2, 2, 2)
    torch.testing.assert_close(world.project(final), final[..., 2:])


def test_world_options_are_checked() -> None:
    assert get_world("cartpole", {"dtype": "float64", "steps": 50}).steps == 50
    assert get_world("cartpole", {"task": {"hidden": [8]}}).task["hidden"] == [8]
    with pytest.raises(UserError, match="dtype"):
        get_world("cartpole", {"dtype": "float16"})
    with pytest.raises(UserError, match="task.hiden"):
        get_world("cartpole", {"task": {"hiden": [8]}})
    with pytest.raises(UserError, match="no option 'gravity'"):
        get_world("cartpole", {"gravity": 3.0})


# --- the task and the cloned ensemble -----------------------------------------------------


def test_task_labels_are_the_lqr_force_of_seeded_states() -> None:
    task = build_task(TaskConfig(name="cartpole-lqr", samples=200, seed=3))
    assert task.x_train.shape == (200, 4) and task.x_test.shape == (50, 4)
    assert task.y_train.shape == (200,) and task.x_train.dtype == torch.float32
    assert task.num_classes is None
    half = torch.tensor(cp.CartPoleOptions().state_range)
    assert bool((task.x_train.abs() <= half).all())
    expected = cp.lqr_force(task.x_train.double(), cp.lqr_gain()).float()
    torch.testing.assert_close(task.y_train, expected)
    assert float(task.y_train.abs().max()) <= cp.CONSTANTS["force_mag"]
    again = build_task(TaskConfig(name="cartpole-lqr", samples=200, seed=3))
    assert torch.equal(task.x_train, again.x_train) and torch.equal(task.x_test, again.x_test)
    other = build_task(TaskConfig(name="cartpole-lqr", samples=200, seed=4))
    assert not torch.equal(task.x_train, other.x_train)
    assert not torch.equal(task.x_train[:50], task.x_test)
    model = task.make_model()
    assert model(task.x_test[:5]).shape == (5, 1)
    assert task.loss(model(task.x_test[:5]), task.y_test[:5]).shape == (5,)
    assert can_vectorize(model, task.x_train[:2], task.loss, task.y_train[:2]) is None


def test_cloned_ensemble_reaches_the_goal(tmp_path: Path) -> None:
    """Train 4 members with the ordinary engine, roll the world out with the ensemble."""
    from attractor.runs.ensemble import Ensemble
    from attractor.runs.launch import train

    config = parse_config(
        {
            "task": {"name": "cartpole-lqr", "hidden": [32, 32], "samples": 2048},
            "trainer": {
                "optimizer": "adam",
                "lr": 0.01,
                "steps": 300,
                "batch_size": 128,
                "schedule": "cosine",
            },
            "plan": {"members": 4, "vary": ["init_seed", "data_seed"]},
            "run": {"snapshots": 2, "strategy": "vectorized"},
        }
    )
    train(config, tmp_path / "run")
    ens = Ensemble.load(tmp_path / "run")
    params, buffers = ens.stacked()
    policy = EnsemblePolicy(ens.task.make_model(), params, buffers)
    world = get_world("cartpole")
    x0 = initial_batch(world.initial(64, 1.0, torch.Generator().manual_seed(0)), policy.members)
    final = rollout(world, policy, x0).final
    assert final.shape == (4, 64, 4) and bool(torch.isfinite(final).all())
    reached = world.goal(final, world.constants).float()
    assert float(reached.mean()) >= 0.9, reached.mean(1)
    # The same members in a float64 world: the policy stays float32, its forces are cast.
    world64 = get_world("cartpole", {"dtype": "float64"})
    final64 = rollout(world64, policy, x0.double()).final
    assert final64.dtype == F64
    assert float((final64 - final.double()).abs().max()) < 1e-3
