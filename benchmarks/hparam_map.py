"""Hyperparameter map speed: an lr × momentum × seeds grid as one ensemble vs a plain PyTorch loop.

Task ``digits-mlp`` (MLP 64-128-128-10), batch 64, SGD, the same number of steps per
member. The grid is the issue's: 13 learning rates log-spaced in [1e-3, 1] × momenta
0, 0.5, 0.9, 0.99 × 4 seeds = 208 members. Both sides are timed in this process, so the
ratio printed compares like with like on this machine, right now:

* **ours**: the factorial plan that ``attractor.experiments.hparam_map.hparam_map`` builds
  (``lr`` × ``momentum`` levels, ``init_seed`` and ``data_seed`` varied), trained by
  ``attractor.runs.launch.train(cfg, out)`` **end to end** into a fresh temporary run
  directory: planning, chunking (64 members at most per chunk by default), training,
  evaluating every member on both splits at each snapshot, and writing snapshots,
  metrics and the manifest. ``run.snapshots = 1`` keeps only init and final. The map's
  own analysis (cell table, bootstrap, heat map) is not timed.
* **baseline**: for each member one after another, ``task.make_model()``,
  ``torch.optim.SGD(lr, momentum)``, per step a random minibatch of 64,
  ``F.cross_entropy``, ``zero_grad``, ``backward``, ``step``, then one evaluation on the
  test split. Its cost does not depend on the cell, so it is timed on
  ``--baseline-members`` members spread evenly over the grid and extrapolated linearly
  to all members (said in the output).

Diverged members cost the same on both sides: the engine keeps computing them (masked),
the plain loop keeps stepping NaNs. Timings are the best of ``--repeats`` runs.

    python benchmarks/hparam_map.py [--steps S] [--quick] [--repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timing import (  # benchmarks/timing.py: scripts run from this folder
    best_time,
    finish,
    machine,
    write_report,
)

from attractor.config import Config, PlanConfig, parse_config
from attractor.plan import build_plan
from attractor.runs.launch import plan_chunks, train
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.runtime import keep_freed_memory

BATCH = 64
MOMENTA = [0.0, 0.5, 0.9, 0.99]
SEEDS = 4


def grid_config(lrs: list[float], steps: int) -> Config:
    """The config ``hparam_map`` would train: its factorial plan over ``lrs`` × ``MOMENTA`` ×
    seeds.
    """
    base = parse_config({"trainer": {"steps": steps, "batch_size": BATCH}, "run": {"snapshots": 1}})
    # Same PlanConfig as attractor.experiments.hparam_map.hparam_map builds.
    plan = PlanConfig(
        design="factorial",
        members=len(lrs) * len(MOMENTA) * SEEDS,
        levels={"lr": list(lrs), "momentum": list(MOMENTA)},
        vary=["init_seed", "data_seed"],
        seed=base.plan.seed,
    )
    return base.model_copy(update={"plan": plan})


def ours_seconds(cfg: Config, repeats: int) -> tuple[float, dict[str, int]]:
    """Best wall time of ``train(cfg, fresh dir)`` and the member statuses of the last run."""
    statuses: dict[str, int] = {}

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="hparam-map-bench-") as tmp:
            ens = train(cfg, Path(tmp) / "run")
            statuses.clear()
            statuses.update({str(k): int(v) for k, v in ens.plan["status"].value_counts().items()})

    return best_time(run, repeats), statuses


def baseline_seconds(
    task: Task, cells: list[tuple[float, float, int]], steps: int, repeats: int
) -> float:
    """Best wall time of the plain PyTorch loop over ``cells`` = ``[(lr, momentum, seed)]``, one
    after another.
    """
    x_train, y_train, n_train = task.x_train, task.y_train, task.n_train

    def run() -> None:
        for lr, momentum, seed in cells:
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            model = task.make_model()
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
            for _ in range(steps):
                index = torch.randint(n_train, (BATCH,), generator=generator)
                loss = F.cross_entropy(model(x_train[index]), y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():  # the one final test evaluation ours also does (and more)
                logits = model(task.x_test)
                F.cross_entropy(logits, task.y_test)
                (logits.argmax(-1) == task.y_test).float().mean()

    return best_time(run, repeats)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per member (default 100; 20 with --quick)"
    )
    parser.add_argument(
        "--lrs",
        type=int,
        default=None,
        help="learning rates, log-spaced in [1e-3, 1] (default 13; 4 with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timings per side, best kept (default 3; 2 with --quick)",
    )
    parser.add_argument(
        "--baseline-members",
        type=int,
        default=None,
        help="baseline members timed, then extrapolated (default 16; 8 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for everything (default: torch's own)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 learning rates, 20 steps, best of 2 (under 30 s)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this path"
    )
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.quick else 100)
    n_lrs = args.lrs or (4 if args.quick else 13)
    repeats = args.repeats or (2 if args.quick else 3)
    if steps < 1 or n_lrs < 2 or repeats < 1:
        parser.error("--steps and --repeats must be at least 1, --lrs at least 2")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    memory_kept = keep_freed_memory()
    lrs = [float(lr) for lr in np.logspace(-3, 0, n_lrs)]
    cfg = grid_config(lrs, steps)
    task = build_task(cfg.task)
    rows = build_plan(cfg.plan, cfg.trainer, task.group_ids).rows()
    members = len(rows)
    chunks = [len(c) for c in plan_chunks(cfg, task, rows, "vectorized")]
    timed = min(members, args.baseline_members or (8 if args.quick else 16))
    # Evenly strided over the plan, so the timed subset covers small and large lrs and momenta.
    subset = [rows[int(i)] for i in np.linspace(0, members - 1, timed).round()]
    cells = [(r.lr, r.momentum, r.init_seed) for r in subset]
    load_before = os.getloadavg()
    started = time.perf_counter()

    print(f"hparam_map: digits-mlp 64-128-128-10, batch {BATCH}, SGD, {steps} steps per member")
    print(
        f"grid: {n_lrs} lrs log-spaced in [1e-3, 1] x momenta {MOMENTA} x {SEEDS} seeds = "
        f"{members} members; chunks {chunks}"
    )
    print(
        f"machine: {platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load_before[0]:.2f} at start"
    )
    print(
        f"keep_freed_memory(): {'on' if memory_kept else 'unavailable'} (process-wide); timings: "
        f"best of {repeats}\n"
    )

    # Warm up allocator, kernels and autograd once before anything is timed.
    baseline_seconds(task, cells[:1], 5, 1)
    ours_seconds(grid_config(lrs[:2], 2), 1)

    print("  timing baseline ...", file=sys.stderr, flush=True)
    base_timed = baseline_seconds(task, cells, steps, repeats)
    base_total = base_timed * members / timed
    print("  timing ours ...", file=sys.stderr, flush=True)
    ours_total, statuses = ours_seconds(cfg, repeats)
    work = members * steps
    ratio = base_total / ours_total

    print(
        f"baseline (plain PyTorch, one member after another, + final test eval): {base_timed:.2f} "
        f"s for {timed} members timed,"
    )
    print(
        f"  extrapolated linearly to {members} members: {base_total:.2f} s, "
        f"{work / base_total:.0f} member-steps/s"
    )
    print(
        "ours (train() end to end: training, init+final eval on both splits, snapshots, metrics, "
        "manifest): "
        f"{ours_total:.2f} s, {work / ours_total:.0f} member-steps/s"
    )
    print(f"ratio baseline / ours: {ratio:.2f}x")
    print(
        f"member statuses in ours: {statuses} (diverged members are still computed on both sides)"
    )

    load_after = finish(started, load_before[0])

    report: dict[str, Any] = {
        **machine(load_before[0], load_after),
        "steps": steps,
        "lrs": lrs,
        "momenta": MOMENTA,
        "seeds": SEEDS,
        "members": members,
        "chunks": chunks,
        "repeats": repeats,
        "baseline_members_timed": timed,
        "baseline_seconds_timed": base_timed,
        "baseline_seconds_extrapolated": base_total,
        "ours_seconds": ours_total,
        "baseline_member_steps_per_s": work / base_total,
        "ours_member_steps_per_s": work / ours_total,
        "ratio": ratio,
        "statuses": statuses,
        "seconds": time.perf_counter() - started,
    }
    if args.json is not None:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
