"""Ensemble training speed: the vectorized engine against a plain PyTorch loop, in one run.

Task ``digits-mlp`` (MLP 64-128-128-10), batch 64, SGD lr 0.05 momentum 0.9, the same
number of steps per member for every ensemble size N. Everything is measured in this
process, so the ratios printed compare like with like on this machine, right now:

* **baseline**: for each member one after another, ``task.make_model()``,
  ``torch.optim.SGD``, and per step a random minibatch of 64, ``F.cross_entropy``,
  ``zero_grad``, ``backward``, ``step``. Its cost is linear in N, so for N above
  ``--baseline-members`` it is timed on that many members and extrapolated (said in
  the output).
* **ours**: ``attractor.training.engine.train_chunk(..., vectorized=True)`` over the chunks
  ``attractor run`` would form (at most 64 members each by default). A chunk always
  evaluates every member on the train and test splits at step 0 and at the last step.
  The headline figure is *training only*: ``N * (S - 1) / (t(S steps) - t(1 step))``,
  which cancels setup and both evaluations exactly. The end-to-end rate ``N * S / t(S)``
  (setup and two evaluations included) is printed beside it.
* the engine's loop strategy (``vectorized=False``) at N=8, same method, for reference.
* this machine's float32 matmul throughput (``torch.mm``, 512 and 1024 square), and the
  fraction of it the engine reaches.

Timings are the best of ``--repeats`` runs (other processes may share the CPUs).
``keep_freed_memory()`` (the engine's process-wide glibc setting, which the run path
turns on) is on for the baseline and ours alike.

    python benchmarks/ensemble_speed.py [--steps S] [--members 1,8,64,256] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timing import (  # benchmarks/timing.py: scripts run from this folder
    best_time,
    finish,
    machine,
    write_report,
)

from attractor.config import Config, parse_config
from attractor.plan import PlanRow
from attractor.runs.launch import plan_chunks
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.engine import train_chunk
from attractor.training.runtime import keep_freed_memory

LR, MOMENTUM, BATCH = 0.05, 0.9, 64
IN, H1, H2, OUT = 64, 128, 128, 10
GOAL_RATIO_N, GOAL_RATIO = 64, 8.0
GOAL_FRACTION_N, GOAL_FRACTION = 256, 0.5
CHECK_MEMBERS, CHECK_STEPS, CHECK_TOL = 8, 20, 1e-5

# FLOPs of one member-step (matmuls only; bias, ReLU, loss and optimizer are elementwise):
#   forward   2*B*(64*128 + 128*128 + 128*10)
#   backward  weight grads of all 3 layers (= forward) + input grads of layers 2 and 3
#             (the first layer's input gradient is not needed)
#   total     2*B*(3*(64*128 + 128*128 + 128*10) - 64*128)
_MACS = IN * H1 + H1 * H2 + H2 * OUT
FLOPS_PER_MEMBER_STEP = 2 * BATCH * (3 * _MACS - IN * H1)
FLOPS_FORMULA = "2*B*(3*(64*128 + 128*128 + 128*10) - 64*128), B=64"


def config(steps: int) -> Config:
    return parse_config(
        {
            "trainer": {"steps": steps, "lr": LR, "momentum": MOMENTUM, "batch_size": BATCH},
            "run": {"snapshots": [steps]},
        }
    )


def rows(n: int) -> list[PlanRow]:
    return [PlanRow(member=i, init_seed=i, data_seed=i) for i in range(n)]


# ---------------------------------------------------------------------------- measures


def matmul_gflops(size: int, repeats: int) -> float:
    """Best float32 ``torch.mm`` throughput for ``size x size`` operands, GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    inner = max(1, int(2e9 // (2 * size**3)))  # about 2 GFLOP per timed block
    for _ in range(3):
        torch.mm(a, b)
    seconds = best_time(lambda: [torch.mm(a, b) for _ in range(inner)], repeats)
    return 2 * size**3 * inner / seconds / 1e9


def baseline_rate(task: Task, members: int, steps: int, repeats: int) -> float:
    """Member-steps per second of the plain PyTorch loop, one member after another."""
    x_train, y_train, n_train = task.x_train, task.y_train, task.n_train

    def run() -> None:
        for member in range(members):
            torch.manual_seed(member)
            generator = torch.Generator().manual_seed(member)
            model = task.make_model()
            optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            for _ in range(steps):
                index = torch.randint(n_train, (BATCH,), generator=generator)
                loss = F.cross_entropy(model(x_train[index]), y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    return members * steps / best_time(run, repeats)


def engine_rates(
    task: Task, n: int, steps: int, repeats: int, vectorized: bool
) -> dict[str, float]:
    """Training-only and end-to-end member-steps/s of ``train_chunk`` for ``n`` members."""
    long, short = config(steps), config(1)
    # Chunked exactly as `attractor run` chunks a plan (64 members at most by default).
    chunks = plan_chunks(long, task, rows(n), "vectorized") if vectorized else [rows(n)]

    def sink(*_: object) -> None:
        return None

    def train_all(cfg: Config) -> None:
        for chunk in chunks:
            train_chunk(task, cfg, chunk, vectorized, sink)

    t_long = t_short = float("inf")
    for _ in range(repeats):  # interleaved, so a burst of load hits both alike
        t_short = min(t_short, best_time(lambda: train_all(short), 1))
        t_long = min(t_long, best_time(lambda: train_all(long), 1))
    delta = t_long - t_short
    return {
        "seconds_S_steps": t_long,
        "seconds_1_step": t_short,
        "train_only": n * (steps - 1) / delta if delta > 0 else float("nan"),
        "end_to_end": n * steps / t_long,
    }


def max_strategy_difference(task: Task) -> float:
    """Max |vectorized - loop| over every final parameter of ``CHECK_MEMBERS`` members."""
    finals: dict[bool, dict[int, dict[str, torch.Tensor]]] = {True: {}, False: {}}
    for vectorized in (True, False):

        def keep(
            row: PlanRow,
            step: int,
            state: dict[str, torch.Tensor],
            _m: dict[str, float],
            v: bool = vectorized,
        ) -> None:
            if step == CHECK_STEPS:
                finals[v][row.member] = state

        train_chunk(task, config(CHECK_STEPS), rows(CHECK_MEMBERS), vectorized, keep)
    assert finals[True].keys() == finals[False].keys() == set(range(CHECK_MEMBERS))
    return max(
        float((finals[True][m][k] - finals[False][m][k]).abs().max())
        for m in range(CHECK_MEMBERS)
        for k in finals[True][m]
    )


# ---------------------------------------------------------------------------- report


def fmt(value: float, spec: str = ".0f") -> str:
    return "n/a" if value != value else format(value, spec)  # NaN check


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per member (default 50; 10 with --quick)"
    )
    parser.add_argument(
        "--members",
        default=None,
        help="comma-separated ensemble sizes (default 1,8,64,256; 1,8,64 with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timings per figure, best kept (default 3; 2 with --quick)",
    )
    parser.add_argument(
        "--baseline-members",
        type=int,
        default=None,
        help="baseline members timed when N is larger (default 16; 8 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for everything (default: torch's own)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer steps, N in 1,8,64")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this path"
    )
    args = parser.parse_args(argv)
    steps = args.steps or (10 if args.quick else 50)
    members = [
        int(s) for s in (args.members or ("1,8,64" if args.quick else "1,8,64,256")).split(",")
    ]
    repeats = args.repeats or (2 if args.quick else 3)
    baseline_members = args.baseline_members or (8 if args.quick else 16)
    if steps < 2:
        parser.error("--steps must be at least 2 (training-only time is t(S) - t(1))")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    memory_kept = keep_freed_memory()
    task = build_task(config(steps).task)
    load_before = os.getloadavg()
    started = time.perf_counter()

    print(
        f"ensemble_speed: digits-mlp 64-{H1}-{H2}-{OUT}, batch {BATCH}, SGD lr {LR} momentum "
        f"{MOMENTUM}, {steps} steps per member"
    )
    print(
        f"machine: {platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load_before[0]:.2f} at start"
    )
    print(
        f"keep_freed_memory(): {'on' if memory_kept else 'unavailable'} (process-wide: applies to "
        "baseline and ours alike)"
    )
    print(f"timings: best of {repeats}\n")

    # Warm up allocator, kernels and autograd once before anything is timed.
    baseline_rate(task, 1, 5, 1)
    train_chunk(task, config(2), rows(2), True, lambda *_: None)
    train_chunk(task, config(2), rows(2), False, lambda *_: None)

    # Matmul is timed now and again after the ensembles; the best of both is kept, so a
    # burst of load at the start does not flatter the fractions below.
    matmul = {size: matmul_gflops(size, max(repeats, 5)) for size in (512, 1024)}

    results = []
    for n in members:
        print(f"  timing N={n} ...", file=sys.stderr, flush=True)
        timed = min(n, baseline_members)
        base = baseline_rate(task, timed, steps, repeats)
        ours = engine_rates(task, n, steps, repeats, vectorized=True)
        gflops = ours["train_only"] * FLOPS_PER_MEMBER_STEP / 1e9
        results.append(
            {
                "members": n,
                "baseline_members_timed": timed,
                "baseline": base,
                "ours_train_only": ours["train_only"],
                "ours_end_to_end": ours["end_to_end"],
                "ratio_train_only": ours["train_only"] / base,
                "ratio_end_to_end": ours["end_to_end"] / base,
                "ours_gflops": gflops,
                "seconds_S_steps": ours["seconds_S_steps"],
                "seconds_1_step": ours["seconds_1_step"],
            }
        )

    matmul = {
        size: max(gflops, matmul_gflops(size, max(repeats, 5))) for size, gflops in matmul.items()
    }
    peak = max(matmul.values())
    for r in results:
        r["fraction_of_matmul"] = r["ours_gflops"] / peak
    print(
        "matmul throughput (float32 torch.mm, best of several, timed before and after the "
        "ensembles):"
    )
    for size, gflops in matmul.items():
        print(f"  {size}x{size}: {gflops:7.1f} GFLOP/s")
    print(f"  reference for 'of matmul': {peak:.1f} GFLOP/s (the higher one)")
    print(
        f"FLOPs per member-step (matmuls only) = {FLOPS_FORMULA} = "
        f"{FLOPS_PER_MEMBER_STEP / 1e6:.3f} MFLOP\n"
    )

    print("member-steps/s (higher is better); ours = vectorized train_chunk")
    header = (
        f"{'N':>5} {'baseline':>10} {'ours':>10} {'ratio':>7} {'ours e2e':>10} "
        f"{'ratio e2e':>9} {'GFLOP/s':>8} {'of matmul':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        mark = "*" if r["baseline_members_timed"] < r["members"] else " "
        print(
            f"{r['members']:>5} {fmt(r['baseline']):>9}{mark} {fmt(r['ours_train_only']):>10} "
            f"{fmt(r['ratio_train_only'], '.2f'):>6}x "
            f"{fmt(r['ours_end_to_end']):>10} {fmt(r['ratio_end_to_end'], '.2f'):>8}x "
            f"{fmt(r['ours_gflops'], '.1f'):>8} "
            f"{fmt(100 * r['fraction_of_matmul'], '.1f'):>8}%"
        )
    print(
        "  ours     = training steps only: N*(S-1) / (t(S steps) - t(1 step)); setup and the two\n"
        "             full evaluations every chunk does (step 0 and the last step) cancel out.\n"
        "  ours e2e = N*S / t(S steps): setup (N initial models) and both evaluations included.\n"
        "  baseline = plain PyTorch loop, model construction included (negligible)."
    )
    if any(r["baseline_members_timed"] < r["members"] for r in results):
        print(
            f"  * baseline timed on {baseline_members} members and extrapolated (its cost is "
            "linear in N)."
        )
    if 1 in members:
        print(
            "  N=1: the engine pads a one-member chunk with a copy of itself, so it trains 2; "
            "counted as 1."
        )

    loop = engine_rates(task, 8, steps, repeats, vectorized=False)
    loop_base = next((r["baseline"] for r in results if r["members"] == 8), None) or baseline_rate(
        task, 8, steps, repeats
    )
    print(
        f"\nour loop strategy (vectorized=False), N=8: {fmt(loop['train_only'])} member-steps/s "
        "training only "
        f"({fmt(loop['train_only'] / loop_base, '.2f')}x baseline), {fmt(loop['end_to_end'])} end "
        "to end"
    )

    diff = max_strategy_difference(task)
    print(
        f"vectorized vs loop, N={CHECK_MEMBERS}, {CHECK_STEPS} steps: max |param difference| = "
        f"{diff:.3g} "
        f"({'within' if diff <= CHECK_TOL else 'EXCEEDS'} {CHECK_TOL:g})"
    )

    by_n = {r["members"]: r for r in results}
    goals = []
    ratio_row = by_n.get(GOAL_RATIO_N)
    goals.append(
        {
            "goal": f"at N={GOAL_RATIO_N} ours >= {GOAL_RATIO:g}x the baseline (training only)",
            "value": None if ratio_row is None else ratio_row["ratio_train_only"],
            "met": None if ratio_row is None else bool(ratio_row["ratio_train_only"] >= GOAL_RATIO),
        }
    )
    frac_row = by_n.get(GOAL_FRACTION_N)
    goals.append(
        {
            "goal": f"at N={GOAL_FRACTION_N} ours reaches >= {GOAL_FRACTION:.0%} of measured "
            "matmul throughput",
            "value": None if frac_row is None else frac_row["fraction_of_matmul"],
            "met": None
            if frac_row is None
            else bool(frac_row["fraction_of_matmul"] >= GOAL_FRACTION),
        }
    )
    if ratio_row is not None:
        needed = GOAL_RATIO * ratio_row["baseline"] * FLOPS_PER_MEMBER_STEP / 1e9
        goals[0]["needed_gflops"] = needed
    print("\ngoals (from the issue; reported, not asserted):")
    for g in goals:
        if g["met"] is None:
            print(f"  [not measured] {g['goal']}")
        else:
            value = f"{g['value']:.2f}x" if "x the" in g["goal"] else f"{g['value']:.1%}"
            print(f"  [{'met' if g['met'] else 'MISSED'}] {g['goal']}: {value}")
            if "needed_gflops" in g:
                print(
                    f"      (8x this baseline needs {g['needed_gflops']:.1f} GFLOP/s of matmul "
                    "work, "
                    f"{g['needed_gflops'] / peak:.0%} of the measured matmul throughput)"
                )

    load_after = finish(started, load_before[0])

    report: dict[str, Any] = {
        **machine(load_before[0], load_after),
        "keep_freed_memory": memory_kept,
        "steps": steps,
        "repeats": repeats,
        "matmul_gflops": {str(k): v for k, v in matmul.items()},
        "flops_per_member_step": FLOPS_PER_MEMBER_STEP,
        "flops_formula": FLOPS_FORMULA,
        "results": results,
        "loop_strategy_n8": {**loop, "ratio_train_only": loop["train_only"] / loop_base},
        "strategy_check": {
            "members": CHECK_MEMBERS,
            "steps": CHECK_STEPS,
            "max_abs_diff": diff,
            "tolerance": CHECK_TOL,
        },
        "goals": goals,
        "seconds": time.perf_counter() - started,
    }
    if args.json is not None:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
