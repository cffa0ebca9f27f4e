"""World rollouts: members x initial states at once vs the loops a user would write, same run.

* **cartpole**: ``--members`` (64) policies x ``--states`` (256) initial states x
  ``--steps`` (500) steps. Ours: :func:`attractor.world.rollout` with an
  :class:`~attractor.world.EnsemblePolicy` (one batched call per step for every member and
  state). Baseline: gymnasium's ``CartPole-v1`` env stepped in a Python loop, the policy
  (the same MLP as a plain ``nn.Module``) called once per step on one state, the action
  the sign of its force; no termination (the state is kept going past it, as ours does).
  Goal: at least 100x.
* **denoise-digits**: 64 members x 256 noises through the DDIM sampler. Ours: the world's
  batched rollout. Baseline: a loop over members and noises, the sampler run on one noise
  with one member's ``nn.Module`` at a time. Goal: at least 50x.

The baselines are timed on a few (member, state) pairs and extrapolated linearly (each
pair is independent work); rollout cost does not depend on the weights' values, so the
members are freshly initialised (no training). Best of ``--repeats``; ratios printed.

    python benchmarks/world.py [--members 64] [--states 256] [--steps 500] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from timing import best_time, finish  # benchmarks/timing.py: scripts run from this folder

from attractor.config import TaskConfig
from attractor.plan import PlanRow
from attractor.tasks import build_task
from attractor.training.init import initial_module
from attractor.world import EnsemblePolicy, get_world, rollout
from attractor.world.rollout import initial_batch


def _members(task_spec: dict[str, Any], m: int) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    task = build_task(TaskConfig(**task_spec))
    modules = [initial_module(task, PlanRow(member=i, init_seed=i)) for i in range(m)]
    return task.make_model(), modules


def _policy(template: torch.nn.Module, modules: list[torch.nn.Module]) -> EnsemblePolicy:
    params = {
        k: torch.stack([dict(mod.named_parameters())[k].detach() for mod in modules])
        for k, _ in template.named_parameters()
    }
    buffers = {
        k: torch.stack([dict(mod.named_buffers())[k] for mod in modules])
        for k, _ in template.named_buffers()
    }
    return EnsemblePolicy(template, params, buffers)


def cartpole(m: int, s: int, steps: int, repeats: int, pairs: int) -> dict[str, float]:
    import gymnasium

    world = get_world("cartpole")
    template, modules = _members(world.task, m)
    policy = _policy(template, modules)
    x0 = world.initial(s, 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = best_time(lambda: rollout(world, policy, initial_batch(x0, m), steps), repeats)

    env = gymnasium.make("CartPole-v1").unwrapped

    def loop() -> None:
        for pair in range(pairs):
            model = modules[pair % m]
            env.reset(seed=pair)
            env.state = x0[pair % s].double().numpy().copy()
            for _ in range(steps):
                with torch.no_grad():
                    force = float(model(torch.as_tensor(env.state, dtype=torch.float32))[0])
                env.steps_beyond_terminated = None  # keep going past termination, as ours
                env.step(1 if force > 0 else 0)

    per_pair = best_time(loop, repeats) / pairs
    return {"ours_s": ours, "baseline_s": per_pair * m * s, "ratio": per_pair * m * s / ours}


def denoise(m: int, s: int, repeats: int, pairs: int) -> dict[str, float]:
    world = get_world("denoise-digits")
    template, modules = _members(world.task, m)
    policy = _policy(template, modules)
    x0 = world.initial(s, 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = best_time(lambda: rollout(world, policy, initial_batch(x0, m)), repeats)

    def loop() -> None:
        for pair in range(pairs):
            one = _policy(template, [modules[pair % m]])  # one member, one noise at a time
            with torch.no_grad():
                rollout(world, one, x0[pair % s].reshape(1, 1, -1))

    per_pair = best_time(loop, repeats) / pairs
    return {"ours_s": ours, "baseline_s": per_pair * m * s, "ratio": per_pair * m * s / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--states", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8, help="baseline pairs timed")
    parser.add_argument("--quick", action="store_true", help="8 members x 32 states x 100 steps")
    args = parser.parse_args()
    if args.quick:
        args.members, args.states, args.steps, args.repeats, args.pairs = 8, 32, 100, 1, 2
    started, load = time.perf_counter(), os.getloadavg()[0]
    print(f"torch threads {torch.get_num_threads()}")
    cp = cartpole(args.members, args.states, args.steps, args.repeats, args.pairs)
    print(
        f"cartpole {args.members} x {args.states} x {args.steps}: ours {cp['ours_s']:.2f} s, "
        f"gymnasium loop {cp['baseline_s']:.1f} s (extrapolated), ratio {cp['ratio']:.0f}x "
        f"(goal >= 100x: {'met' if cp['ratio'] >= 100 else 'missed'})"
    )
    dn = denoise(args.members, args.states, args.repeats, args.pairs)
    print(
        f"denoise-digits {args.members} x {args.states}: ours {dn['ours_s']:.2f} s, loop "
        f"{dn['baseline_s']:.1f} s (extrapolated), ratio {dn['ratio']:.0f}x "
        f"(goal >= 50x: {'met' if dn['ratio'] >= 50 else 'missed'})"
    )
    finish(started, load)


if __name__ == "__main__":
    main()
