"""Sobol' indices of a 4-factor plan: one vectorized ensemble vs a plain PyTorch loop per member.

Task ``digits-mlp`` (MLP 64-128-128-10), batch 64, SGD, the same number of steps per
member. The plan is Saltelli's sample (``design = "sobol"``) over four continuous factors:
lr in [0.01, 0.5] (log10), momentum in [0, 0.95], weight decay in [0, 1e-3] and label
noise in [0, 0.3]; ``N`` base samples give ``N x (4 + 2)`` members (48 by default, 24
with ``--quick``). Both sides are timed in this process:

* **ours**: ``attractor.runs.launch.train(cfg, fresh dir)`` end to end (planning,
  vectorized chunks, init + final evaluation on both splits, snapshots, metrics,
  manifest; ``run.snapshots = 1``) **plus** ``attractor.sensitivity.sobol_analysis``
  (loads the run, predicts every member on the test split, SALib's analysis of test loss,
  test accuracy and KL to the ensemble mean, 100 resamples).
* **baseline**: for each plan row one after another, ``task.make_model()`` with the
  row's init seed, its labels flipped at rate ``label_noise`` (another class, seeded),
  ``torch.optim.SGD(lr, momentum, weight_decay)``, per step a random minibatch of 64,
  ``F.cross_entropy``, ``zero_grad``, ``backward``, ``step``; then one test evaluation;
  then ``SALib.analyze.sobol.analyze`` on the test accuracies (same resamples). A row's
  training cost does not depend on its values, so the loop is timed on
  ``--baseline-members`` rows spread over the plan and extrapolated linearly to all rows
  (said in the output), as ``hparam_map.py`` does. ``--baseline-indices`` trains every
  row instead (slow: minutes) and prints the baseline's own indices beside ours.
  Timings are the best of ``--repeats``.

Threads matter more than anything here. Measured 2026-11-26 on 2 cores shared with
other jobs (load 4-8), 48 members x 100 steps: with ``--threads 1`` the baseline took
6.3 s (extrapolated) and ours 5.0 s (of which the analysis 0.13 s): **1.26-1.32x**; with
torch's default 2 threads the baseline's many tiny ops suffer from the oversubscribed
cores (193 s) and the ratio reads 6-17x, which measures the contention, not the engine.
On a busy machine, quote the ``--threads 1`` figure.

With ``--baseline-indices`` the indices of the two sides are printed side by side: they
estimate the same thing from different random streams, so they agree only within their
intervals.

    python benchmarks/sobol.py [--base N] [--steps S] [--quick] [--repeats R] [--baseline-indices]
    [--json PATH]
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
from attractor.plan import PlanRow, build_plan, sobol_problem
from attractor.runs.launch import plan_chunks, train
from attractor.sensitivity import sobol_analysis
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.runtime import keep_freed_memory

BATCH = 64
RANGES = {
    "lr": [0.01, 0.5],
    "momentum": [0.0, 0.95],
    "weight_decay": [0.0, 1e-3],
    "label_noise": [0.0, 0.3],
}
RESAMPLES = 100


def sobol_config(base: int, steps: int) -> Config:
    """digits-mlp with a Saltelli plan of ``base x 6`` members over :data:`RANGES`, init seeds
    varied.
    """
    cfg = parse_config({"trainer": {"steps": steps, "batch_size": BATCH}, "run": {"snapshots": 1}})
    plan = PlanConfig(
        design="sobol", members=base * (len(RANGES) + 2), ranges=RANGES, vary=["init_seed"], seed=0
    )
    return cfg.model_copy(update={"plan": plan})


def ours(cfg: Config, repeats: int) -> tuple[float, Any, float]:
    """Best wall time of train + sobol_analysis into a fresh directory, the last result, and
    the smallest time of the analysis part alone."""
    holder: list[Any] = []
    analysis = [float("inf")]

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="sobol-bench-") as tmp:
            ens = train(cfg, Path(tmp) / "run")
            started = time.perf_counter()
            holder[:] = [sobol_analysis(ens, resamples=RESAMPLES)]
            analysis[0] = min(analysis[0], time.perf_counter() - started)

    return best_time(run, repeats), holder[0], analysis[0]


def _train_one(task: Task, row: PlanRow, steps: int) -> float:
    """One plan row with plain PyTorch; returns its final test accuracy (0.1 if it diverged)."""
    torch.manual_seed(row.init_seed % 2**31)
    generator = torch.Generator().manual_seed(row.init_seed % 2**31)
    y_train = task.y_train.clone()
    flip = torch.rand(y_train.shape, generator=generator) < row.label_noise
    y_train[flip] = (
        y_train[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=generator)
    ) % 10
    model = task.make_model()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=row.lr, momentum=row.momentum, weight_decay=row.weight_decay
    )
    for _ in range(steps):
        index = torch.randint(task.n_train, (BATCH,), generator=generator)
        loss = F.cross_entropy(model(task.x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(task.x_test)
        accuracy = float((logits.argmax(-1) == task.y_test).float().mean())
    return accuracy if np.isfinite(float(loss.detach())) else 0.1


def baseline(
    task: Task,
    rows: list[PlanRow],
    timed: list[int],
    steps: int,
    problem: dict[str, Any],
    repeats: int,
    indices: bool,
) -> tuple[float, float, Any]:
    """(seconds for the ``timed`` rows, SALib analysis seconds, SALib result or None).

    With ``indices`` every row is trained (untimed) so the baseline's own indices exist; the
    analysis is timed on that vector, else on a vector of the same length (its cost does not
    depend on the values).
    """
    from SALib.analyze import sobol

    train_s = best_time(lambda: [_train_one(task, rows[i], steps) for i in timed], repeats)
    y = (
        np.array([_train_one(task, row, steps) for row in rows])
        if indices
        else np.random.default_rng(0).random(len(rows))
    )
    result: list[Any] = []
    analysis_s = best_time(
        lambda: result.__setitem__(
            slice(None),
            [sobol.analyze(problem, y, calc_second_order=False, num_resamples=RESAMPLES, seed=1)],
        ),
        repeats,
    )
    return train_s, analysis_s, result[0] if indices else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        type=int,
        default=None,
        help="Saltelli base samples N, a power of 2 (default 8; 4 with --quick)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per member (default 100; 20 with --quick)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timings per side, best kept (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--baseline-members",
        type=int,
        default=None,
        help="baseline rows timed, then extrapolated (default 12; 6 with --quick)",
    )
    parser.add_argument(
        "--baseline-indices",
        action="store_true",
        help="train every baseline row too and print its indices (minutes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for everything (default: torch's own)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N = 4 (24 members), 20 steps (under 30 s)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this path"
    )
    args = parser.parse_args(argv)
    base = args.base or (4 if args.quick else 8)
    steps = args.steps or (20 if args.quick else 100)
    repeats = args.repeats or (1 if args.quick else 2)
    if base < 1 or base & (base - 1) or steps < 1 or repeats < 1:
        parser.error("--base must be a power of 2; --steps and --repeats at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    memory_kept = keep_freed_memory()
    cfg = sobol_config(base, steps)
    task = build_task(cfg.task)
    rows = build_plan(cfg.plan, cfg.trainer, task.group_ids).rows()
    members = len(rows)
    chunks = [len(c) for c in plan_chunks(cfg, task, rows, "vectorized")]
    problem = sobol_problem(cfg.plan)
    n_timed = min(members, args.baseline_members or (6 if args.quick else 12))
    timed = [
        int(i) for i in np.linspace(0, members - 1, n_timed).round()
    ]  # spread over lr and the rest
    load_before = os.getloadavg()
    started = time.perf_counter()

    print(f"sobol: digits-mlp 64-128-128-10, batch {BATCH}, SGD, {steps} steps per member")
    print(
        f"plan: Saltelli N = {base} over {', '.join(f'{k} {v}' for k, v in RANGES.items())} = "
        f"{members} members; chunks {chunks}"
    )
    print(
        f"machine: {platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load_before[0]:.2f} at start"
    )
    print(
        f"keep_freed_memory(): {'on' if memory_kept else 'unavailable'}; timings: best of "
        f"{repeats}\n"
    )

    _train_one(task, rows[0], 3)  # warm up allocator and kernels before anything is timed
    ours(sobol_config(1, 2), 1)  # the warm-up's own figures are discarded

    print("  timing baseline ...", file=sys.stderr, flush=True)
    base_train, base_analysis, base_result = baseline(
        task, rows, timed, steps, problem, repeats, args.baseline_indices
    )
    base_extrapolated = base_train * members / n_timed
    base_total = base_extrapolated + base_analysis
    print("  timing ours ...", file=sys.stderr, flush=True)
    ours_total, result, ours_analysis = ours(cfg, repeats)
    ratio = base_total / ours_total

    print(
        f"baseline (plain PyTorch per member + final test eval): {base_train:.2f} s for {n_timed} "
        "members timed, "
        f"extrapolated linearly to {members}: {base_extrapolated:.2f} s; SALib analysis "
        f"{base_analysis:.3f} s; total {base_total:.2f} s"
    )
    print(
        f"ours (train() end to end + sobol_analysis on 3 outcomes): {ours_total:.2f} s, of which "
        "the analysis "
        f"(load, predict, SALib) {ours_analysis:.2f} s ({result.diverged} diverged members)"
    )
    print(f"ratio baseline / ours: {ratio:.2f}x\n")
    accuracy = result.table[result.table["outcome"] == "test_accuracy"].set_index("factor")
    print(
        "test-accuracy indices      ours S1 [95 %]          ST [95 %]"
        + ("        | baseline S1 ± conf   ST ± conf" if base_result else "")
    )
    indices = {}
    for j, name in enumerate(problem["names"]):
        r = accuracy.loc[name]
        indices[name] = {
            "ours": {k: float(r[k]) for k in ("S1", "S1_low", "S1_high", "ST", "ST_low", "ST_high")}
        }
        line = (
            f"  {name:13s} {r['S1']:+.2f} [{r['S1_low']:+.2f}, {r['S1_high']:+.2f}]  "
            f"{r['ST']:+.2f} [{r['ST_low']:+.2f}, {r['ST_high']:+.2f}]"
        )
        if base_result:
            b = indices[name]["baseline"] = {
                k: float(base_result[k][j]) for k in ("S1", "S1_conf", "ST", "ST_conf")
            }
            line += f"  | {b['S1']:+.2f} ± {b['S1_conf']:.2f}  {b['ST']:+.2f} ± {b['ST_conf']:.2f}"
        print(line)
    load_after = finish(started, load_before[0])
    report: dict[str, Any] = {
        **machine(load_before[0], load_after),
        "steps": steps,
        "base": base,
        "ranges": RANGES,
        "members": members,
        "chunks": chunks,
        "repeats": repeats,
        "baseline_members_timed": n_timed,
        "baseline_train_seconds_timed": base_train,
        "baseline_analysis_seconds": base_analysis,
        "baseline_seconds_extrapolated": base_total,
        "ours_seconds": ours_total,
        "ours_analysis_seconds": ours_analysis,
        "ratio": ratio,
        "diverged": result.diverged,
        "accuracy_indices": indices,
        "seconds": time.perf_counter() - started,
    }
    if args.json is not None:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
